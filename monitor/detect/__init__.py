"""Naming what changed: `onnx_detector.OnnxDetector.detect(image) -> (Detection, ...)`, a COCO-style
ONNX detector on CPU, run by the describer only on the frames the gate hands over (never on
every sampled frame); `decoding` reads each supported output layout."""
