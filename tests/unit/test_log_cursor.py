"""Reading a container's log on from where a broken or ended follow stream stopped, without a gap
and without a repeat (the timestamps Docker puts on every frame)."""

from __future__ import annotations

from hydra_sandbox.sandbox.backends.docker.logs import LogCursor, stamp_ns


def test_docker_timestamps_with_trimmed_fractions_become_nanoseconds() -> None:
    base = stamp_ns(b"2026-11-25T06:30:00Z")
    assert stamp_ns(b"2026-11-25T06:30:00.5Z") == base + 500_000_000
    assert stamp_ns(b"2026-11-25T06:30:00.000000001Z") == base + 1
    assert stamp_ns(b"2026-11-25T06:30:01.123456789Z") == base + 1_123_456_789


def test_a_second_pass_since_the_last_frame_delivers_only_what_was_not_seen() -> None:
    frames = [10, 20, 20, 20, 30, 40, 40, 50]
    cursor = LogCursor()
    cursor.start_pass()
    delivered = [ns for ns in frames[:6] if not cursor.seen(ns)]  # the follow stream ended early
    assert delivered == frames[:6]
    cursor.start_pass()  # Docker sends every frame stamped >= 40 again, then the rest
    again = [40, 40, 50]
    delivered += [ns for ns in again if not cursor.seen(ns)]
    assert delivered == frames, "a frame was lost or repeated"
    cursor.start_pass()
    assert [ns for ns in [40, 40, 50] if not cursor.seen(ns)] == []
    assert cursor.new_in_pass == 0
