"""Small image helpers shared by the gate stages."""

from __future__ import annotations

import cv2
import numpy as np

from monitor.config import Polygon


def ssim(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean SSIM of two grey images (OpenCV's Gaussian-window formulation)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = blur(a * a) - mu_aa
    var_b = blur(b * b) - mu_bb
    cov = blur(a * b) - mu_ab
    smap = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))
    return float(smap[valid].mean() if valid is not None else smap.mean())


def match_exposure(img: np.ndarray, ref: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`img` with its brightness and contrast fitted to `ref` (gain and offset), robustly: the
    fit is redone on the pixels that agree, so a large new object does not skew it."""
    x = img.ravel()[idx].astype(np.float32)
    y = ref.ravel()[idx].astype(np.float32)
    q = np.percentile(np.stack([x, y]), (25, 50, 75), axis=1)
    gain = (q[2, 1] - q[0, 1]) / max(q[2, 0] - q[0, 0], 1.0)
    offset = q[1, 1] - gain * q[1, 0]
    for _ in range(2):
        res = np.abs(y - (gain * x + offset))
        keep = res <= np.percentile(res, 60)
        if keep.sum() < 16 or np.ptp(x[keep]) < 1:
            break
        gain, offset = np.polyfit(x[keep], y[keep], 1)
    gain = float(np.clip(gain, 0.2, 5.0))
    return cv2.convertScaleAbs(img, alpha=gain, beta=float(offset))


def polygon_mask(polygons: list[Polygon], shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask, True inside any of the normalised polygons."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    for poly in polygons:
        pts = np.array([[x * (w - 1), y * (h - 1)] for x, y in poly], np.float32).round().astype(np.int32)
        cv2.fillPoly(mask, [pts], 255)
    return mask > 0
