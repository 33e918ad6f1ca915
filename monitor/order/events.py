"""Building the change log's events: a described candidate or a camera health notice, plus the
camera's next seq, becomes one `ChangeEvent`."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

from monitor.daemon.camera_health import HealthNotice
from monitor.describe.base import Description
from monitor.errors import mask_secrets
from monitor.records import ChangeCandidate, ChangeEvent, Region, RegionOut, ScoresOut, iso_utc, make_event_id


def change_event(cand: ChangeCandidate, seq: int, desc: Description, describer: str) -> ChangeEvent:
    """The regions are the description's (labels, settled verdicts), else the gate's with its labels."""
    stream_start = cand.after.wall_time - cand.after.media_time
    regions = desc.regions or [replace(r, label=lab) for r, lab in zip(cand.regions, desc.labels)]
    return ChangeEvent(
        event_id=make_event_id(cand.camera_id, stream_start, cand.after.seq),
        camera=cand.camera_id,
        seq=seq,
        t_before=iso_utc(cand.before.wall_time),
        t_after=iso_utc(cand.after.wall_time),
        media_t_before=round(cand.before.media_time, 3),
        media_t_after=round(cand.after.media_time, 3),
        media_t_onset=round(cand.onset_media_time, 3),
        text=desc.text,
        regions=[region_out(r) for r in regions],
        scores=ScoresOut(ssim=cand.scores.ssim, changed_fraction=cand.scores.changed_fraction),
        describer=describer,
        transient=cand.transient,
        settled=cand.settled,
        change_id=cand.change_id or None,
        merged_changes=list(cand.merged),
        # From the gate's decision to the finished sentence (queueing + describing).
        latency_ms=round((time.time() - cand.detected_at) * 1000.0, 1),
    )


def region_out(r: Region) -> RegionOut:
    return RegionOut(
        x=round(r.x, 4),
        y=round(r.y, 4),
        w=round(r.w, 4),
        h=round(r.h, 4),
        change=r.change,
        label=r.label,
        track=r.track,
        heading=r.heading,
        stood_s=None if r.stood_s is None else round(r.stood_s, 1),
    )


def health_event(notice: HealthNotice, seq: int) -> ChangeEvent:
    since = iso_utc(notice.down_since)
    outage = None if notice.outage_s is None else round(notice.outage_s, 1)
    if notice.kind == "camera_offline":
        text = f"camera offline: no frames since {since[11:19]}"
        if notice.reason:
            text += f" ({notice.reason})"
    else:
        text = f"camera back online after {outage:.0f} s"
    digest = hashlib.sha1(f"{notice.camera_id}|{notice.kind}|{notice.down_since:.3f}".encode()).hexdigest()[:16]
    media = round(notice.media_time, 3)
    return ChangeEvent(
        event_id=f"{notice.camera_id}-{digest}",
        camera=notice.camera_id,
        seq=seq,
        kind=notice.kind,
        t_before=since,
        t_after=iso_utc(notice.at),
        media_t_before=media,
        media_t_after=media,
        media_t_onset=media,
        text=mask_secrets(text),
        describer="monitor",
        latency_ms=round((time.time() - notice.at) * 1000.0, 1),
        outage_s=outage,
    )
