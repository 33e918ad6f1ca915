"""The change gate: decides, cheaply, when a camera's scene changed enough to describe.

Each sampled frame is shrunk to a small grey working image and fitted (gain and offset) to the
exposure of the *reference*, the last frame that was described: auto-exposure and clouds change
every pixel but no structure, and slow changes accumulate against the reference instead of
slipping through frame-to-frame comparisons. A change starts when enough pixels differ by more
than the measured sensor noise and a MOG2 background model agrees they left their normal range;
it ends when the scene has been still for `settle_s` (or after `max_wait_s`), and the whole
change becomes one `ChangeCandidate`.
"""

from __future__ import annotations

import cv2
import numpy as np

from monitor.config import GateConfig, Polygon
from monitor.gate.imaging import Exposure, ExposureFitter, polygon_mask, shrink, ssim
from monitor.gate.regions import RegionFinder
from monitor.gate.tracks import ChangeTracker, passes
from monitor.records import ChangeCandidate, ChangeStart, Frame, GateScores, Region, make_change_id

_SSIM_EVERY_S = 5.0
_KERNEL3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_KERNEL5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


class ChangeGate:
    """One camera's gate. Feed every sampled frame to `detect`; it returns a candidate when a
    change has settled, else None. While a change is under way, `under_way` is how it looks on
    the last frame (`ChangeStart`, for early alerts); None otherwise."""

    def __init__(self, camera_id: str, config: GateConfig, sample_fps: float, masks: list[Polygon] = ()):
        self.camera_id = camera_id
        self.cfg = config
        self.sample_fps = sample_fps
        self._masks = list(masks)
        self._valid: np.ndarray | None = None  # True where the gate looks
        self._n_valid = 1
        self._half_valid: np.ndarray | None = None  # `_valid` at half resolution
        self._idx: np.ndarray | None = None  # a sparse sample of valid pixels for statistics
        self._fitter: ExposureFitter | None = None
        history = max(10, int(round(config.background_history_s * sample_fps)))
        # MOG2 learns each pixel's normal variation (noise, flicker, swaying leaves); a change
        # starts only where it agrees that pixels left their normal range.
        self._mog = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=16, detectShadows=False)
        self._mog_rate = 1.0 / history
        self._mog_frames = 0
        self._fg_half: np.ndarray | None = None  # the background model's raw mask, half resolution
        self._fg_full: np.ndarray | None = None
        self._ssim_due = 0.0  # media time of the next whole-frame SSIM check
        self._noise = 3.0  # running estimate of the per-pixel noise sigma (grey levels)
        # Exposure spaces: every frame is fitted once, to the reference ("ref space"); the
        # background models live in "model space", the first frame's exposure, and
        # `_ref_to_model` carries ref space there, so nothing drifts when the reference moves.
        self._ref: Frame | None = None  # the last described frame
        self._ref_img: np.ndarray | None = None
        self._ref_to_model = Exposure()
        self._prev_img: np.ndarray | None = None  # the previous frame, in ref space
        self._prev_t = 0.0
        self._regions: RegionFinder | None = None
        self._tracker: ChangeTracker | None = None  # links the changed areas of a change's frames
        self._onset: float | None = None
        self._change: tuple[str, float] | None = None  # the change under way: its id and onset wall time
        self.under_way: ChangeStart | None = None
        self._still_since: float | None = None
        self._peak: tuple[float, Frame, np.ndarray] | None = None  # (fraction, frame, image in ref space)
        self._latest: tuple | None = None  # while a change is under way: its last frame, for `flush`
        self._cooldown_until = -1.0
        self._resume_frames = 0  # frames left that skip the background model's confirmation
        self.fires = 0

    def resume(self) -> None:
        """The camera was away (a network outage) and frames follow again. The reference is
        kept, so whatever changed while it was away is reported as one change once the scene
        settles; for the next second of frames a change may start without the background
        model's agreement, because that model learned from before the outage and may well
        take the new scene for its normal one (an object that left had been there only briefly)."""
        self._resume_frames = max(1, int(round(self.sample_fps)))

    # -- per-frame entry point -----------------------------------------------------------
    def detect(self, frame: Frame) -> ChangeCandidate | None:
        img = self.working_image(frame.grey())
        t = frame.media_time
        if self._ref is None:
            self._ref, self._ref_img, self._prev_img, self._prev_t = frame, img, img, t
            self._regions = RegionFinder(img, self._valid, self.cfg, self.sample_fps)
            self._tracker = ChangeTracker(self.sample_fps, (img.shape[1], img.shape[0]))
            self._background_foreground(img)
            return None
        assert self._ref_img is not None and self._prev_img is not None and self._regions is not None

        to_ref = self._fitter.fit(img, self._ref_img)
        cur = to_ref.apply(img)  # this frame with the reference's exposure
        to_model = to_ref.then(self._ref_to_model)
        in_model = to_model.apply(img)
        self._background_foreground(in_model)
        if self._mog_frames % 4 == 0:
            self._update_noise(cur, self._prev_img)
        changed = self.changed_mask(cur, self._ref_img)
        frac = cv2.countNonZero(changed.view(np.uint8)) / self._n_valid
        prev_img, prev_t = self._prev_img, self._prev_t
        self._prev_img, self._prev_t = cur, t

        if self._onset is None:
            self._regions.learn(in_model, changed)
            if not self._starts_change(frac, changed, cur, t):
                return None
            self._onset, self._still_since, self._peak = t, None, None
            change_id = make_change_id(self.camera_id, frame.wall_time - frame.media_time, frame.seq)
            self._change = (change_id, frame.wall_time)
            self._tracker.reset()
            self.fires += 1
        comps = self._regions.components(changed)
        self.under_way = self._start_view(frame, comps, frac, img.shape)
        looks = [float(cur[y : y + h, x : x + w][pix].mean()) for (x, y, w, h), pix, _ in comps]
        self._tracker.update(frame, [box for box, _, _ in comps], looks)
        if self._peak is None or frac >= self._peak[0]:
            self._peak = (frac, frame, cur)

        # Motion since the previous frame matters only while a change is under way.
        motion = cv2.countNonZero(self.changed_mask(cur, prev_img).view(np.uint8)) / self._n_valid
        still = motion <= max(self.cfg.still_fraction, 0.25 * frac)
        # Still since the previous frame: nothing moved between it and this one.
        self._still_since = (self._still_since if self._still_since is not None else prev_t) if still else None
        settled = self._still_since is not None and t - self._still_since >= self.cfg.settle_s
        self._latest = (frame, img, cur, to_model, changed, frac)
        if not settled and t - self._onset < self.cfg.max_wait_s:
            return None
        if t < self._cooldown_until:
            return None  # the cooldown delays the report; the change keeps accumulating
        return self._finish(frame, img, cur, to_model, changed, frac, settled)

    def flush(self) -> ChangeCandidate | None:
        """The source ended or was stopped: the change under way, if any, as it stands at the
        last frame (not settled), so no change is lost at the end of a file or on SIGTERM."""
        if self._onset is None or self._latest is None:
            return None
        return self._finish(*self._latest, settled=False)

    # -- helpers -------------------------------------------------------------------------
    def _start_view(self, frame: Frame, comps: list, frac: float, shape: tuple[int, int]) -> ChangeStart:
        h, w = shape
        regions = tuple(Region(x / w, y / h, bw / w, bh / h, "changed", area) for (x, y, bw, bh), _, area in comps)
        assert self._change is not None and self._onset is not None
        change_id, onset_wall = self._change
        return ChangeStart(self.camera_id, change_id, self._onset, onset_wall, frame, regions, round(frac, 5))

    def working_image(self, image: np.ndarray) -> np.ndarray:
        """Small and grey (`image` is grey or BGR)."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        small = shrink(grey, min(self.cfg.working_width, grey.shape[1]))
        if self._valid is None or self._valid.shape != small.shape:
            self._valid = ~polygon_mask(self._masks, small.shape)
            self._n_valid = max(1, int(self._valid.sum()))
            self._idx = np.flatnonzero(self._valid.ravel())[::17]
            self._fitter = ExposureFitter(self._idx)
            self._half_valid = cv2.pyrDown(self._valid.astype(np.uint8) * 255) > 127
        return small  # the pyramid already low-passed it

    def _background_foreground(self, in_model: np.ndarray) -> None:
        # Half resolution: a quarter of the cost, and the mask is only a confirmation.
        # Learn fast while young (a running mean over the first frames), then at 1/history.
        self._mog_frames += 1
        rate = max(self._mog_rate, 1.0 / self._mog_frames)
        self._fg_half = self._mog.apply(cv2.pyrDown(in_model), learningRate=rate)
        self._fg_full = None

    @property
    def foreground(self) -> np.ndarray | None:
        """The background model's foreground mask of the last frame, at working resolution."""
        if self._fg_full is None and self._fg_half is not None:
            fg = cv2.morphologyEx(cv2.medianBlur(self._fg_half, 3), cv2.MORPH_CLOSE, _KERNEL3)
            h, w = self._valid.shape
            self._fg_full = (cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR) > 127) & self._valid
        return self._fg_full

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
        # Robust sigma of the frame-to-frame difference: the median absolute difference of
        # sampled pixels ignores the few that really changed. Smoothed over frames.
        d = cv2.absdiff(img.ravel()[self._idx], prev.ravel()[self._idx]).ravel()
        cdf = np.cumsum(np.bincount(d, minlength=256))
        median = float(np.searchsorted(cdf, cdf[-1] / 2))
        sigma = median / 0.6745 / np.sqrt(2.0)
        self._noise = 0.9 * self._noise + 0.1 * min(max(sigma, 0.5), 20.0)

    def _starts_change(self, frac: float, changed: np.ndarray, cur: np.ndarray, t: float) -> bool:
        if self._resume_frames > 0:
            self._resume_frames -= 1
            if frac >= self.cfg.fire_fraction and self._regions.has_region(changed):
                self._resume_frames = 0
                return True
        if frac >= self.cfg.fire_fraction:
            confirmed = cv2.countNonZero((changed & self.foreground).view(np.uint8)) / self._n_valid
            if confirmed >= 0.5 * self.cfg.fire_fraction:
                return self._regions.has_region(changed)
        # A global structural change (camera knocked, lens covered) with few "changed" pixels:
        # checked every few seconds, at half resolution, which is plenty for that verdict.
        if t < self._ssim_due:
            return False
        self._ssim_due = t + _SSIM_EVERY_S
        return self._half_ssim(cur, self._ref_img) < self.cfg.ssim_threshold

    def _half_ssim(self, a: np.ndarray, b: np.ndarray) -> float:
        """Whole-frame SSIM at half the working resolution (a quarter of the cost)."""
        return ssim(cv2.pyrDown(a), cv2.pyrDown(b), self._half_valid)

    def _finish(
        self,
        frame: Frame,
        img: np.ndarray,
        cur: np.ndarray,
        to_model: Exposure,
        changed: np.ndarray,
        frac: float,
        settled: bool,
    ) -> ChangeCandidate | None:
        assert self._change is not None
        onset, peak, (change_id, _) = self._onset, self._peak, self._change
        self._onset, self._still_since, self._peak, self._latest = None, None, None, None
        self.under_way = None
        assert onset is not None and peak is not None and self._ref is not None
        before, before_img = self._ref, self._ref_img
        model_to_before = self._ref_to_model.inverse()
        # Reverted: what still differs from `before` is small next to what differed at the peak.
        transient = frac < 0.3 * peak[0] or not self._regions.has_region(changed)
        if transient:
            # The scene went back to how it was: someone passed through, or only noise.
            peak_frac, peak_frame, peak_img = peak
            long_enough = frame.media_time - onset >= self.cfg.transient_min_s
            if not (self.cfg.report_transient and long_enough and peak_frac >= self.cfg.fire_fraction):
                return None
            after, after_img = peak_frame, peak_img
            changed = self.changed_mask(after_img, before_img)
            frac = peak_frac
        else:
            after, after_img = frame, cur
            # This frame becomes the reference: its raw exposure is the new ref space.
            self._ref, self._ref_img, self._ref_to_model = frame, img, to_model
            self._prev_img = img
        tracks = self._tracker.tracks()
        regions = self._regions.regions(
            before_img, after_img, changed, transient, model_to_before, tracks, after.media_time
        )
        if not regions:  # nothing large enough, or only a known thing shifting in place
            return None
        passed = passes(tracks, regions)
        if passed:  # what passed through, with its way: for a transient change, instead of its busiest frame
            regions = [r for _, r in passed] if transient else [*regions, *(r for _, r in passed)]
        self._cooldown_until = frame.media_time + self.cfg.cooldown_s
        scores = GateScores(ssim=round(self._half_ssim(after_img, before_img), 4), changed_fraction=round(frac, 5))
        followed = tuple(t for t, _ in passed)
        return ChangeCandidate(
            self.camera_id, before, after, onset, tuple(regions), scores, transient, settled, tracks=followed,
            change_id=change_id,
        )  # fmt: skip
