"""ArchiveDir: every received body, saved as it arrived, one file per message.

What the queue delivered is kept byte for byte (before any check: the archive is what came,
not what was believed), for audits and for replaying an incident. The layout is
``ArchiveDir/<source>/<UTC receive time>-<SQS message id>.json``:

- ``<source>`` is the SNS topic name (the last part of the envelope's TopicArn) when that
  ARN is one of AllowedTopicArns, ``other-topics`` for every other SNS envelope (a made-up
  topic, or any topic with ``AllowedTopicArns = *``), and ``direct`` for any other body
  (raw delivery, lifecycle hooks, EventBridge, junk). So the folders are a fixed few, never
  one per topic a sender makes up. It is what the body *claims*: the archive is written
  before the signature check.
- A body never chooses a path: both parts are reduced to ``[A-Za-z0-9_.-]``, no leading
  dot, bounded length, so every file is exactly two components under ArchiveDir.
- Files are written under a temp name, fsync'd and hard-linked to their final name (a link
  never replaces an existing file), mode 0600; folders are 0700 and are opened with
  O_NOFOLLOW relative to the ArchiveDir descriptor, so a symlink planted in the archive is
  never followed.
- ArchiveMaxMB caps what the archive costs the disk, not the bodies' length: each file
  counts its allocated blocks (``st_blocks * 512``) and at least ARCHIVE_FILE_BYTES (4 KiB,
  one block of a common file system, so a file system that reports none for tiny files
  still caps the count: at most ArchiveMaxMB x 256 files), and the folders count their own
  blocks. Past the cap the oldest files (by their receive time, across all folders) are
  removed first. The running total is kept in memory (the name and cost of every archived
  file: a little over 200 bytes each, some 50 MB for a full 1 GB of tiny files) and rebuilt
  by a scan at start-up. A folder left empty that is no longer one of the fixed few (from an
  older version that made one per topic) is removed.

A failed write (disk full, permissions) is one ERROR line per batch and nothing else: the
message is still handled, deleted and counted as usual, because a lost archive copy is
better than a lost key change. A message delivered twice is saved twice (two receive times).
"""

from __future__ import annotations

import errno
import heapq
import json
import logging
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path

from aws_ork import defaults
from aws_ork.base.files import DIR_FLAGS, write_temp_at
from aws_ork.defaults import ARCHIVE_MAX_FOLDER_CHARS as MAX_FOLDER_CHARS
from aws_ork.defaults import ARCHIVE_MAX_ID_CHARS as MAX_ID_CHARS
from aws_ork.events import sns
from aws_ork.sqs.queue import Message

log = logging.getLogger(__name__)

#: The folder of every body that is no SNS envelope.
DIRECT = "direct"
#: The folder of every SNS envelope whose topic is not one of AllowedTopicArns.
OTHER_TOPICS = "other-topics"
#: The files this module writes (and so may count and remove): ``<timestamp>-<id>.json``.
ARCHIVED = re.compile(r"\d{8}T\d{6}\.\d{3}Z-[A-Za-z0-9_.-]+\.json")
#: Temp files of a write cut short (crash, power loss): removed by the start-up scan.
TEMP = re.compile(r"\..+\.tmp")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_component(text: str, limit: int) -> str:
    """``text`` as one safe path component: only ``[A-Za-z0-9_.-]`` (anything else becomes
    ``_``), no leading dot (no hidden file, no ``.``/``..``), at most ``limit`` characters,
    never empty."""
    clean = _UNSAFE.sub("_", text[:limit])
    if clean.startswith("."):
        clean = "_" + clean[1:]
    return clean or "_"


def source_folder(body: str, allowed: Collection[str] | None = None) -> str:
    """The folder for a body: its SNS topic's name if the topic is in ``allowed`` (exact
    ARNs; None: any topic, a test's shortcut), ``other-topics`` for any other envelope, or
    ``direct``. Bodies are untrusted: anything that is not clearly an SNS envelope with a
    string TopicArn is ``direct``."""
    if len(body) > defaults.MAX_BODY_BYTES:
        return DIRECT
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return DIRECT
    if not isinstance(doc, dict) or not sns.is_envelope(doc):
        return DIRECT
    arn = doc["TopicArn"]
    if not isinstance(arn, str):
        return DIRECT
    if allowed is not None and arn not in allowed:
        return OTHER_TOPICS
    return safe_component(arn.rsplit(":", 1)[-1], MAX_FOLDER_CHARS)


def timestamp(when: float) -> str:
    """A sortable UTC receive time: ``20261123T101530.123Z``."""
    moment = datetime.fromtimestamp(when, UTC)
    return moment.strftime("%Y%m%dT%H%M%S.") + f"{moment.microsecond // 1000:03d}Z"


def file_name(when: float, message_id: str) -> str:
    """``<timestamp>-<message id>.json``, the id made safe (the timestamp sorts first)."""
    return f"{timestamp(when)}-{safe_component(message_id, MAX_ID_CHARS)}.json"


def disk_cost(st: os.stat_result) -> int:
    """What a file costs the disk: its allocated blocks, at least ARCHIVE_FILE_BYTES."""
    return max(st.st_blocks * 512, defaults.ARCHIVE_FILE_BYTES)


class Archive:
    """The archive under ``root``; ``max_bytes`` 0 means no cap. ``allowed_topics``: the
    topics that get a folder of their own (AllowedTopicArns; empty: none does).

    Raises OSError when ``root`` cannot be created or opened (or is a symlink): an archive
    that was asked for and cannot exist is a start-up failure, not a silent gap.
    """

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        allowed_topics: Collection[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.allowed_topics = frozenset(allowed_topics)
        self.clock = clock
        self.files_bytes = 0  # disk_cost() of the archived files
        self._folder_bytes: dict[str, int] = {}  # the blocks of each folder (and of root)
        self.saved = 0
        self.failed = 0
        self._files: list[tuple[str, str, int]] = []  # heap of (name, folder, cost)
        if root.is_symlink():  # O_NOFOLLOW below would refuse it too, less clearly
            raise OSError(errno.ELOOP, "is a symlink (give the real path)")
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(root, DIR_FLAGS)  # ELOOP for a symlink: refused
        mode = os.fstat(self._fd).st_mode
        if mode & 0o077:
            log.warning(
                "ArchiveDir %s is open to other users (mode %o): the archive holds "
                "every message received; make it 0700",
                root,
                stat.S_IMODE(mode),
            )
        self._folder_bytes[""] = os.fstat(self._fd).st_blocks * 512
        self._scan()
        self._trim()

    @property
    def total(self) -> int:
        """What the archive costs the disk now: its files' and its folders' blocks."""
        return self.files_bytes + sum(self._folder_bytes.values())

    @property
    def max_files(self) -> int:
        """The most files the cap allows (each counts at least ARCHIVE_FILE_BYTES); 0: none."""
        return self.max_bytes // defaults.ARCHIVE_FILE_BYTES

    def close(self) -> None:
        os.close(self._fd)

    def save(self, messages: Iterable[Message]) -> None:
        """Save each body; never raises (a failure is one ERROR line for the batch)."""
        failures: list[str] = []
        touched: dict[str, int] = {}
        try:
            when = self.clock()  # the batch's receive time
            for message in messages:
                try:
                    self._save_one(message, when, touched)
                    self.saved += 1
                except (OSError, UnicodeError) as exc:
                    self.failed += 1
                    failures.append(f"{message.message_id}: {exc}")
            for folder, fd in touched.items():
                try:
                    os.fsync(fd)  # the new names survive a power loss
                    self._folder_bytes[folder] = os.fstat(fd).st_blocks * 512
                except OSError as exc:
                    failures.append(f"syncing a folder: {exc}")
            self._trim()
        except Exception as exc:  # a bug here must not keep a message from being handled
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            for fd in touched.values():
                os.close(fd)
        if failures:
            log.error(
                "ArchiveDir %s: %d messages not archived (they are handled all the same): %s",
                self.root,
                len(failures),
                "; ".join(failures[:3]),
            )

    def _save_one(self, message: Message, when: float, touched: dict[str, int]) -> None:
        data = message.body.encode("utf-8")
        # one string per folder in memory
        folder = sys.intern(source_folder(message.body, self.allowed_topics))
        if folder not in touched:
            touched[folder] = self._folder(folder)
        fd = touched[folder]
        name = file_name(when, message.message_id)
        tmp, st = write_temp_at(fd, data, 0o600)
        cost = disk_cost(st)
        try:
            name = self._link(tmp, name, fd)
        finally:
            os.unlink(tmp, dir_fd=fd)
        self.files_bytes += cost
        heapq.heappush(self._files, (name, folder, cost))

    @staticmethod
    def _link(tmp: str, name: str, fd: int) -> str:
        """Give the temp file its final name; an existing file is never replaced (a link
        fails instead), the next free ``.N`` name is taken. Returns the name used."""
        stem = name[: -len(".json")]
        for attempt in range(100):
            final = name if attempt == 0 else f"{stem}.{attempt}.json"
            try:
                os.link(tmp, final, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
                return final
            except FileExistsError:
                continue
        raise FileExistsError(f"{name}: 100 files of that name already")

    def _folder(self, folder: str) -> int:
        """An open descriptor of ``root/folder`` (made 0700 if new); a symlink is refused."""
        try:
            os.mkdir(folder, 0o700, dir_fd=self._fd)
        except FileExistsError:
            pass
        return os.open(folder, DIR_FLAGS, dir_fd=self._fd)

    def _scan(self) -> None:
        """Start-up: count the files already archived, drop temp files left by a crash."""
        with os.scandir(self._fd) as entries:
            folders = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        for folder in folders:
            try:
                fd = os.open(folder, DIR_FLAGS, dir_fd=self._fd)
            except OSError as exc:
                log.warning("ArchiveDir %s: cannot read %s: %s", self.root, folder, exc)
                continue
            try:
                self._folder_bytes[folder] = os.fstat(fd).st_blocks * 512
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        if TEMP.fullmatch(entry.name):
                            try:
                                os.unlink(entry.name, dir_fd=fd)
                            except OSError as exc:
                                log.warning(
                                    "ArchiveDir %s: cannot remove %s/%s: %s",
                                    self.root,
                                    folder,
                                    entry.name,
                                    exc,
                                )
                        elif ARCHIVED.fullmatch(entry.name):
                            cost = disk_cost(entry.stat(follow_symlinks=False))
                            self._files.append((entry.name, folder, cost))
                            self.files_bytes += cost
            finally:
                os.close(fd)
        heapq.heapify(self._files)

    def _trim(self) -> None:
        """Past the cap, remove the oldest files until the archive fits again."""
        if not self.max_bytes:
            return
        removed = 0
        emptied: set[str] = set()
        while self.total > self.max_bytes and self._files:
            name, folder, cost = heapq.heappop(self._files)
            self.files_bytes -= cost
            emptied.add(folder)
            try:
                fd = os.open(folder, DIR_FLAGS, dir_fd=self._fd)
                try:
                    os.unlink(name, dir_fd=fd)
                finally:
                    os.close(fd)
                removed += 1
            except FileNotFoundError:
                pass  # removed by hand meanwhile
            except OSError as exc:  # forgotten: counted no more, retried at the next start
                log.error("ArchiveDir %s: cannot remove %s/%s: %s", self.root, folder, name, exc)
        for folder in (
            emptied - {DIRECT, OTHER_TOPICS} - set(map(self._allowed_folder, self.allowed_topics))
        ):
            try:  # a folder of an older version's made-up topic, once it is empty
                os.rmdir(folder, dir_fd=self._fd)
                self._folder_bytes.pop(folder, None)
            except OSError:
                pass  # not empty yet (or someone else's files in it): kept, still counted
        if removed:
            log.debug(
                "ArchiveDir %s: removed the %d oldest files (cap %d bytes)",
                self.root,
                removed,
                self.max_bytes,
            )

    @staticmethod
    def _allowed_folder(arn: str) -> str:
        return safe_component(arn.rsplit(":", 1)[-1], MAX_FOLDER_CHARS)
