"""Small image helpers shared by the gate stages."""

from __future__ import annotations

from dataclasses import dataclass

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


def quartiles(values: np.ndarray) -> tuple[float, float, float]:
    """25th, 50th and 75th percentile of uint8 values (a histogram, cheaper than sorting)."""
    cdf = np.cumsum(np.bincount(values, minlength=256))
    n = cdf[-1]
    return tuple(float(np.searchsorted(cdf, q * n)) for q in (0.25, 0.5, 0.75))  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Exposure:
    """A brightness/contrast mapping between two frames' grey levels: y = gain * x + offset."""

    gain: float = 1.0
    offset: float = 0.0

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.gain == 1.0 and self.offset == 0.0:
            return img
        return cv2.convertScaleAbs(img, alpha=self.gain, beta=self.offset)

    def then(self, other: Exposure) -> Exposure:
        """This mapping followed by `other`."""
        return Exposure(other.gain * self.gain, other.gain * self.offset + other.offset)

    def inverse(self) -> Exposure:
        return Exposure(1.0 / self.gain, -self.offset / self.gain)


class ExposureFitter:
    """`fit_exposure` against one reference, reusing the last fit while the frame's quartiles
    stay within two grey levels of the last fitted frame's (a static scene, or a small object
    moving: most frames). An exposure change moves all three quartiles much further."""

    def __init__(self, idx: np.ndarray):
        self.idx = idx
        self._ref: np.ndarray | None = None
        self._last: tuple[tuple[float, float, float], Exposure] | None = None

    def fit(self, img: np.ndarray, ref: np.ndarray) -> Exposure:
        q = quartiles(img.ravel()[self.idx])
        if self._ref is ref and self._last is not None and max(abs(a - b) for a, b in zip(q, self._last[0])) <= 2:
            return self._last[1]
        exposure = fit_exposure(img, ref, self.idx)
        self._ref, self._last = ref, (q, exposure)
        return exposure


def fit_exposure(img: np.ndarray, ref: np.ndarray, idx: np.ndarray) -> Exposure:
    """The gain and offset that bring `img` to `ref`'s exposure, fitted robustly: quartiles give
    a first estimate, then a least-squares fit on the 60 % of sampled pixels that agree best with
    it, so a large new object does not skew it."""
    xq, yq = img.ravel()[idx], ref.ravel()[idx]
    (x25, x50, x75), (y25, y50, y75) = quartiles(xq), quartiles(yq)
    gain = (y75 - y25) / max(x75 - x25, 1.0)
    offset = y50 - gain * x50
    # One least-squares refinement on the pixels the quartile estimate explains best.
    x, y = xq.astype(np.float32), yq.astype(np.float32)
    res = np.abs(y - (gain * x + offset))
    cut = int(0.6 * (len(res) - 1))
    keep = res <= np.partition(res, cut)[cut]
    xs, ys = x[keep], y[keep]
    dx = xs - xs.mean()
    var = float(dx @ dx)
    if len(xs) >= 16 and var >= 0.25 * len(xs):
        gain = float(dx @ (ys - ys.mean())) / var
        offset = float(ys.mean()) - gain * float(xs.mean())
    gain = float(np.clip(gain, 0.2, 5.0))
    return Exposure(gain, float(offset))


def shrink(grey: np.ndarray, width: int) -> np.ndarray:
    """Downscale to `width` (aspect kept): Gaussian pyramid halvings, then one area resize."""
    while grey.shape[1] >= 2 * width:
        grey = cv2.pyrDown(grey)
    h, w = grey.shape
    if w == width:
        return grey
    height = max(8, int(round(h * width / w)))
    # Less than 2x left after the pyramid: linear interpolation no longer aliases.
    return cv2.resize(grey, (width, height), interpolation=cv2.INTER_LINEAR)


def polygon_mask(polygons: list[Polygon], shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask, True inside any of the normalised polygons."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    for poly in polygons:
        pts = np.array([[x * (w - 1), y * (h - 1)] for x, y in poly], np.float32).round().astype(np.int32)
        cv2.fillPoly(mask, [pts], 255)
    return mask > 0
