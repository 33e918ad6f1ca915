"""The object detector (`describer.detector`): the real pretrained COCO detector on shared frames,
through the production loader and decoders (both of its files: in-graph decoding and the heads),
the common YOLO export layout on a small graph built here, and bad model files."""

from __future__ import annotations

import av
import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import DETECTOR, DETECTOR_DIR, SHARED_DATA, VIDEOS, run_monitor

from monitor.config import DetectorConfig
from monitor.detect.objects import ObjectDetector
from monitor.detect.onnx_detector import OnnxDetector
from monitor.errors import ConfigError
from monitor.records import Frame, Region

ROOM = VIDEOS / "one-by-one-person-detection.mp4"
AISLE = VIDEOS / "car-detection.mp4"
HIGHWAY_800 = SHARED_DATA / "cdnet2014-highway" / "input" / "in000800.jpg"


def video_frame(path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="bgr24")
    raise AssertionError(f"{path} has no frame {index}")


@pytest.fixture(scope="module", params=["coco-detector.onnx", "coco-detector-heads.onnx"])
def detector(request) -> OnnxDetector:
    return OnnxDetector(DetectorConfig(model=DETECTOR_DIR / request.param))


def test_layouts_are_read_from_the_model(detector: OnnxDetector) -> None:
    assert detector.layout in ("centernet", "centernet-heads")
    assert (detector.input_h, detector.input_w, detector.num_classes) == (512, 512, 80)
    assert detector.labels[0] == "person" and detector.labels[2] == "car"


def test_a_person_in_the_room_and_nobody_in_the_empty_room(detector: OnnxDetector) -> None:
    people = [d for d in detector.detect(video_frame(ROOM, 300)) if d.label == "person"]
    assert len(people) == 1 and people[0].score > 0.4, people
    p = people[0]
    # The README's box: (380, 5, 544, 381) on the 768x432 frame.
    assert abs(p.x - 380 / 768) < 0.03 and abs((p.x + p.w) - 544 / 768) < 0.03 and p.h > 0.8, p
    # The empty room: the model "sees" scissors there, a class the log does not name.
    assert detector.detect(video_frame(ROOM, 50)) == ()


def test_cars_on_the_highway(detector: OnnxDetector) -> None:
    found = detector.detect(cv2.imread(str(HIGHWAY_800)))
    cars = [d for d in found if d.label == "car"]
    assert len(cars) >= 6, found  # the README: all 7 cars of this frame are boxed
    assert all(0 <= d.x and d.x + d.w <= 1 and 0 <= d.y and d.y + d.h <= 1 for d in found)


def test_a_car_seen_from_above_is_never_a_person(detector: OnnxDetector) -> None:
    # The model boxes it as "cell phone" (its documented limit): not a class the log names.
    for index in (80, 210):
        assert all(d.label != "person" for d in detector.detect(video_frame(AISLE, index)))


def test_regions_are_named_by_the_box_that_covers_them(detector: OnnxDetector) -> None:
    objects = ObjectDetector(detector)
    frame = Frame("room", 300, 30.0, 0.0, video_frame(ROOM, 300))
    on_the_person = Region(0.52, 0.2, 0.12, 0.5, "appeared", 0.05)
    elsewhere = Region(0.05, 0.6, 0.1, 0.2, "appeared", 0.02)
    assert objects.covering(frame, on_the_person).label == "person"
    assert objects.covering(frame, elsewhere) is None
    assert objects.covering(frame, on_the_person).label == "person"
    assert objects.runs == 2  # one crop each; the same crop again is not run again


def test_both_files_take_crops_at_their_own_size(detector: OnnxDetector) -> None:
    # The network is fully convolutional: with the graph's input size left free, a crop around
    # the person goes in at 128 px on its long side (aspect kept), not stretched to 512x512.
    assert detector.any_size and detector.layout == "centernet-heads"
    image = video_frame(ROOM, 300)
    tensor, _, _ = detector._crop_input(image[32:357, 345:546])
    assert tensor.shape == (1, 128, 96, 3)  # 325x201 -> 128x79, padded to the stride of 32
    (person,) = detector.detect(image, (345, 32, 546, 357))
    assert person.label == "person" and person.score > 0.4
    # Boxes come back in whole-frame coordinates: the README's (380, 5, 544, 381) on 768x432.
    assert abs(person.x - 380 / 768) < 0.03 and abs((person.x + person.w) - 544 / 768) < 0.03, person
    assert detector.detect(image, (16, 237, 137, 368)) == ()  # the empty floor beside them


def test_crops_off_means_whole_frames(tmp_path) -> None:
    whole = OnnxDetector(DetectorConfig(model=DETECTOR, crop=0))
    assert not whole.any_size and whole.layout == "centernet"
    image = video_frame(ROOM, 300)
    assert whole.detect(image, (16, 237, 137, 368)) == whole.detect(image)  # the crop is ignored
    # Whole frames decoded in the graph (crops off) and from the heads in numpy (crops on) agree.
    heads = OnnxDetector(DetectorConfig(model=DETECTOR))
    for frame in (image, cv2.imread(str(HIGHWAY_800))):
        in_graph, in_numpy = whole.detect(frame), heads.detect(frame)
        assert [d.label for d in in_graph] == [d.label for d in in_numpy] and len(in_graph) >= 1
        for a, b in zip(in_graph, in_numpy, strict=True):
            assert (a.score, a.x, a.y, a.w, a.h) == pytest.approx((b.score, b.x, b.y, b.w, b.h), abs=1e-3)


# -- the common YOLO export layout, on a graph built here ------------------------------------
CLASSES = ["c0", "c1", "c2"]


def yolo_model(path, candidates: np.ndarray, names: str | None = None) -> None:
    """images (1, 3, 64, 64) -> output0 (1, 4 + 3, N) = `candidates` (the input is only read, so
    onnxruntime keeps it); YOLO's export metadata `names` when given."""
    const = helper.make_node("Constant", [], ["boxes"], value=numpy_helper.from_array(candidates, "boxes"))
    mean = helper.make_node("ReduceMean", ["images"], ["mean"], axes=[0, 1, 2, 3], keepdims=0)
    zero = helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.float32(0.0), "zero"))
    nothing = helper.make_node("Mul", ["mean", "zero"], ["nothing"])
    out = helper.make_node("Add", ["boxes", "nothing"], ["output0"])
    graph = helper.make_graph(
        [const, mean, zero, nothing, out],
        "yolo-like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(candidates.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"names": names})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def yolo_candidates() -> np.ndarray:
    # columns: cx, cy, w, h (input pixels of the 64x64 input), then the 3 class scores
    rows = [
        [16, 16, 16, 16, 0.9, 0.1, 0.0],  # c0, kept
        [17, 16, 16, 16, 0.8, 0.0, 0.0],  # the same box again, lower: suppressed
        [48, 20, 8, 16, 0.0, 0.1, 0.7],  # c2, kept
        [40, 10, 8, 8, 0.0, 0.6, 0.0],  # c1: a class the log does not name
        [30, 50, 8, 8, 0.05, 0.0, 0.0],  # below min_score
    ]
    return np.asarray(rows, np.float32).T[None]  # (1, 7, 5)


@pytest.mark.parametrize("transposed", [False, True])
def test_yolo_export_layout(tmp_path, transposed: bool) -> None:
    cands = yolo_candidates()
    yolo_model(tmp_path / "yolo.onnx", cands.transpose(0, 2, 1).copy() if transposed else cands)
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    cfg = DetectorConfig(model=tmp_path / "yolo.onnx", classes={"c0": "person", "c2": "bag"}, fit="letterbox")
    det = OnnxDetector(cfg)
    assert det.layout == "yolo" and det.num_classes == 3
    # A 128x64 frame letterboxed into 64x64: scale 0.5, the frame fills the top 32 rows.
    found = det.detect(np.zeros((64, 128, 3), np.uint8))
    assert [(d.label, d.model_class, d.score) for d in found] == [("person", "c0", 0.9), ("bag", "c2", 0.7)]
    person, bag = found
    assert (person.x, person.y, person.w, person.h) == pytest.approx((16 / 128, 16 / 64, 32 / 128, 32 / 64))
    assert (bag.x, bag.y, bag.w, bag.h) == pytest.approx((88 / 128, 24 / 64, 16 / 128, 32 / 64))
    # A YOLO export keeps its fixed input: it always sees the whole frame, whatever the crop.
    assert not det.any_size and det.detect(np.zeros((64, 128, 3), np.uint8), (0, 0, 8, 8)) == found


def test_yolo_stretch_and_labels_from_the_export_metadata(tmp_path) -> None:
    yolo_model(tmp_path / "yolo.onnx", yolo_candidates(), names="{0: 'c0', 1: 'c1', 2: 'c2'}")
    det = OnnxDetector(DetectorConfig(model=tmp_path / "yolo.onnx", classes={"c0": "person"}))
    assert det.labels == CLASSES
    (person,) = det.detect(np.zeros((64, 128, 3), np.uint8))
    # Stretched: x doubles, y stays.
    assert (person.x, person.y, person.w, person.h) == pytest.approx((16 / 128, 8 / 64, 32 / 128, 16 / 64))


def test_labels_that_do_not_fit_the_model_are_named(tmp_path) -> None:
    yolo_model(tmp_path / "yolo.onnx", yolo_candidates())
    (tmp_path / "names.txt").write_text("a\nb\n")
    with pytest.raises(ConfigError, match=r"^describer\.detector\.labels: 2 names but the model has 3 classes$"):
        OnnxDetector(DetectorConfig(model=tmp_path / "yolo.onnx", labels=tmp_path / "names.txt"))
    with pytest.raises(ConfigError, match=r"^describer\.detector\.labels: none given"):
        OnnxDetector(DetectorConfig(model=tmp_path / "yolo.onnx"))


# -- bad files: one line, the field named, exit 2 ----------------------------------------------
def test_a_file_that_is_not_onnx_is_one_config_line(tmp_path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a model\n")
    env = {"MONITOR_DESCRIBER__DETECTOR__MODEL": str(bad)}
    proc = run_monitor("run", "--source", ROOM, "--log-dir", tmp_path / "logs", env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monitor: config error: describer.detector.model: cannot load"), (
        lines
    )
    assert "Traceback" not in proc.stderr
    # check-config refuses it the same way: one validation for both
    config = tmp_path / "c.yaml"
    config.write_text(f"cameras: [{{id: a, source: {ROOM}}}]\n")
    checked = run_monitor("check-config", config, env=env, timeout=60)
    assert checked.returncode == 2 and checked.stderr.strip().splitlines() == lines, checked.stderr


def test_a_missing_model_is_named_by_check_config(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"cameras: [{{id: a, source: {ROOM}}}]\ndescriber: {{detector: {{model: {tmp_path}/nope.onnx}}}}\n"
    )
    proc = run_monitor("check-config", config, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("monitor: config error: describer.detector.model: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_shared_detector_is_there() -> None:
    assert DETECTOR.is_file(), f"missing {DETECTOR}"
