"""The durable to-do list of the S3 mirror, in StateDir.

A key change is recorded here (appended and fsync'd) before its SQS message is deleted, and
an entry is removed only after S3 confirmed the upload or delete. So a crash, an S3 outage
or a restart between the key store and the bucket loses nothing: the next start replays
what is left. Entries are paths relative to PkiDir, or a "rescan" marker (compare the whole
local tree with what the mirror holds).

The file is JSON lines: ``{"p": "master/minions/i-0abc", "t": 1700000000.0}`` or
``{"rescan": true, "t": ...}``. Appends are cheap; after each confirmed sync the file is
rewritten (temp file + fsync + rename) with what is still pending. A torn last line (crash
in the middle of an append) is ignored: the append had not returned, so its message was
never deleted, and the start-up reconciliation covers it anyway.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aws_ork.base.errors import MirrorError
from aws_ork.base.files import write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "mirror-journal.jsonl"


@dataclass(frozen=True)
class Snapshot:
    """What was pending when a sync started; ``seq`` tells later records from these."""

    paths: frozenset[str]
    rescan: bool
    seq: int


@dataclass
class _Entry:
    seq: int  # the latest record of this entry
    since: float  # wall-clock time of the oldest record not yet mirrored


class Journal:
    """Thread-safe: the loop records, the mirror thread takes snapshots and marks them done."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._lock = threading.Lock()
        self._seq = 0
        self._paths: dict[str, _Entry] = {}
        self._rescan: _Entry | None = None
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._load()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise MirrorError(
                f"StateDir {state_dir}: cannot keep the mirror journal: {exc}"
            ) from exc

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        lines = text.split("\n")
        if lines[-1]:
            log.warning("%s: ignoring a torn last record (crash during a write)", self.path)
        for line in lines[:-1]:
            try:
                record = json.loads(line)
                since = float(record.get("t", time.time()))
                if record.get("rescan") is True:
                    self._add_rescan(since)
                elif isinstance(record.get("p"), str):
                    self._add(record["p"], since)
                else:
                    raise ValueError("neither a path nor a rescan")
            except (ValueError, AttributeError, TypeError):
                log.warning(
                    "%s: unreadable record %r; a full rescan will be made", self.path, line[:100]
                )
                self._add_rescan(time.time())

    def _add(self, path: str, since: float) -> None:
        self._seq += 1
        entry = self._paths.get(path)
        self._paths[path] = _Entry(self._seq, min(since, entry.since) if entry else since)

    def _add_rescan(self, since: float) -> None:
        self._seq += 1
        old = self._rescan
        self._rescan = _Entry(self._seq, min(since, old.since) if old else since)

    def record(self, paths: Iterable[str] = (), *, rescan: bool = False) -> None:
        """Durably note changed paths (and/or a rescan). Returns once it is on disk.

        The entries are noted in memory even when the disk write fails, so this process
        still mirrors them; the MirrorError tells the caller not to report the change done.
        """
        now = time.time()
        paths = list(paths)
        lines = [json.dumps({"p": p, "t": now}) for p in paths]
        if rescan:
            lines.append(json.dumps({"rescan": True, "t": now}))
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        with self._lock:
            for path in paths:
                self._add(path, now)
            if rescan:
                self._add_rescan(now)
            try:
                os.write(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                raise MirrorError(f"{self.path}: cannot record a mirror change: {exc}") from exc

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(frozenset(self._paths), self._rescan is not None, self._seq)

    def done(self, snap: Snapshot, *, rescan: bool = True) -> None:
        """Forget what ``snap`` held unless recorded again since (its rescan too, unless
        ``rescan`` is False: the paths were mirrored, the rescan is still to come)."""
        with self._lock:
            for path in snap.paths:
                entry = self._paths.get(path)
                if entry is not None and entry.seq <= snap.seq:
                    del self._paths[path]
            if rescan and snap.rescan and self._rescan is not None and self._rescan.seq <= snap.seq:
                self._rescan = None
            self._rewrite()

    def _rewrite(self) -> None:
        """Replace the file with what is pending (caller holds the lock)."""
        lines = [json.dumps({"p": p, "t": e.since}) for p, e in self._paths.items()]
        if self._rescan is not None:
            lines.append(json.dumps({"rescan": True, "t": self._rescan.since}))
        try:
            write_atomic(self.path, "".join(f"{line}\n" for line in lines).encode(), 0o600)
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:  # the old file still lists these entries: replayed again
            log.warning("%s: cannot compact the mirror journal: %s", self.path, exc)

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths) + (self._rescan is not None)

    def oldest(self) -> float | None:
        """Wall-clock time of the oldest change not yet mirrored; None when all are."""
        with self._lock:
            times = [e.since for e in self._paths.values()]
            if self._rescan is not None:
                times.append(self._rescan.since)
            return min(times) if times else None

    def close(self) -> None:
        with self._lock:
            try:
                os.close(self._fd)
            except OSError:
                pass
