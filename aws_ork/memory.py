"""Durable, bounded memories of ids in StateDir: what the daemon has already done.

Two of them stop replays (see :mod:`aws_ork.checks.replay`): the SNS MessageIds of finished
signed envelopes, and the instances whose keys were accepted once. Each is an append-only
file of ``<epoch> <id>`` lines, fsync'd before the message is reported done, read back at
start-up, entries older than ``keep_seconds`` dropped. The file is rewritten (temp file +
rename) when it holds more dead lines than live ones; at most ``limit`` ids are kept (the
oldest go first), so a flood cannot grow it without bound.

Ids are checked before they reach the file: 1-128 characters of ``[A-Za-z0-9._:-]``, so a
line can never be split or forged by what a message carries.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from aws_ork.runtime.files import write_atomic

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def valid_id(value: object) -> bool:
    """An id a memory can hold (an SNS MessageId, an instance id)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class IdMemory:
    """A set of ids, each with the time it was added; thread-safe.

    ``add`` raises OSError when the id could not be written durably: the caller must not
    report its message done. ``dry_run`` remembers nothing (and writes nothing)."""

    def __init__(self, path: Path, *, keep_seconds: float, limit: int,
                 dry_run: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self.limit = limit
        self.dry_run = dry_run
        self.clock = clock
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._lines = 0  # lines in the file, live or not
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OSError(f"{self.path}: cannot read: {exc}") from exc
        cutoff = self.clock() - self.keep_seconds
        for line in text.splitlines():
            self._lines += 1
            when_text, _, value = line.partition(" ")
            try:
                when = float(when_text)
            except ValueError:
                continue  # a torn or damaged line: the message it stood for was not deleted
            if when >= cutoff and valid_id(value):
                self._ids.pop(value, None)
                self._ids[value] = when
        self._trim()

    def __contains__(self, value: object) -> bool:
        with self._lock:
            when = self._ids.get(value) if isinstance(value, str) else None
            return when is not None and when >= self.clock() - self.keep_seconds

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def add(self, value: str) -> None:
        """Remember ``value`` now, durably; ValueError for an id no memory may hold."""
        if not valid_id(value):
            raise ValueError(f"{value!r:.60} is not an id this memory keeps")
        if self.dry_run:
            return
        now = self.clock()
        with self._lock:
            self._ids.pop(value, None)
            self._ids[value] = now
            self._trim()
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                         0o600)
            try:
                os.write(fd, f"{now:.3f} {value}\n".encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._lines += 1
            if self._lines > 2 * len(self._ids) + 1000:
                self._compact()

    def _trim(self) -> None:
        """Drop expired ids, then the oldest beyond the limit (caller holds the lock)."""
        cutoff = self.clock() - self.keep_seconds
        while self._ids:
            oldest, when = next(iter(self._ids.items()))
            if when >= cutoff and len(self._ids) <= self.limit:
                break
            del self._ids[oldest]

    def _compact(self) -> None:
        """Rewrite the file with the live ids only (caller holds the lock)."""
        data = "".join(f"{when:.3f} {value}\n" for value, when in self._ids.items())
        try:
            write_atomic(self.path, data.encode("ascii"), 0o600)
            self._lines = len(self._ids)
        except OSError as exc:  # the long file still holds every live id
            log.warning("%s: cannot compact: %s", self.path, exc)
