"""Remember recent terminations, so a launch handled after its terminate accepts nothing.

SQS standard queues reorder messages and launches are retried, so a terminate can be handled
before the launch of the same instance. With VerifyInstances, EC2's state settles it; without
it, each honoured terminate leaves (written by :mod:`aws_ork.decide`, not by the check) one
small file ``StateDir/terminated/<instance id>`` (written
atomically; its mtime is when) and a launch for a remembered id is refused. Files older than
SQS's longest retention (14 days: no launch message can outlive it) are pruned.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aws_ork import defaults
from aws_ork.base.files import write_atomic
from aws_ork.base.ids import is_instance_id
from aws_ork.checks.verdict import Verdict
from aws_ork.defaults import TERMINATIONS_PRUNE_SECONDS as PRUNE_EVERY_SECONDS
from aws_ork.events import Event, Kind

log = logging.getLogger(__name__)

#: SQS keeps a message at most 14 days: a launch older than that cannot arrive.
RETENTION_SECONDS = defaults.SQS_MAX_RETENTION_SECONDS


class Terminations:
    """One file per terminated instance id under ``directory``."""

    def __init__(
        self, directory: Path, *, dry_run: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self.dry_run = dry_run
        self.clock = clock
        self._pruned_at: float | None = None

    def _path(self, instance_id: str) -> Path:
        if not is_instance_id(instance_id):  # never build a path from anything else
            raise ValueError(f"{instance_id!r} is not an instance id")
        return self.directory / instance_id

    def remember(self, instance_id: str) -> None:
        """Record that this instance was terminated; OSError when StateDir is not writable."""
        path = self._path(instance_id)
        if self.dry_run:
            log.info(
                "dry run: would remember the termination of %s in %s", instance_id, self.directory
            )
            return
        stamp = datetime.fromtimestamp(self.clock(), UTC).isoformat() + "\n"
        write_atomic(path, stamp.encode())
        self._maybe_prune()

    def seen(self, instance_id: str) -> float | None:
        """When the termination of this instance was recorded (epoch), None if not (lately)."""
        try:
            when = self._path(instance_id).stat().st_mtime
        except FileNotFoundError:
            return None
        return when if self.clock() - when <= RETENTION_SECONDS else None

    def prune(self) -> int:
        """Delete records older than the retention; return how many went."""
        self._pruned_at = self.clock()
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        cutoff = self.clock() - RETENTION_SECONDS
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError as exc:
                log.warning("cannot prune %s: %s", entry.path, exc)
        if removed:
            log.info("pruned %d termination records older than 14 days", removed)
        return removed

    def _maybe_prune(self) -> None:
        if self._pruned_at is None or self.clock() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self.prune()


class TerminationCheck:
    """Last check without VerifyInstances: a launch for a remembered id is refused.

    It only reads the memory; the decide stage records a terminate once every check passed,
    so a terminate refused by an earlier check is never recorded."""

    #: the reason code of its failures in the metrics (a fixed word, never message text)
    code = "terminated"

    def __init__(self, terminations: Terminations) -> None:
        self.terminations = terminations

    def __call__(self, event: Event) -> Verdict:
        instance_id = event.instance_id
        if instance_id is None:
            return Verdict.refused("no instance id")
        if event.kind is Kind.TERMINATE:
            return Verdict.passed()
        try:
            when = self.terminations.seen(instance_id)
        except OSError as exc:
            return Verdict.deferred(f"termination record in StateDir unusable: {exc}")
        if when is None:
            return Verdict.passed()
        at = datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")
        return Verdict.refused(
            f"instance was terminated (terminate handled at {at}); "
            f"a launch after its terminate accepts nothing",
        )
