"""`OnnxDetector.detect(image, roi) -> (Detection, ...)`: a COCO-style object detector exported to
ONNX, run with onnxruntime on CPU. The layout is read from the model's own inputs and outputs
(see `decoding`): CenterNet with in-graph decoding, CenterNet heads, or the common YOLO export.
Input conventions follow the layout: CenterNet takes RGB 0-255 NHWC, YOLO RGB 0-1 NCHW.

Regions of interest: a fully convolutional CenterNet runs at any input size once its graph's
height and width are left free (the `onnx` package edits the loaded copy; the file is never
written). A crop around a changed region then goes in at its own small size (`crop` pixels on
its long side, aspect kept) instead of a whole frame stretched to 512x512: about a sixth of the
cost, and the object fills the input as the model likes it. Frigate runs its detector on
regions around motion for the same reason. Models that cannot (YOLO exports with fixed
reshapes) get the whole frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import structlog

from monitor.config import DetectorConfig
from monitor.detect import decoding
from monitor.errors import ConfigError
from monitor.records import Detection

log = structlog.get_logger(__name__)

LABELS_FILE = "labels.txt"
CROP_STRIDE = 32  # a crop's input sides are multiples of the network's total stride


class OnnxDetector:
    """Loaded once (a bad file is a ConfigError naming `describer.detector.model`); `detect` is
    thread-safe (onnxruntime sessions are)."""

    def __init__(self, cfg: DetectorConfig):
        if cfg.model is None:
            raise ConfigError("describer.detector.model: not set")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("describer.detector: needs onnxruntime: pip install '.'") from None
        self.cfg = cfg
        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # onnxruntime's own warnings are not the operator's business
        try:
            self.session = ort.InferenceSession(str(cfg.model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for every bad file
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"describer.detector.model: cannot load {cfg.model} as ONNX: {reason[:200]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.layout, self.outputs = self._layout()
        shape = [d if isinstance(d, int) else -1 for d in inp.shape]
        self.nchw = self.layout == "yolo" or (len(shape) == 4 and shape[1] == 3 and shape[3] != 3)
        size = shape[2:4] if self.nchw else shape[1:3]
        if len(shape) != 4 or min(size) <= 0:
            why = "need a fixed 1x3xHxW or 1xHxWx3"
            raise ConfigError(f"describer.detector.model: input {inp.name} {inp.shape}: {why}")
        self.input_h, self.input_w = size
        self.labels = self._labels()
        self.num_classes = len(self.labels)
        self.any_size = False
        if cfg.crop and self.layout != "yolo":
            self._free_input_size(ort, options)
        log.info(
            "detector_loaded", model=str(cfg.model), layout=self.layout, classes=self.num_classes, crops=self.any_size
        )

    def _free_input_size(self, ort, options) -> None:
        """Switch to the CenterNet heads with free input height and width, when the graph allows
        it (checked on a small probe); otherwise keep the fixed whole-frame session."""
        try:
            import onnx
            import onnx.utils
        except ImportError:
            return
        heads = self._heads(self._output_shapes())
        if heads is None or self.nchw:  # the heads decoder reads (1, H, W, C)
            return
        heatmap_name, sizes_name = heads
        try:
            model = onnx.load(str(self.cfg.model))
            # Only the network up to its heads: in-graph decoding reshapes to the 512x512 grid.
            model = onnx.utils.Extractor(model).extract_model([self.input_name], [heatmap_name, sizes_name])
            for value, names in (
                (model.graph.input[0], ("in_h", "in_w")),
                *((o, ("out_h", "out_w")) for o in model.graph.output),
            ):
                dims = value.type.tensor_type.shape.dim
                for axis, name in zip((1, 2), names, strict=True):
                    dims[axis].Clear()
                    dims[axis].dim_param = name
            del model.graph.value_info[:]  # shapes inferred for 512x512 would pin it again
            quiet = ort.SessionOptions()  # a graph that cannot is told by the exception, not on stderr
            quiet.intra_op_num_threads, quiet.inter_op_num_threads = options.intra_op_num_threads, 1
            quiet.log_severity_level = 4
            session = ort.InferenceSession(model.SerializeToString(), quiet, providers=["CPUExecutionProvider"])
            probe = np.zeros((1, 64, 96, 3), np.float32)
            heatmap, box_sizes = session.run([heatmap_name, sizes_name], {self.input_name: probe})
        except Exception as exc:  # noqa: BLE001 - a graph with fixed reshapes fails in onnxruntime's own types
            log.info(
                "detector_whole_frames_only", reason=str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            )
            return
        if heatmap.shape[1:3] != box_sizes.shape[1:3] or heatmap.shape[2] * 64 != heatmap.shape[1] * 96:
            return
        self.session, self.layout, self.outputs, self.any_size = session, "centernet-heads", list(heads), True

    def _output_shapes(self) -> dict[str, list[int]]:
        return {o.name: [d if isinstance(d, int) else -1 for d in o.shape] for o in self.session.get_outputs()}

    @staticmethod
    def _heads(outs: dict[str, list[int]]) -> tuple[str, str] | None:
        """(class heatmap, box sizes) among the outputs: (1, H, W, C) and (1, H, W, 4)."""
        sizes = [n for n, s in outs.items() if len(s) == 4 and s[-1] == 4]
        maps = [n for n, s in outs.items() if len(s) == 4 and s[-1] not in (4, -1)]
        return (maps[0], sizes[0]) if sizes and maps else None

    def _layout(self) -> tuple[str, list[str]]:
        outs = self._output_shapes()
        six = [n for n, s in outs.items() if len(s) == 3 and s[-1] == 6 and "detection" in n]
        if six:
            return "centernet", six[:1]
        heads = self._heads(outs)
        if heads is not None:
            return "centernet-heads", list(heads)
        if len(outs) == 1:
            ((name, shape),) = outs.items()
            if len(shape) == 3 and max(shape[1], shape[2]) > 4:
                return "yolo", [name]
        listed = ", ".join(f"{n} {s}" for n, s in outs.items())
        raise ConfigError(
            f"describer.detector.model: unknown output layout ({listed}); supported: CenterNet "
            "(1, K, 6 detections or heatmap + box heads) and YOLO export (1, 4 + classes, N)"
        )

    def _labels(self) -> list[str]:
        path = self.cfg.labels or (Path(self.cfg.model).with_name(LABELS_FILE))
        field = "describer.detector.labels"
        if self.cfg.labels is not None or path.is_file():
            try:
                names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{field}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        else:
            meta = self.session.get_modelmeta().custom_metadata_map
            raw = meta.get("labels") or meta.get("names") or ""
            names = [n.strip().strip("'\"") for n in raw.strip("[]{}").split(",") if n.strip()]
            names = [n.split(":", 1)[-1].strip().strip("'\"") for n in names]  # YOLO's "{0: 'person', ...}"
            if not names:
                raise ConfigError(f"{field}: none given, no {LABELS_FILE} beside the model and none in its metadata")
        possible = self._model_classes()
        if possible and len(names) not in possible:
            raise ConfigError(f"{field}: {len(names)} names but the model has {possible[0]} classes")
        return names

    def _model_classes(self) -> list[int]:
        """The class counts the outputs allow, the usual first (YOLO: 4 + C is axis 1 of the
        export, or axis 2 of its transpose)."""
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        if self.layout == "centernet-heads":
            return [shapes[self.outputs[0]][-1]]
        if self.layout == "yolo":
            return [d - 4 for d in shapes[self.outputs[0]][1:] if isinstance(d, int) and d > 4]
        return []  # classes come as numbers: any list long enough

    # -- per-frame entry point -----------------------------------------------------------
    def detect(self, image: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> tuple[Detection, ...]:
        """The named objects in a BGR uint8 (H, W, 3) frame, most likely first; with `roi`
        (x0, y0, x1, y1 pixels) those in that part of it, where the model takes crops."""
        h, w = image.shape[:2]
        x0 = y0 = 0
        if roi is not None and self.any_size:
            x0, y0, x1, y1 = roi
            tensor, sx, sy = self._crop_input(image[y0:y1, x0:x1])
        else:
            tensor, sx, sy = self._input(image)
        outputs = self.session.run(self.outputs, {self.input_name: tensor})
        if self.layout == "centernet":
            boxes, scores, classes = decoding.centernet(outputs[0])
        elif self.layout == "centernet-heads":
            input_h = tensor.shape[2] if self.nchw else tensor.shape[1]
            boxes, scores, classes = decoding.centernet_heads(outputs[0], outputs[1], input_h)
        else:
            boxes, scores, classes = decoding.yolo(outputs[0], self.num_classes)
        out = []
        for i in decoding.nms(boxes, scores, self.cfg.min_score, self.cfg.iou, self.cfg.max_detections):
            c = int(classes[i])
            model_class = self.labels[c] if 0 <= c < len(self.labels) else str(c)
            label = self.cfg.classes.get(model_class)
            if label is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            x1, x2 = max(0.0, min(w, x0 + x1 * sx)) / w, max(0.0, min(w, x0 + x2 * sx)) / w
            y1, y2 = max(0.0, min(h, y0 + y1 * sy)) / h, max(0.0, min(h, y0 + y2 * sy)) / h
            if x2 > x1 and y2 > y1:
                out.append(Detection(label, model_class, round(float(scores[i]), 4), x1, y1, x2 - x1, y2 - y1))
        return tuple(out)

    def _crop_input(self, crop: np.ndarray) -> tuple[np.ndarray, float, float]:
        """A crop scaled so that its long side is `crop` pixels (at most 4x up: distant things
        gain, noise does not), zero-padded to the network's stride of 32."""
        ch, cw = crop.shape[:2]
        s = min(4.0, self.cfg.crop / max(ch, cw))
        nh, nw = max(1, round(ch * s)), max(1, round(cw * s))
        ih, iw = -(-nh // CROP_STRIDE) * CROP_STRIDE, -(-nw // CROP_STRIDE) * CROP_STRIDE
        canvas = np.zeros((ih, iw, 3), np.uint8)
        canvas[:nh, :nw] = cv2.cvtColor(cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        x = canvas.astype(np.float32)  # (H, W, 3) RGB 0-255, as the whole-frame CenterNet input
        if self.nchw:
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None]), cw / nw, ch / nh

    def _input(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The model input, and the factors from input pixels back to frame pixels."""
        h, w = image.shape[:2]
        ih, iw = self.input_h, self.input_w
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if self.cfg.fit == "stretch":
            nh, nw = ih, iw
        else:
            s = min(ih / h, iw / w)
            nh, nw = min(ih, round(h * s)), min(iw, round(w * s))
        canvas = np.full((ih, iw, 3), 114 if self.layout == "yolo" else 0, np.uint8)
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        x = canvas.astype(np.float32)
        if self.layout == "yolo":
            x = (x / 255.0).transpose(2, 0, 1)  # (3, H, W) 0-1
        elif self.nchw:
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None]), w / nw, h / nh
