"""The S3 mirror is asked for once per burst of full batches, never later than the deferral."""

from __future__ import annotations

from aws_ork.pacer import MirrorPacer


class Mirror:
    def __init__(self) -> None:
        self.requests = 0

    def request(self) -> None:
        self.requests += 1


def make(defer: float = 5.0) -> tuple[MirrorPacer, Mirror, list[float]]:
    now = [0.0]
    mirror = Mirror()
    return MirrorPacer(mirror, defer_seconds=defer, clock=lambda: now[0]), mirror, now


def test_a_burst_of_full_batches_leads_to_one_request_when_it_ends():
    pacer, mirror, now = make()
    for _ in range(20):
        pacer.changed()
        pacer.end_of_batch(full=True)
        now[0] += 0.2
    assert mirror.requests == 0
    pacer.end_of_batch(full=False)  # the burst is over
    assert mirror.requests == 1
    pacer.end_of_batch(full=False)  # nothing new: nothing to mirror
    assert mirror.requests == 1


def test_a_long_burst_still_mirrors_every_deferral_period():
    pacer, mirror, now = make(defer=5.0)
    for _ in range(100):  # 20 s of full batches
        pacer.changed()
        pacer.end_of_batch(full=True)
        now[0] += 0.2
    assert 3 <= mirror.requests <= 4


def test_a_single_change_is_mirrored_at_once_and_flush_sends_what_is_held():
    pacer, mirror, _now = make()
    pacer.changed()
    pacer.end_of_batch(full=False)
    assert mirror.requests == 1
    pacer.changed()
    pacer.end_of_batch(full=True)
    pacer.flush()
    assert mirror.requests == 2
