"""Ordering: per camera `seq` +1 per event and `t_after` never decreasing, whatever the
interleaving of cameras and the timing of the describer; across cameras the reorder window
merges by time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.order.orderer import EventOrderer
from monitor.records import ChangeEvent, iso_utc


class FakeClock:
    """A controllable monotonic clock (time is the input here, not a stand-in for a service)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _event(orderer: EventOrderer, camera: str, t: float) -> ChangeEvent:
    return ChangeEvent(
        event_id=f"{camera}-{t}",
        camera=camera,
        seq=orderer.next_seq(camera),
        t_before=iso_utc(1e9),
        t_after=iso_utc(1e9 + t),
        media_t_before=0.0,
        media_t_after=t,
        media_t_onset=t,
        text="x",
        describer="embedded",
        latency_ms=0.0,
    )


camera_streams = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=15),
    min_size=1,
)


@settings(max_examples=300, deadline=None)
@given(
    streams=camera_streams,
    picks=st.lists(st.integers(0, 3), max_size=80),
    waits=st.lists(st.floats(0.0, 3.0), max_size=80),
    window=st.floats(0.0, 2.0),
)
def test_per_camera_order_and_nothing_lost(streams, picks, waits, window):
    clock = FakeClock()
    orderer = EventOrderer(window, clock)
    # Each camera's events come in its own time order (the gate's guarantee), cameras interleave.
    pending = {cam: [sum(gaps[: i + 1]) for i in range(len(gaps))] for cam, gaps in streams.items()}
    cams = sorted(pending)
    out: list[ChangeEvent] = []
    step = 0
    while any(pending.values()):
        live = [c for c in cams if pending[c]]
        cam = live[picks[step % len(picks)] % len(live)] if picks else live[0]
        orderer.push(_event(orderer, cam, pending[cam].pop(0)))
        clock.now += waits[step % len(waits)] if waits else 0.5
        out += orderer.pop_ready()
        step += 1
    out += orderer.flush()

    assert sorted(e.event_id for e in out) == sorted(
        f"{c}-{t}" for c, g in streams.items() for t in [sum(g[: i + 1]) for i in range(len(g))]
    )
    for cam, gaps in streams.items():
        mine = [e for e in out if e.camera == cam]
        assert [e.seq for e in mine] == list(range(1, len(gaps) + 1))
        assert all(a.t_after <= b.t_after for a, b in zip(mine, mine[1:]))


def test_window_merges_cameras_by_time():
    clock = FakeClock()
    orderer = EventOrderer(2.0, clock)
    orderer.push(_event(orderer, "b", 10.0))  # described first, happened later
    clock.now = 0.5
    orderer.push(_event(orderer, "a", 9.0))
    assert orderer.pop_ready() == []  # still inside the window
    clock.now = 2.1
    assert [e.camera for e in orderer.pop_ready()] == ["a", "b"]


def test_events_outside_the_window_are_released():
    clock = FakeClock()
    orderer = EventOrderer(1.0, clock)
    orderer.push(_event(orderer, "a", 1.0))
    clock.now = 1.0
    assert [e.media_t_after for e in orderer.pop_ready()] == [1.0]
    assert len(orderer) == 0
