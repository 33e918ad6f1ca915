"""Decoding detector outputs into boxes, per output layout, and class-agnostic NMS.

Every decoder returns `(boxes, scores, classes)`: boxes (N, 4) x1, y1, x2, y2 in model-input
pixels, scores (N,), classes (N,) int. The layouts:
- `centernet`: one output (1, K, 6) = x1, y1, x2, y2, score, class, decoded inside the graph
  (the shared COCO detector's `tower_0/detections`);
- `centernet-heads`: a class heatmap (1, H, W, C) and box sizes (1, H, W, 4) = left, top,
  right, bottom from each cell's point, stride = input / H (the same network cut before its
  in-graph decoding, the file OpenCV's DNN loads);
- `yolo`: the common YOLO ONNX export (1, 4 + C, N) = cx, cy, w, h and C class scores per
  candidate (no objectness), or its transpose (1, N, 4 + C).
"""

from __future__ import annotations

import cv2
import numpy as np

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]
TOPK = 100  # heatmap peaks kept, as the CenterNet graph does


def centernet(detections: np.ndarray) -> Decoded:
    det = detections.reshape(-1, 6)  # (K, 6)
    keep = np.isfinite(det).all(axis=1)
    det = det[keep]
    return det[:, :4].astype(np.float32), det[:, 4].astype(np.float32), det[:, 5].astype(np.int64)


def centernet_heads(heatmap: np.ndarray, sizes: np.ndarray, input_size: int, topk: int = TOPK) -> Decoded:
    """What the CenterNet graph decodes itself: 3x3 max-pool peaks of the heatmap, the top-k,
    each with its cell's box distances."""
    hm = heatmap[0]  # (H, W, C)
    h, w, c = hm.shape
    stride = input_size / h
    # 3x3 max-pool per class, stride 1, same padding (separable: along x, then along y).
    px = np.pad(hm, ((0, 0), (1, 1), (0, 0)), constant_values=-np.inf)
    mx = np.maximum(np.maximum(px[:, :-2], px[:, 1:-1]), px[:, 2:])
    py = np.pad(mx, ((1, 1), (0, 0), (0, 0)), constant_values=-np.inf)
    pooled = np.maximum(np.maximum(py[:-2], py[1:-1]), py[2:])  # (H, W, C)
    peaks = np.where(hm == pooled, hm, 0.0).reshape(-1)  # flat index = (y * W + x) * C + class
    k = min(topk, peaks.size)
    top = np.argpartition(-peaks, k - 1)[:k]  # the k highest in any order, then sorted as the graph does
    order = top[np.lexsort((top, -peaks[top]))]  # highest first; ties: the lower index
    order = order[peaks[order] > 0]
    cls, cell = order % c, order // c
    xs, ys = (cell % w) * stride, (cell // w) * stride
    ltrb = sizes[0].reshape(-1, 4)[cell]  # (k, 4)
    boxes = np.stack([xs - ltrb[:, 0], ys - ltrb[:, 1], xs + ltrb[:, 2], ys + ltrb[:, 3]], axis=1)
    return boxes.astype(np.float32), peaks[order].astype(np.float32), cls.astype(np.int64)


def yolo(output: np.ndarray, num_classes: int) -> Decoded:
    out = output[0]  # (4 + C, N) or (N, 4 + C)
    if out.shape[0] != 4 + num_classes:
        out = out.T
    cxcywh, class_scores = out[:4].T, out[4:].T  # (N, 4), (N, C)
    cls = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(cls)), cls]
    half = cxcywh[:, 2:] / 2
    boxes = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32), cls.astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, min_score: float, iou: float, limit: int) -> list[int]:
    """Class-agnostic greedy NMS (OpenCV's): the same box often comes with several classes, and
    only the most likely one is kept. Indices, highest score first."""
    if len(scores) == 0:
        return []
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), min_score, iou, top_k=limit)
    return [int(i) for i in np.asarray(keep).reshape(-1)][:limit]
