"""Gate mask quality on CDnet 2014 baseline/highway (frames 470-900 scored, as its README says)."""

from __future__ import annotations

import cv2
import numpy as np
from support import SHARED_DATA

from monitor.config import CameraConfig, GateConfig
from monitor.gate.change_gate import ChangeGate
from monitor.sources.video import VideoSource

HIGHWAY = SHARED_DATA / "cdnet2014-highway"
FIRST_FRAME, FPS = 400, 30.0


def test_foreground_pixel_f1_at_least_0_80():
    start, _ = (int(v) for v in (HIGHWAY / "temporalROI.txt").read_text().split())
    cam = CameraConfig(id="highway", source=str(HIGHWAY / "input"), sample_fps=FPS, image_fps=FPS)
    gate = ChangeGate(cam.id, GateConfig(), cam.sample_fps)
    tp = fp = fn = 0
    scored = 0
    for frame in VideoSource(cam).frames():
        gate.detect(frame)
        number = FIRST_FRAME + round(frame.media_time * FPS)
        if number < start:
            continue
        truth = cv2.imread(str(HIGHWAY / "groundtruth" / f"gt{number:06d}.png"), cv2.IMREAD_GRAYSCALE)
        mask = gate.foreground
        if mask.shape != truth.shape:
            mask = cv2.resize(mask.astype(np.uint8), truth.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        moving, still = truth == 255, truth == 0  # 50/85/170 are ignored
        tp += int((mask & moving).sum())
        fp += int((mask & still).sum())
        fn += int((~mask & moving).sum())
        scored += 1
    assert scored == 900 - start + 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall)
    print(f"highway: precision {precision:.3f} recall {recall:.3f} F1 {f1:.3f}")
    assert f1 >= 0.80
