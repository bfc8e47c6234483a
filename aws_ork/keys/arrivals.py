"""Key binding, fast: act within a second of the bound key being presented.

A launch under key binding usually arrives before the instance's minion has presented its
key; its message is retried with backoff (2, 4, 8 ... s), so the key would be accepted only
at the next retry. While such launches wait, a thread of its own looks at the two files Salt
writes when a minion presents a key under that id (``minions_pre/<id>``, and
``minions_denied/<id>`` when another key was pending or accepted first): two ``stat`` calls
per waiting launch every :data:`~aws_ork.defaults.ARRIVAL_POLL_SECONDS`, none when nothing
waits. When one changes, the key stage is asked again at once (deleting an impostor's key,
accepting the bound one). The minion's first ``test.ping`` then waits only for its own
retry (``acceptance_wait_time``, which the instance-side script sets low).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from aws_ork import defaults
from aws_ork.keys.location import DENIED, PENDING, KeyLocation

log = logging.getLogger(__name__)

#: (mtime_ns or None) of minions_pre/<id> and minions_denied/<id>
Stamp = tuple[int | None, int | None]
#: asked when the files of a waiting id change: (minion id, fingerprint) -> finished?
OnArrival = Callable[[str, str], bool]


class KeyArrivals:
    """Launches waiting for their bound key, and the thread that watches for it."""

    def __init__(self, location: KeyLocation, *,
                 interval: float = defaults.ARRIVAL_POLL_SECONDS,
                 keep_seconds: float = defaults.ARRIVAL_WAIT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.location = location
        self.interval = interval
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: dict[str, tuple[str, float, Stamp]] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._on_arrival: OnArrival | None = None

    def start(self, on_arrival: OnArrival) -> None:
        self._on_arrival = on_arrival
        self._thread = threading.Thread(target=self._run, name="key-arrivals", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: look where the (re-read) master config keeps keys."""
        self.location = KeyLocation.from_opts(opts)

    def wait_for(self, minion_id: str, fingerprint: str) -> None:
        """Watch for this id's key (the key files as they are now are already handled)."""
        stamp = self._stamp(minion_id)
        with self._cond:
            self._waiting[minion_id] = (fingerprint, self._clock(), stamp)
            self._cond.notify_all()

    def waiting(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._waiting)

    def _stamp(self, minion_id: str) -> Stamp:
        def mtime(state: str) -> int | None:
            try:
                return os.stat(self.location.path(state, minion_id)).st_mtime_ns
            except OSError:
                return None

        return mtime(PENDING), mtime(DENIED)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting:
                    self._cond.wait()
                if self._stopping:
                    return
                waiting = dict(self._waiting)
            for minion_id, (fingerprint, since, last) in waiting.items():
                self._look(minion_id, fingerprint, since, last)
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, self.interval):
                    return

    def _look(self, minion_id: str, fingerprint: str, since: float, last: Stamp) -> None:
        if self._clock() - since > self.keep_seconds:
            self._forget(minion_id, since)  # the message's own retries go on without us
            return
        stamp = self._stamp(minion_id)
        if stamp == last or stamp == (None, None):
            return
        with self._cond:
            if minion_id in self._waiting:
                self._waiting[minion_id] = (fingerprint, since, stamp)
        assert self._on_arrival is not None
        try:
            finished = self._on_arrival(minion_id, fingerprint)
        except Exception:  # the message path retries; this thread must go on
            log.error("%s: handling the presented key failed", minion_id, exc_info=True)
            return
        if finished:
            self._forget(minion_id, since)
            return
        with self._cond:  # what the key stage just changed is no news either
            if minion_id in self._waiting:
                self._waiting[minion_id] = (fingerprint, since, self._stamp(minion_id))

    def _forget(self, minion_id: str, since: float) -> None:
        with self._cond:
            entry = self._waiting.get(minion_id)
            if entry is not None and entry[1] == since:
                del self._waiting[minion_id]
