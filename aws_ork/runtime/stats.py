"""What ``/metrics`` and ``/healthz`` read: small immutable records of the daemon's tallies,
taken at scrape time through one Protocol, :class:`StatsSource`.

The metrics server sits beside the stages and below the loop: it must not know the loop, the
key stage, the completer or the mirror worker (they import modules that import it). The
wiring (``app.py``) hands it a source that copies those parts' counters into these records;
a part that is refactored changes that copy, never the metrics. A record is a snapshot: the
scrape formats it without holding any part's live table.

Table keys are short fixed codes (event kind, reason code; AWS service, error code), never
text from a message, so the number of series stays bounded whatever arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class QueueStats:
    """The loop: what it received and what became of it, and when it last received."""

    url: str
    received: int  # SQS messages received
    #: (event kind, reason code) -> messages deleted, given back for a retry, rejected
    finished: Mapping[tuple[str, str], int]
    retries: Mapping[tuple[str, str], int]
    rejections: Mapping[tuple[str, str], int]
    oldest_message_age: float  # of the latest receive's oldest message, when received
    last_receive: float  # time.monotonic() when a receive last completed
    health_seconds: float  # unhealthy after this long without a completed receive
    receive_failures: int  # failed receives in a row


@dataclass(frozen=True)
class KeyStats:
    """The key stage's tallies of the changes it made."""

    accepted: int = 0
    deleted: int = 0
    preauthorised: int = 0
    rejected: int = 0
    impostors: int = 0  # key binding: each impostor key counted once


@dataclass(frozen=True)
class MirrorStats:
    """How far behind the S3 mirror is."""

    pending: int  # changes not yet confirmed by S3
    behind_seconds: float  # age of the oldest of them; 0 when caught up
    failures: int  # consecutive failed runs
    last_success: float | None  # wall-clock time of the last successful run
    failing_since: float | None  # wall-clock time the current run of failures began
    repaired: int  # objects found overwritten in the bucket and uploaded again


@dataclass(frozen=True)
class Stats:
    """Everything one scrape or health probe reads."""

    queue: QueueStats
    keys: KeyStats
    lifecycle_completed: int  # CompleteLifecycleAction calls made
    salt_events_fired: int
    salt_events_dropped: int
    aws_errors: Mapping[tuple[str, str], int]  # (service, code) -> failed AWS calls
    mirror: MirrorStats | None  # None: no mirror (no BucketUrl, or --dry-run)


class StatsSource(Protocol):
    """Whatever gathers :class:`Stats` now: the wiring's view of the running parts, or a
    test's fake. Called from the metrics thread; it must read memory only (never AWS or
    Salt), so a scrape never waits on them."""

    def stats(self) -> Stats: ...
