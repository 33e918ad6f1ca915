"""The change gate: decides, cheaply, when a camera's scene changed enough to describe.

Each sampled frame is shrunk to a small grey working image and normalised for brightness and
contrast (auto-exposure and clouds change every pixel but no structure). It is compared with the
*reference*, the last frame that was described, so slow changes accumulate instead of slipping
through frame-to-frame comparisons. A change starts when enough pixels differ by more than the
measured sensor noise; it ends when the scene has been still for `settle_s` (or after
`max_wait_s`), and the whole change becomes one `ChangeCandidate`.
"""

from __future__ import annotations

import cv2
import numpy as np

from monitor.config import GateConfig, Polygon
from monitor.imaging import match_exposure, polygon_mask, ssim
from monitor.records import ChangeCandidate, Frame, GateScores
from monitor.regions import RegionFinder

_KERNEL3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_KERNEL5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


class ChangeGate:
    """One camera's gate. Feed every sampled frame to `detect`; it returns a candidate when a
    change has settled, else None."""

    def __init__(self, camera_id: str, config: GateConfig, sample_fps: float, masks: list[Polygon] = ()):
        self.camera_id = camera_id
        self.cfg = config
        self.sample_fps = sample_fps
        self._masks = list(masks)
        self._valid: np.ndarray | None = None  # True where the gate looks
        self._idx: np.ndarray | None = None  # a sparse sample of valid pixels for statistics
        history = max(10, int(round(config.background_history_s * sample_fps)))
        # MOG2 learns each pixel's normal variation (noise, flicker, swaying leaves); a change
        # starts only where it agrees that pixels left their normal range.
        self._mog = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=16, detectShadows=False)
        self._mog_rate = 1.0 / history
        self.foreground: np.ndarray | None = None  # the background model's mask, last frame
        self._noise = 3.0  # running estimate of the per-pixel noise sigma (grey levels)
        self._ref: Frame | None = None  # the last described frame
        self._ref_img: np.ndarray | None = None
        self._prev_img: np.ndarray | None = None
        self._prev_t = 0.0
        self._regions: RegionFinder | None = None
        self._onset: float | None = None
        self._still_since: float | None = None
        self._peak: tuple[float, Frame, np.ndarray] | None = None  # (fraction, frame, image)
        self._cooldown_until = -1.0
        self.fires = 0

    # -- per-frame entry point -----------------------------------------------------------
    def detect(self, frame: Frame) -> ChangeCandidate | None:
        img = self.working_image(frame.image)
        t = frame.media_time
        self.foreground = self._background_foreground(img)
        if self._ref is None:
            self._ref, self._ref_img, self._prev_img, self._prev_t = frame, img, img, t
            self._regions = RegionFinder(img, self._valid, self._idx, self.cfg, self.sample_fps)
            return None
        assert self._ref_img is not None and self._prev_img is not None and self._regions is not None

        vs_ref = match_exposure(img, self._ref_img, self._idx)
        vs_prev = match_exposure(img, self._prev_img, self._idx)
        self._update_noise(vs_prev, self._prev_img)
        changed = self.changed_mask(vs_ref, self._ref_img)
        moving = self.changed_mask(vs_prev, self._prev_img)
        self._prev_img, prev_t, self._prev_t = img, self._prev_t, t
        n_valid = max(1, int(self._valid.sum()))
        frac = float(changed.sum()) / n_valid
        motion = float(moving.sum()) / n_valid

        if self._onset is None:
            self._regions.learn(img, changed)
            if not self._starts_change(frac, changed, vs_ref):
                return None
            self._onset, self._still_since, self._peak = t, None, None
            self.fires += 1
        if self._peak is None or frac >= self._peak[0]:
            self._peak = (frac, frame, img)

        still = motion <= max(self.cfg.still_fraction, 0.25 * frac)
        # Still since the previous frame: nothing moved between it and this one.
        self._still_since = (self._still_since if self._still_since is not None else prev_t) if still else None
        settled = self._still_since is not None and t - self._still_since >= self.cfg.settle_s
        if not settled and t - self._onset < self.cfg.max_wait_s:
            return None
        if t < self._cooldown_until:
            return None  # the cooldown delays the report; the change keeps accumulating
        return self._finish(frame, img, vs_ref, changed, frac)

    # -- helpers -------------------------------------------------------------------------
    def working_image(self, image: np.ndarray) -> np.ndarray:
        """Small, grey and lightly denoised."""
        h, w = image.shape[:2]
        ww = min(self.cfg.working_width, w)
        wh = max(8, int(round(h * ww / w)))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        small = cv2.resize(grey, (ww, wh), interpolation=cv2.INTER_AREA)
        if self._valid is None or self._valid.shape != small.shape:
            self._valid = ~polygon_mask(self._masks, small.shape)
            self._idx = np.flatnonzero(self._valid.ravel())[::7]
        return cv2.GaussianBlur(small, (3, 3), 0)

    def _background_foreground(self, img: np.ndarray) -> np.ndarray:
        # The model sees exposure-standardised frames (median 128, fixed quartile spread).
        lo, med, hi = np.percentile(img.ravel()[self._idx], (25, 50, 75))
        gain = float(np.clip(50.0 / max(hi - lo, 1.0), 0.25, 6.0))
        std = cv2.convertScaleAbs(img, alpha=gain, beta=128.0 - gain * med)
        fg = self._mog.apply(std, learningRate=1.0 if self._ref is None else self._mog_rate)
        fg = cv2.medianBlur(fg, 5)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, _KERNEL5)
        return (fg > 0) & self._valid

    def changed_mask(self, img: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Pixels that differ by more than noise and jitter, cleaned of speckle; masks excluded."""
        thr = max(self.cfg.pixel_threshold, self.cfg.noise_sigmas * self._noise)
        # Compare with the 3x3 neighbourhood's range: a camera that shakes by a pixel moves
        # every edge, but an edge that only shifted still lies inside that range.
        diff = cv2.max(cv2.subtract(img, cv2.dilate(ref, _KERNEL3)), cv2.subtract(cv2.erode(ref, _KERNEL3), img))
        _, binary = cv2.threshold(diff, thr, 255, cv2.THRESH_BINARY)
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, _KERNEL3)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, _KERNEL5)
        return (binary > 0) & self._valid

    def _update_noise(self, img: np.ndarray, prev: np.ndarray) -> None:
        # Robust sigma of the frame-to-frame difference (MAD ignores the moving pixels), smoothed.
        d = img.ravel()[self._idx].astype(np.int16) - prev.ravel()[self._idx]
        mad = float(np.median(np.abs(d - np.median(d))))
        sigma = 1.4826 * mad / np.sqrt(2.0)
        self._noise = 0.9 * self._noise + 0.1 * min(max(sigma, 0.5), 20.0)

    def _starts_change(self, frac: float, changed: np.ndarray, img: np.ndarray) -> bool:
        n_valid = max(1, int(self._valid.sum()))
        confirmed = float((changed & self.foreground).sum()) / n_valid
        if frac >= self.cfg.fire_fraction and confirmed >= 0.5 * self.cfg.fire_fraction:
            return self._regions.has_region(changed)
        # A global structural change (camera knocked, lens covered) with few "changed" pixels.
        return ssim(img, self._ref_img, self._valid) < self.cfg.ssim_threshold

    def _finish(self, frame: Frame, img: np.ndarray, vs_ref: np.ndarray, changed: np.ndarray,
                frac: float) -> ChangeCandidate | None:
        onset, peak = self._onset, self._peak
        self._onset, self._still_since, self._peak = None, None, None
        assert onset is not None and peak is not None and self._ref is not None
        before, before_img = self._ref, self._ref_img
        # Reverted: what still differs from `before` is small next to what differed at the peak.
        transient = frac < 0.3 * peak[0] or not self._regions.has_region(changed)
        if transient:
            # The scene went back to how it was: someone passed through, or only noise.
            peak_frac, peak_frame, peak_img = peak
            long_enough = frame.media_time - onset >= self.cfg.transient_min_s
            if not (self.cfg.report_transient and long_enough and peak_frac >= self.cfg.fire_fraction):
                return None
            after = peak_frame
            after_img = match_exposure(peak_img, before_img, self._idx)
            changed = self.changed_mask(after_img, before_img)
            frac = peak_frac
        else:
            after, after_img = frame, vs_ref
            self._ref, self._ref_img = frame, img
        regions = self._regions.regions(before_img, after_img, changed, transient)
        if not regions:  # nothing large enough, or only a known thing shifting in place
            return None
        self._cooldown_until = frame.media_time + self.cfg.cooldown_s
        scores = GateScores(ssim=round(ssim(after_img, before_img, self._valid), 4), changed_fraction=round(frac, 5))
        return ChangeCandidate(self.camera_id, before, after, onset, tuple(regions), scores, transient)
