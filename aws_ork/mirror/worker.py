"""The S3 mirror's background worker: the loop tells it what changed, it mirrors it soon.

Key handling never waits for S3. :meth:`MirrorWorker.request` writes the changed paths to
the durable journal (StateDir) and returns; the SQS message is deleted only after that.
The worker thread then:

1. at start, replays what the journal still holds (changes recorded before a crash or an
   outage), then runs a full reconciliation (listing the bucket);
2. after a burst of requests has been quiet for MIRROR_DEBOUNCE_SECONDS (or at the latest
   MIRROR_DEBOUNCE_MAX_SECONDS after its first request), mirrors the recorded paths;
3. every ReconcileMinutes, reconciles again (out-of-band changes, drift in the bucket);
4. with ``memories`` (:mod:`aws_ork.mirror.memories`), every MIRROR_MEMORY_SECONDS, at each
   reconciliation and at a clean stop, uploads the StateDir memory files that changed.

A failed run is retried with a doubling delay; journal entries go only once S3 confirmed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aws_ork import defaults
from aws_ork.base.errors import MirrorError
from aws_ork.base.saltkeys import AUTOSIGN, DENIED, KEY_STATES, PENDING
from aws_ork.mirror.journal import Journal, Snapshot
from aws_ork.mirror.planner import S3Mirror, SyncStats

__all__ = ["MirrorStatus", "MirrorWorker", "S3Mirror", "SyncStats", "key_paths", "unmirrored_dirs"]

log = logging.getLogger(__name__)

#: Every place the master's key store keeps a file named after the minion id.
KEY_DIRS = (*KEY_STATES, AUTOSIGN)

#: Key directories the mirror leaves out. Pending and denied keys are written by whoever
#: reaches the master's request port, not by a decision: mirroring them would let anyone
#: make us write S3 objects, and a restored copy would carry the restore's mtime, so a key
#: presented before its instance launched would pass the freshness check on the new master.
#: A minion presents its key again at its next authentication, so nothing is lost. Autosign
#: stubs are this master's pre-authorisations and must not outlive it (restore never wrote
#: them back either).
UNMIRRORED = (PENDING, DENIED, AUTOSIGN)


def _base(key_dir: str) -> str:
    return f"{key_dir.strip('/')}/" if key_dir.strip("/") else ""


def key_paths(key_dir: str, minion_id: str) -> list[str]:
    """The paths (relative to PkiDir) a change of this minion's key may touch.

    ``key_dir`` is the master's pki_dir relative to PkiDir ('' when they are the same)."""
    return [f"{_base(key_dir)}{state}/{minion_id}" for state in KEY_DIRS]


def unmirrored_dirs(key_dir: str | None) -> list[str]:
    """The directories (relative to PkiDir) of :data:`UNMIRRORED` under the master's key
    directory; none when that is outside PkiDir (then no key is mirrored anyway)."""
    return [] if key_dir is None else [f"{_base(key_dir)}{state}" for state in UNMIRRORED]


@dataclass(frozen=True)
class MirrorStatus:
    """How far behind the mirror is (for logs and metrics)."""

    pending: int  # journal entries not yet confirmed by S3
    behind_seconds: float  # age of the oldest of them; 0 when caught up
    failures: int  # consecutive failed runs
    last_success: float | None  # wall-clock time of the last successful run
    runs: int  # successful runs since start (a burst of requests makes one)
    #: wall-clock time of the first failure of the current run of failures (None: not failing)
    failing_since: float | None = None
    #: objects found overwritten in the bucket (metadata copied) and uploaded again
    repaired: int = 0


class MirrorWorker:
    """Runs the mirror in a thread of its own. ``request()`` is cheap and never waits on S3."""

    def __init__(
        self,
        mirror: S3Mirror,
        journal: Journal,
        *,
        key_dir: str | None = "",
        reconcile_seconds: float = 0.0,
        memories: S3Mirror | None = None,
        memory_seconds: float = defaults.MIRROR_MEMORY_SECONDS,
        debounce: float = defaults.MIRROR_DEBOUNCE_SECONDS,
        debounce_max: float = defaults.MIRROR_DEBOUNCE_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mirror = mirror
        self.journal = journal
        self.memories = memories
        self.memory_seconds = memory_seconds
        self.key_dir = key_dir
        self.reconcile_seconds = reconcile_seconds
        self.debounce = debounce
        self.debounce_max = debounce_max
        self._clock = clock
        self._cond = threading.Condition()
        self._need_reconcile = True  # at start-up
        self._next_reconcile: float | None = None
        self._memory_due = False
        self._next_memory: float | None = None  # set after the first run
        self._burst_start: float | None = None
        self._last_request = 0.0
        self._retry_at = 0.0
        self._hurry = 0
        self._running = False
        self._stopping = False
        self._failures = 0
        self._behind_since: float | None = None
        self._failing_since: float | None = None
        self._last_success: float | None = None
        self._runs = 0
        self._thread = threading.Thread(target=self._run, name="s3-mirror", daemon=True)

    def start(self) -> None:
        left = len(self.journal)
        if left:
            oldest = self.journal.oldest() or time.time()
            log.info(
                "S3 mirror: replaying %d changes recorded before the last stop (oldest %.0fs ago)",
                left,
                time.time() - oldest,
            )
        self._thread.start()

    # --- called by the loop (and the watcher) -------------------------------------------

    def request(self, minion_ids: Iterable[str] | None = None) -> None:
        """Record that these minions' keys changed (or, with no ids, that something in the
        tree may have: a rescan of the local tree against the mirror). Returns once it is
        on disk; raises MirrorError when the journal cannot be written."""
        paths: list[str] = []
        rescan = minion_ids is None
        for minion_id in minion_ids or ():
            if not minion_id or "/" in minion_id or minion_id in (".", ".."):
                rescan = True  # never a path from an odd id: look at the whole tree instead
            elif self.key_dir is not None:
                paths.extend(key_paths(self.key_dir, minion_id))
        if not paths and not rescan:
            return  # the master's key store is outside PkiDir: nothing of it is mirrored
        try:
            self.journal.record(paths, rescan=rescan)
        finally:
            with self._cond:
                now = self._clock()
                self._last_request = now
                if self._burst_start is None:
                    self._burst_start = now
                self._cond.notify_all()

    @property
    def pending(self) -> bool:
        """True while a change has not yet reached S3."""
        with self._cond:
            return self._has_work() or self._running

    def status(self) -> MirrorStatus:
        oldest = self.journal.oldest()
        with self._cond:
            return MirrorStatus(
                len(self.journal),
                max(0.0, time.time() - oldest) if oldest else 0.0,
                self._failures,
                self._last_success,
                self._runs,
                self._failing_since,
                self.mirror.repaired + (self.memories.repaired if self.memories else 0),
            )

    def flush(self, timeout: float) -> bool:
        """Mirror what is pending now, skipping the debounce; False if not done in time."""
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not (self._has_work() or self._running), timeout)
            finally:
                self._hurry -= 1

    def stop(self, timeout: float) -> bool:
        """Try to mirror what is pending, then stop the thread. True if nothing is left
        behind; what is left stays in the journal for the next start."""
        done = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=defaults.CONNECT_TIMEOUT_SECONDS * 2)
        if not self._thread.is_alive():
            self.mirror.save_manifest()
            if self.memories is not None:  # the thread is gone: this one may use them
                try:
                    self.memories.rescan()
                    self.memories.save_manifest()
                except Exception as exc:
                    log.error("S3 mirror: the last upload of the StateDir memories failed: %s", exc)
                    done = False
        self.journal.close()
        return done

    # --- the thread -------------------------------------------------------------------

    def _has_work(self) -> bool:
        return self._need_reconcile or self._memory_due or len(self.journal) > 0

    def _next_wake(self, now: float) -> float | None:
        """Seconds until something is due (None: nothing is); 0 means now."""
        if self._next_reconcile is not None and now >= self._next_reconcile:
            self._need_reconcile = True
            self._next_reconcile = None
        if self._next_memory is not None and now >= self._next_memory:
            self._memory_due = True
            self._next_memory = None
        waits: list[float] = []
        if self._next_reconcile is not None:
            waits.append(self._next_reconcile - now)
        if self._next_memory is not None:
            waits.append(self._next_memory - now)
        if self._has_work():
            if now < self._retry_at:
                waits.append(self._retry_at - now)
            elif self._hurry or self._burst_start is None or len(self.journal) == 0:
                return 0.0  # flush, start-up replay or reconciliation: no debounce
            else:
                quiet = self._last_request + self.debounce - now
                latest = self._burst_start + self.debounce_max - now
                wait = min(quiet, latest)
                if wait <= 0:
                    return 0.0
                waits.append(wait)
        return max(0.0, min(waits)) if waits else None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    wait = self._next_wake(self._clock())
                    if wait == 0.0:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
                self._running = True
                self._burst_start = None
                reconcile = self._need_reconcile
                memory = self._memory_due or reconcile
                snap = self.journal.snapshot()
            ok = self._sync_once(snap, reconcile, memory)
            with self._cond:
                self._running = False
                if ok and self.memories is not None and memory:
                    self._memory_due = False
                    self._next_memory = self._clock() + self.memory_seconds
                if ok:
                    if reconcile:
                        self._need_reconcile = False
                        if self.reconcile_seconds > 0:
                            self._next_reconcile = self._clock() + self.reconcile_seconds
                else:
                    delay = self._retry_delay()
                    self._retry_at = self._clock() + delay
                self._cond.notify_all()

    def _sync_once(self, snap: Snapshot, reconcile: bool, memory: bool = False) -> bool:
        """Mirror the journal's paths first (quick), then reconcile or rescan if due, then
        the memories (reconciled with the pki, else compared with their manifest)."""
        started = time.time()
        try:
            stats: list[tuple[str, SyncStats]] = []
            if snap.paths:
                stats.append(("changes", self.mirror.sync_paths(snap.paths)))
                self.journal.done(snap, rescan=False)
            if reconcile:
                stats.append(("reconciliation", self.mirror.reconcile()))
                self.journal.done(snap)
            elif snap.rescan:
                stats.append(("rescan", self.mirror.rescan()))
                self.journal.done(snap)
            if self.memories is not None and memory:
                stats.append(
                    ("memories", self.memories.reconcile() if reconcile else self.memories.rescan())
                )
        except Exception as exc:  # never let the mirror thread die silently
            self._failed(exc)
            return False
        if self._failures:
            log.info(
                "S3 mirror caught up after %d failed attempts; it was %.0fs behind",
                self._failures,
                started - (self._behind_since or started),
            )
        self._failures = 0
        self._behind_since = None
        self._failing_since = None
        self._last_success = time.time()
        self._runs += 1
        for what, result in stats:
            level = (
                logging.INFO
                if result.uploaded or result.deleted or what not in ("rescan", "memories")
                else logging.DEBUG
            )
            log.log(level, "S3 mirror %s: %s (%.2fs)", what, result, time.time() - started)
        return True

    def _retry_delay(self) -> float:
        return defaults.backoff(
            self._failures, defaults.RECONNECT_BASE_SECONDS, defaults.MIRROR_RETRY_CAP_SECONDS
        )

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = time.time()
        if self._behind_since is None:
            self._behind_since = self.journal.oldest() or time.time()
        delay = self._retry_delay()
        status = self.status()
        args = (self._failures, exc, status.pending, status.behind_seconds, delay)
        if isinstance(exc, MirrorError):
            log.error(
                "S3 mirror failed (attempt %d): %s; %d changes waiting, %.0fs behind; retry in %ss",
                *args,
            )
        else:
            log.exception(
                "S3 mirror failed unexpectedly (attempt %d): %s; %d changes "
                "waiting, %.0fs behind; retry in %ss",
                *args,
            )
