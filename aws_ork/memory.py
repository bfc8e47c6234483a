"""Durable, bounded memories of ids in StateDir: what the daemon has already done.

Two of them stop replays (see :mod:`aws_ork.checks.replay`): the SNS MessageIds of finished
signed envelopes, and the instances whose keys were accepted once. A third, the instances
aws_ork wrote an autosign stub for, tells the reconcile sweep (with the second and
:class:`MinionNames`) which keys aws_ork enrolled, the only ones it deletes. Each is an append-only
file of ``<epoch> <id>`` lines, fsync'd before the message is reported done (the loop's
batch: once per receive batch, before its messages are deleted), read back at
start-up, entries older than ``keep_seconds`` dropped. The file is rewritten (temp file +
rename) when it holds more dead lines than live ones; at most ``limit`` ids are kept (the
oldest go first), so a flood cannot grow it without bound.

Ids are checked before they reach the file: 1-128 characters of ``[A-Za-z0-9._:-]``, so a
line can never be split or forged by what a message carries. The same reader takes a memory
back from the S3 mirror (``--restore``, :mod:`aws_ork.mirror.memories`): whatever a line
holds, it is an id that passes that check, with a time no later than now, or it is skipped.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from aws_ork.base.files import write_atomic

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

#: The memory files in StateDir (each is also mirrored to S3 beside the pki).
FINISHED_FILE = "finished-sns-messages"
ENROLLED_FILE = "enrolled-instances"
PREAUTHORISED_FILE = "preauthorised-instances"
NAMES_FILE = "minion-ids"


def valid_id(value: object) -> bool:
    """An id a memory can hold (an SNS MessageId, an instance id)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def append_line(path: Path, line: str, *, sync: bool = True) -> None:
    """Append one line to a memory file and (``sync``) fsync it: durable before the caller
    goes on. Never follows a symlink; the file is 0600 in a 0700 directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, line.encode("ascii"))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[str]:
    """The lines of a memory file ([] when there is none yet); OSError naming the file when
    it cannot be read (a start-up failure)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise OSError(f"{path}: cannot read: {exc}") from exc
    return text.splitlines()


def compact_if_due(path: Path, lines: int, live: int, render: Callable[[], Iterable[str]]) -> int:
    """Rewrite a memory file of ``lines`` lines with its ``live`` ones only (``render``: temp
    file + rename) once it holds more dead lines than live ones, plus 1,000; the file's line
    count after it. A rewrite that fails leaves the long file, which still holds every live
    line. The caller holds its lock."""
    if lines <= 2 * live + 1000:
        return lines
    try:
        write_atomic(path, "".join(render()).encode("ascii"), 0o600)
    except OSError as exc:
        log.warning("%s: cannot compact: %s", path, exc)
        return lines
    return live


def sync_file(path: Path) -> None:
    """fsync a memory file: every line appended to it so far is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IdMemory:
    """A set of ids, each with the time it was added; thread-safe.

    ``add`` raises OSError when the id could not be written durably: the caller must not
    report its message done. ``dry_run`` remembers nothing (and writes nothing)."""

    def __init__(
        self,
        path: Path,
        *,
        keep_seconds: float,
        limit: int,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self.limit = limit
        self.dry_run = dry_run
        self.clock = clock
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._lines = 0  # lines in the file, live or not
        self._unsynced = False  # lines appended with sync=False since the last fsync
        self._load()

    def sync(self) -> None:
        """Make every id added so far durable (one fsync); OSError when it cannot be."""
        with self._lock:
            if self._unsynced:
                sync_file(self.path)
                self._unsynced = False

    def _load(self) -> None:
        cutoff = self.clock() - self.keep_seconds
        for line in read_lines(self.path):
            self._lines += 1
            when_text, _, value = line.partition(" ")
            try:
                when = min(float(when_text), self.clock())  # never later than now
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

    def add(self, value: str, *, sync: bool = True) -> None:
        """Remember ``value`` now, durably; ValueError for an id no memory may hold.

        ``sync=False``: written but not yet durable, for a caller that makes a whole batch
        durable at once with :meth:`sync` before any of its messages is deleted."""
        if not valid_id(value):
            raise ValueError(f"{value!r:.60} is not an id this memory keeps")
        if self.dry_run:
            return
        now = self.clock()
        with self._lock:
            self._ids.pop(value, None)
            self._ids[value] = now
            self._trim()
            append_line(self.path, f"{now:.3f} {value}\n", sync=sync)
            self._unsynced = self._unsynced or not sync
            self._lines += 1
            self._lines = compact_if_due(self.path, self._lines, len(self._ids), self._render)

    def _render(self) -> Iterable[str]:
        return (f"{when:.3f} {value}\n" for value, when in self._ids.items())

    def render(self) -> str:
        """The file's text with the live ids only (what a compaction writes)."""
        with self._lock:
            return "".join(self._render())

    def _trim(self) -> None:
        """Drop expired ids, then the oldest beyond the limit (caller holds the lock)."""
        cutoff = self.clock() - self.keep_seconds
        while self._ids:
            oldest, when = next(iter(self._ids.items()))
            if when >= cutoff and len(self._ids) <= self.limit:
                break
            del self._ids[oldest]


#: a released instance's line: its minion id is free again
_RELEASED = "-"


class MinionNames:
    """MinionIdTemplate: which minion id each instance was given, durably (StateDir).

    A terminate must delete the key of the id its launch was given, even when the tags the id
    was made from are gone; and an id given to one instance may not be given to another while
    the first holds it. Lines ``<epoch> <instance id> <minion id>`` (``-``: released, after
    its key was deleted), read back at start-up, the last line of an instance winning;
    rewritten when dead lines outnumber live ones. At most ``limit`` instances are kept (the
    oldest go first; a forgotten one's terminate deletes nothing, and the sweep finds its
    key only if it is named like an instance id). Thread-safe; ``dry_run`` writes nothing."""

    def __init__(
        self,
        path: Path,
        *,
        limit: int,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.limit = limit
        self.dry_run = dry_run
        self.clock = clock
        self._lock = threading.Lock()
        self._names: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._owners: dict[str, str] = {}
        self._lines = 0
        self._load()

    def _load(self) -> None:
        for line in read_lines(self.path):
            self._lines += 1
            parts = line.split(" ")
            if len(parts) != 3:
                continue  # a torn line: the message it stood for was not finished
            when_text, instance_id, minion_id = parts
            try:
                when = float(when_text)
            except ValueError:
                continue
            if not valid_id(instance_id):
                continue
            if minion_id == _RELEASED:
                self._drop(instance_id)
            elif valid_id(minion_id):
                self._set(instance_id, minion_id, when)
                self._trim()  # as it was trimmed when the line was written

    def minion_of(self, instance_id: str) -> str | None:
        """The minion id this instance was given; None if none is remembered."""
        with self._lock:
            entry = self._names.get(instance_id)
            return entry[1] if entry is not None else None

    def owner_of(self, minion_id: str) -> str | None:
        """The instance that holds this minion id; None if none does."""
        with self._lock:
            return self._owners.get(minion_id)

    def items(self) -> list[tuple[str, str]]:
        """(instance id, minion id) of every instance remembered (for the sweep)."""
        with self._lock:
            return [(instance_id, entry[1]) for instance_id, entry in self._names.items()]

    def bind(self, instance_id: str, minion_id: str) -> None:
        """Give ``minion_id`` to ``instance_id``, durably (OSError: not written; the caller
        must not go on). ValueError when another instance holds the id."""
        if not (valid_id(instance_id) and valid_id(minion_id)):
            raise ValueError(f"{instance_id!r:.60} -> {minion_id!r:.60}: not ids this memory keeps")
        with self._lock:
            owner = self._owners.get(minion_id)
            if owner is not None and owner != instance_id:
                raise ValueError(f"{minion_id} belongs to {owner}")
            entry = self._names.get(instance_id)
            if entry is not None and entry[1] == minion_id or self.dry_run:
                return
            now = self.clock()
            append_line(self.path, f"{now:.3f} {instance_id} {minion_id}\n")
            self._set(instance_id, minion_id, now)
            self._trim()
            self._lines += 1
            self._compact()

    def release(self, instance_id: str) -> None:
        """The instance's key is deleted: its minion id is free again (durably)."""
        with self._lock:
            if instance_id not in self._names or self.dry_run:
                return
            append_line(self.path, f"{self.clock():.3f} {instance_id} {_RELEASED}\n")
            self._drop(instance_id)
            self._lines += 1
            self._compact()

    def _set(self, instance_id: str, minion_id: str, when: float) -> None:
        self._drop(instance_id)
        self._names[instance_id] = (when, minion_id)
        self._owners[minion_id] = instance_id

    def _drop(self, instance_id: str) -> None:
        entry = self._names.pop(instance_id, None)
        if entry is not None and self._owners.get(entry[1]) == instance_id:
            del self._owners[entry[1]]

    def _trim(self) -> None:
        while len(self._names) > self.limit:
            self._drop(next(iter(self._names)))

    def _compact(self) -> None:
        self._lines = compact_if_due(self.path, self._lines, len(self._names), self._render)

    def _render(self) -> Iterable[str]:
        return (
            f"{when:.3f} {instance_id} {minion_id}\n"
            for instance_id, (when, minion_id) in self._names.items()
        )

    def render(self) -> str:
        """The file's text with the live names only (what a compaction writes)."""
        with self._lock:
            return "".join(self._render())
