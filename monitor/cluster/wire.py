"""What travels between a gate node and the describe workers, as Redis stream fields.

A candidate entry (`<prefix>:candidates`) holds everything a describer needs, self-contained,
so any worker on any machine can describe it and a restarted gate can still write it:

- `v` (format), `node`, `reply` (the node's results stream), `camera`, `seq`, `kind`
  (`change`, or a health kind: then `event` is the finished event and no worker describes it);
- `meta`: JSON of the candidate without its pixels (times, regions, scores, tracks, change id);
- `frame:<seq>`: each frame it refers to (before, after, the tracks' views) as JPEG bytes.

A result entry (`<prefix>:described:<node>`) is `camera`, `seq`, `candidate` (the candidate's
entry id), `worker` and `event` (the ChangeEvent JSON, as the log line will be).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import cv2
import numpy as np

from monitor.records import ChangeCandidate, ChangeEvent, Frame, GateScores, Region, Sighting, Track

VERSION = b"1"


class WireError(ValueError):
    """A stream entry that is not one of ours (or is damaged): acknowledged and logged once."""


def _frame_meta(frame: Frame) -> dict[str, Any]:
    return {"camera": frame.camera_id, "seq": frame.seq, "media_time": frame.media_time, "wall_time": frame.wall_time}


def encode_candidate(cand: ChangeCandidate, seq: int, node: str, reply: str, jpeg_quality: int) -> dict[str, bytes]:
    frames: dict[int, Frame] = {cand.before.seq: cand.before, cand.after.seq: cand.after}
    for track in cand.tracks:
        frames.update({f.seq: f for _, f in track.views})
    meta = {
        "before": cand.before.seq,
        "after": cand.after.seq,
        "frames": {str(s): _frame_meta(f) for s, f in frames.items()},
        "onset_media_time": cand.onset_media_time,
        "regions": [asdict(r) for r in cand.regions],
        "scores": asdict(cand.scores),
        "transient": cand.transient,
        "settled": cand.settled,
        "detected_at": cand.detected_at,
        "tracks": [
            {
                "track_id": t.track_id,
                "sightings": [asdict(s) for s in t.sightings],
                "alive_at_end": t.alive_at_end,
                "views": [[asdict(s), f.seq] for s, f in t.views],
            }  # fmt: skip
            for t in cand.tracks
        ],
        "change_id": cand.change_id,
        "merged": list(cand.merged),
    }
    fields = {
        "v": VERSION, "node": node.encode(), "reply": reply.encode(), "camera": cand.camera_id.encode(),
        "seq": str(seq).encode(), "kind": b"change", "meta": json.dumps(meta).encode(),
    }  # fmt: skip
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    for s, frame in frames.items():
        ok, jpeg = cv2.imencode(".jpg", frame.image, params)
        if not ok:
            raise WireError(f"frame {s} of camera {cand.camera_id} could not be encoded")
        fields[f"frame:{s}"] = jpeg.tobytes()
    return fields


def encode_health(event: ChangeEvent, node: str, reply: str) -> dict[str, bytes]:
    return {
        "v": VERSION, "node": node.encode(), "reply": reply.encode(), "camera": event.camera.encode(),
        "seq": str(event.seq).encode(), "kind": event.kind.encode(), "event": event.model_dump_json().encode(),
    }  # fmt: skip


def _text(fields: dict[bytes, bytes], key: str) -> str:
    value = fields.get(key.encode())
    if value is None:
        raise WireError(f"no {key!r} field")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise WireError(f"field {key!r} is not text") from None


def header(fields: dict[bytes, bytes]) -> tuple[str, str, int, str, str]:
    """(node, reply, camera, seq, kind) of a candidate entry; WireError when it is none of ours."""
    if fields.get(b"v") != VERSION:
        raise WireError(f"format {fields.get(b'v')!r}, expected {VERSION!r}")
    try:
        seq = int(_text(fields, "seq"))
    except ValueError:
        raise WireError("seq is not a number") from None
    return _text(fields, "node"), _text(fields, "reply"), _text(fields, "camera"), seq, _text(fields, "kind")


def decode_candidate(fields: dict[bytes, bytes]) -> ChangeCandidate:
    """The candidate, its frames decoded to BGR; WireError for a damaged or foreign entry."""
    try:
        meta = json.loads(_text(fields, "meta"))
        frames: dict[int, Frame] = {}
        for key, fm in meta["frames"].items():
            jpeg = fields.get(f"frame:{key}".encode())
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) if jpeg else None
            if image is None:
                raise WireError(f"frame {key} is missing or not a JPEG")
            image.setflags(write=False)
            frames[int(key)] = Frame(fm["camera"], fm["seq"], fm["media_time"], fm["wall_time"], image)
        tracks = tuple(
            Track(
                t["track_id"],
                tuple(Sighting(**s) for s in t["sightings"]),
                t["alive_at_end"],
                tuple((Sighting(**s), frames[f]) for s, f in t["views"]),
            )  # fmt: skip
            for t in meta["tracks"]
        )
        return ChangeCandidate(
            camera_id=_text(fields, "camera"),
            before=frames[meta["before"]],
            after=frames[meta["after"]],
            onset_media_time=meta["onset_media_time"],
            regions=tuple(Region(**r) for r in meta["regions"]),
            scores=GateScores(**meta["scores"]),
            transient=meta["transient"],
            settled=meta["settled"],
            detected_at=meta["detected_at"],
            tracks=tracks,
            change_id=meta["change_id"],
            merged=tuple(meta["merged"]),
        )
    except WireError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise WireError(f"a damaged candidate: {type(exc).__name__}: {exc}") from None


def decode_health(fields: dict[bytes, bytes]) -> ChangeEvent:
    try:
        return ChangeEvent.model_validate_json(fields.get(b"event", b""))
    except ValueError as exc:
        raise WireError(f"a damaged health event: {str(exc).splitlines()[0]}") from None


def result_fields(event: ChangeEvent, candidate_id: str, worker: str) -> dict[str, str]:
    return {"camera": event.camera, "seq": str(event.seq), "candidate": candidate_id, "worker": worker,
            "event": event.model_dump_json()}  # fmt: skip


def decode_result(fields: dict[bytes, bytes]) -> tuple[str, ChangeEvent]:
    """(candidate entry id, event) of a result entry; WireError when it is none of ours."""
    try:
        return _text(fields, "candidate"), ChangeEvent.model_validate_json(fields.get(b"event", b""))
    except ValueError as exc:
        raise WireError(f"a damaged result: {str(exc).splitlines()[0]}") from None
