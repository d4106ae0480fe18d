"""Admission by headroom (core/headroom.py), driven with samples: the load a new viewer would add,
a loop that runs late while busy, and datagrams the kernel dropped."""

from __future__ import annotations

from appliance.core.headroom import (
    DROPS_MIN,
    FIRST_VIEWER_COST,
    RECENT_S,
    SETTLE_S,
    Headroom,
)


def settle(h: Headroom, busy: float, viewers: int, at: float = 0.0, ticks: int = 20) -> float:
    """Ticks of a steady load; returns the time after them."""
    for i in range(ticks):
        h.tick(at + i * 0.5, busy, 0.0, viewers)
    return at + ticks * 0.5


def test_a_viewer_is_refused_when_it_would_take_the_loop_past_max_load() -> None:
    h = Headroom(max_load=0.5)
    now = settle(h, 0.05, viewers=0)
    assert h.refusal(now) is None  # idle: room
    assert h.per_viewer == FIRST_VIEWER_COST  # nothing learned yet
    now = settle(h, 0.35, viewers=10, at=now)
    assert abs(h.per_viewer - 0.03) < 0.002  # (35 % - 5 % idle) / 10 viewers
    assert h.refusal(now) is None  # 35 % + 3 % < 50 %
    now = settle(h, 0.48, viewers=14, at=now)
    refusal = h.refusal(now)
    assert refusal is not None and refusal[0] == "load"
    assert "48 % busy" in refusal[1] and "stream.max_load (50 %)" in refusal[1]
    now = settle(h, 0.30, viewers=9, at=now)  # viewers left
    assert h.refusal(now) is None


def test_max_load_1_turns_the_load_check_off_and_not_the_others() -> None:
    h = Headroom(max_load=1.0)
    now = settle(h, 0.99, viewers=300)
    for i in range(100):  # a day of viewers coming and going leaves no trace
        assert h.refusal(now + i, viewers=300) is None
        h.admit(now + i)
    assert len(h.admitted) <= SETTLE_S + 1
    now += 100
    h.dropped(now, DROPS_MIN)
    refusal = h.refusal(now, viewers=300)
    assert refusal is not None and refusal[0] == "drops"


def test_a_burst_of_viewers_is_let_in_only_as_far_as_the_room_goes() -> None:
    h = Headroom(max_load=0.5)
    now = settle(h, 0.10, viewers=0)
    now = settle(h, 0.20, viewers=5, at=now)  # 2 % per viewer
    let_in = 0
    while h.refusal(now) is None:  # ten offers at once: their cost is not in `busy` yet
        h.admit(now)
        let_in += 1
    assert let_in == 15  # then 20 % + 2 % x (15 joining + 1) > 50 %
    refusal = h.refusal(now)
    assert refusal is not None and "and 15 joining" in refusal[1]
    assert h.refusal(now + SETTLE_S) is None  # by then their cost shows in `busy`


def test_viewers_that_came_and_went_at_once_are_not_counted_as_joining() -> None:
    h = Headroom(max_load=0.5)
    now = settle(h, 0.20, viewers=0)
    for _ in range(200):  # each one leaves before the next comes (a fuzzer, a flapping client)
        assert h.refusal(now, viewers=0) is None
        h.admit(now)
    assert h.refusal(now, viewers=40) is not None  # had they stayed, the room would be gone


def test_a_loop_late_twice_while_busy_refuses_for_a_while_and_one_stall_does_not() -> None:
    h = Headroom(max_load=0.8)
    now = settle(h, 0.5, viewers=5)
    h.tick(now, 0.6, 0.4, 5)  # one stall: not overload
    assert h.refusal(now) is None
    h.tick(now + 0.5, 0.1, 0.4, 5)  # late, but the loop itself was idle: another process
    assert h.refusal(now + 0.5) is None
    h.tick(now + 1.0, 0.7, 0.3, 5)
    refusal = h.refusal(now + 1.0)
    assert refusal is not None and refusal[0] == "lag"
    assert h.refusal(now + 1.0 + RECENT_S) is None  # the late ticks are old news


def test_datagrams_dropped_on_the_daemon_s_sockets_refuse_for_a_while() -> None:
    h = Headroom(max_load=0.8)
    now = settle(h, 0.2, viewers=3)
    h.dropped(now, DROPS_MIN - 1)
    assert h.refusal(now) is None  # a few: a burst, not overload
    h.dropped(now + 2, 1)
    refusal = h.refusal(now + 2)
    assert refusal is not None and refusal[0] == "drops" and f"{DROPS_MIN} datagrams" in refusal[1]
    assert h.drops_total == DROPS_MIN
    assert h.refusal(now + 2 + RECENT_S) is None


def test_the_first_viewer_is_let_in_however_busy_the_stream_keeps_the_loop() -> None:
    h = Headroom(max_load=0.8)
    now = settle(h, 0.9, viewers=0)  # a slow board encoding in software, an emulated Pi
    h.tick(now, 0.9, 0.4, 0)
    h.tick(now + 0.5, 0.9, 0.4, 0)
    h.dropped(now + 0.5, DROPS_MIN)
    now += 0.5
    assert h.refusal(now) is not None  # the state says full...
    assert h.refusal(now, viewers=0) is None  # ...but nobody watches: nobody to protect
    h.admit(now)
    refusal = h.refusal(now, viewers=0)  # a second offer before the first shows as a viewer
    assert refusal is not None and refusal[0] == "drops"
    assert h.refusal(now + 1, viewers=1) is not None  # nor once it does
