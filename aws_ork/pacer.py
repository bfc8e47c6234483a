"""Batch the S3 mirror's work across a burst of messages.

The loop used to ask for a mirror run after every batch that changed a key; during a backlog
that meant a full-tree comparison (one bucket listing, one hash of every file) every ten
messages, competing with the drain for the endpoint and the CPU. While batches come back
full, more are waiting: the pacer holds the request back until the burst ends (a batch that
is not full, or an empty poll) or until the first held change is MIRROR_DEFER_SECONDS old,
so the mirror never lags a change by more than that plus one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aws_ork import defaults
from aws_ork.syncer import MirrorWorker


class MirrorPacer:
    """Turns "a key changed" into at most one mirror request per burst."""

    def __init__(self, mirror: MirrorWorker, *,
                 defer_seconds: float = defaults.MIRROR_DEFER_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mirror = mirror
        self.defer_seconds = defer_seconds
        self.clock = clock
        self._due_since: float | None = None

    def changed(self) -> None:
        """The key store changed: a mirror run is due."""
        if self._due_since is None:
            self._due_since = self.clock()

    def end_of_batch(self, *, full: bool) -> None:
        """After each cycle: request the run unless a burst is still going on."""
        if self._due_since is None:
            return
        if full and self.clock() - self._due_since < self.defer_seconds:
            return
        self.flush()

    def flush(self) -> None:
        """Request the run now if one is due (on the way out)."""
        if self._due_since is not None:
            self._due_since = None
            self.mirror.request()
