"""Micro-benchmark, run by hand (not collected by pytest): the time ``SaltEvents.fire``
costs its calling thread (the loop's), 2,000 events against a real salt-master.

    PYTHONPATH=. python tests/benchmarks/salt_events_fire.py [AWS_ORK_SRC]

AWS_ORK_SRC (default: this checkout) is where ``aws_ork`` is imported from, e.g. an export
of an older commit (``git archive <commit> | tar -x -C /tmp/before``) to compare. The
master and the listener come from this checkout's tests/saltenv.py either way.

For each scenario, in a fresh SaltEvents: the wall and CPU time of the calling thread over
the N fire() calls (and per call, median / 99th percentile / max), then close(), then the
time until a listener on the master's bus has all N events, which must arrive in order.
"Busy" scenarios put 2 ms of work between fires, like the loop deciding: CPU work (holds
the GIL, so a worker thread competes with it) or sleeping (a wait for AWS or the disk, which
releases it); their figure is the calling thread's total against N x 2 ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[2]))  # tests.saltenv
if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])

from aws_ork.keys import reactor  # noqa: E402
from aws_ork.keys.eventkey import EventKey  # noqa: E402
from tests.saltenv import start_master  # noqa: E402

N = 2000
WORK_SECONDS = 0.002

_started = [0]
_thread_start = threading.Thread.start


#: Signs the events (the signature is part of what a fire costs).
KEY = EventKey(b"0123456789abcdef" * 4, Path("/nonexistent"))


def _counting_start(self: threading.Thread) -> None:
    _started[0] += 1
    _thread_start(self)


threading.Thread.start = _counting_start  # type: ignore[method-assign]


def cpu_work() -> None:
    end = time.perf_counter() + WORK_SECONDS
    while time.perf_counter() < end:
        pass


def io_work() -> None:
    time.sleep(WORK_SECONDS)


def data(i: int) -> dict[str, object]:
    return {
        "instance_id": f"i-{i:017x}",
        "group": "web-asg",
        "outcome": "accepted",
        "reason": "accepted",
        "source": "sns",
        "message_id": f"m-{i}",
        "event": "autoscaling:EC2_INSTANCE_LAUNCH",
        "facts": {
            "state": "running",
            "launch_time": "2026-11-23T10:00:00+00:00",
            "private_dns_name": "ip-10-0-0-1.ec2.internal",
            "tags": {"aws:autoscaling:groupName": "web-asg", "role": "salt-minion", "Name": "web"},
        },
    }


def run(opts: dict, bus: object, label: str, work: Callable[[], None] | None, base: int) -> None:
    events = reactor.SaltEvents(opts, key=KEY)
    tags = [f"aws_ork/accepted/i-{base + i:017x}" for i in range(N)]
    calls: list[float] = []
    threads = _started[0]
    wall, cpu = time.perf_counter(), time.thread_time()
    for i in range(N):
        start = time.perf_counter()
        events.fire(reactor.Kind.ACCEPTED, f"i-{base + i:017x}", data(base + i))
        calls.append(time.perf_counter() - start)
        if work is not None:
            work()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    start = time.perf_counter()
    events.close()
    closing = time.perf_counter() - start
    threads = _started[0] - threads
    seen: list[str] = []
    end = time.monotonic() + 120
    while len(seen) < N and time.monotonic() < end:
        event = bus.get_event(wait=1, tag="aws_ork/", full=True)  # type: ignore[attr-defined]
        if event is not None:
            seen.append(event["tag"])
    delivered = time.perf_counter() - start
    calls.sort()
    extra = "" if work is None else f" (work alone {N * WORK_SECONDS:.2f} s)"
    print(
        f"{label}: calling thread {wall:.3f} s wall{extra}, {cpu:.3f} s CPU; per fire() "
        f"median {statistics.median(calls) * 1e3:.3f} ms, p99 "
        f"{calls[int(N * 0.99)] * 1e3:.3f} ms, max {calls[-1] * 1e3:.1f} ms; close() "
        f"{closing:.3f} s; all on the bus {delivered:.3f} s after; threads started {threads};"
        f" fired {events.fired} dropped {events.dropped}; in order: {seen == tags}",
        flush=True,
    )


def main() -> None:
    import salt.utils.event

    print(f"aws_ork from {reactor.__file__}")
    root = Path(tempfile.mkdtemp(prefix="evbench"))
    master = start_master(root / "master")
    try:
        opts = master.opts()
        bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        warm = reactor.SaltEvents(opts, key=KEY)  # imports, first connection
        warm.fire(reactor.Kind.LAUNCH, "i-00000000000000000", {})
        warm.close()
        bus.get_event(wait=5, tag="aws_ork/")
        for round_ in range(2):
            for n, (label, work) in enumerate(
                (("bare", None), ("busy CPU", cpu_work), ("busy I/O", io_work))
            ):
                run(
                    opts,
                    bus,
                    f"round {round_ + 1} {label}",
                    work,
                    base=(round_ * 3 + n + 1) * 10 * N,
                )
        bus.destroy()
    finally:
        master.stop()


if __name__ == "__main__":
    main()
