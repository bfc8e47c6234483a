"""The replay and enrolment memories of StateDir, mirrored beside the pki and restored with it.

A master restored from the pki alone has forgotten which signed envelopes it finished and
which instances it enrolled: a replayed launch would be accepted again. So the memory files
(:mod:`aws_ork.memory`: ``finished-sns-messages``, ``enrolled-instances``,
``preauthorised-instances``, ``minion-ids``)
are mirrored to ``<prefix>.aws_ork/state/<file name>``, under the pki mirror's prefix (the
same bucket policy and KMS key cover them) in a directory the pki mirror leaves alone (it
neither mirrors a local ``.aws_ork/`` nor deletes those objects, and ``--restore`` never
writes them into PkiDir).

S3 cost is bounded, not one PUT per message: the worker compares the files with what the
bucket holds (a local ``stat``) every :data:`aws_ork.defaults.MIRROR_MEMORY_SECONDS` and at
each reconciliation and clean stop, and uploads a file only when it changed: at most one PUT
per file per interval. A master lost in between loses at most that interval of memory.

``--restore`` brings them back into StateDir, merged with what is already there. A restored
memory comes from whoever can write the bucket, so it is read like a damaged local file: at
most :data:`MAX_BYTES` bytes, each line through the same reader as at start-up (an id that
passes :func:`aws_ork.memory.valid_id`, a time no later than now; anything else is skipped),
and written back canonical (temp file + rename, 0600, never through a link). A bucket writer
can still remove lines (a finished MessageId or an enrolment forgotten: that replay would be
accepted) or add some (an instance that will never be enrolled; a minion id bound to another
instance, whose terminate then deletes that id's key): no more than they can do already by
writing or deleting a key object of the pki mirror, which a restore accepts as it is.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aws_ork import defaults
from aws_ork.base.errors import MirrorError
from aws_ork.base.files import lock_directory, write_atomic
from aws_ork.base.text import shorten
from aws_ork.config import BucketUrl
from aws_ork.defaults import MEMORY_MAX_BYTES as MAX_BYTES
from aws_ork.memory import (
    ENROLLED_FILE,
    FINISHED_FILE,
    NAMES_FILE,
    PREAUTHORISED_FILE,
    IdMemory,
    MinionNames,
)
from aws_ork.mirror.bucket import ObjectTooLarge, S3Tree
from aws_ork.mirror.planner import S3Mirror

log = logging.getLogger(__name__)

#: The objects of aws_ork itself under the pki prefix (not files of PkiDir).
OWN_ROOT = ".aws_ork/"
#: Where the memories are, relative to the pki prefix.
STATE_PREFIX = f"{OWN_ROOT}state/"
#: The files mirrored, relative to StateDir.
FILES = (FINISHED_FILE, ENROLLED_FILE, PREAUTHORISED_FILE, NAMES_FILE)
#: What the memory mirror last confirmed S3 holds (a cache, like the pki manifest).
MANIFEST_FILE = "mirror-memories-manifest.json"


def memory_tree(pki_tree: S3Tree) -> S3Tree:
    """The memories' objects: the pki mirror's bucket, prefix, SSE and ACL, under
    :data:`STATE_PREFIX`."""
    target = pki_tree.target
    return S3Tree(
        pki_tree.client, BucketUrl(target.bucket, target.prefix + STATE_PREFIX), pki_tree.options
    )


def memory_mirror(pki_tree: S3Tree, state_dir: Path) -> S3Mirror:
    """The mirror of the memory files of StateDir (those files only; nothing is walked)."""
    return S3Mirror(memory_tree(pki_tree), state_dir, state_dir / MANIFEST_FILE, only=FILES)


@dataclass(frozen=True)
class MemoryRestore:
    """What ``--restore`` did with the memories."""

    files: int  # memory files written into StateDir
    entries: int  # live lines in them, after the merge
    refused: list[str]  # objects not restored (too large): why, one each
    ignored: int  # other objects under the memories' prefix (not a memory file)


def _parse(name: str, path: Path, clock: Callable[[], float]) -> tuple[str, int]:
    """The canonical text of the memory file at ``path`` and its number of live entries,
    read as the daemon reads it at start-up (same limits, same tolerance)."""
    if name == NAMES_FILE:
        names = MinionNames(path, limit=defaults.MINION_NAMES_LIMIT, clock=clock)
        return names.render(), len(names.items())
    keep, limit = (
        (defaults.SQS_MAX_RETENTION_SECONDS, defaults.FINISHED_MESSAGES_LIMIT)
        if name == FINISHED_FILE
        else (defaults.ENROLLED_KEEP_SECONDS, defaults.ENROLLED_LIMIT)
    )
    memory = IdMemory(path, keep_seconds=keep, limit=limit, clock=clock)
    return memory.render(), len(memory)


def _merge(name: str, state_dir: Path, restored: bytes, clock: Callable[[], float]) -> int:
    """Write StateDir/name as the restored lines followed by the local ones (the local, newer,
    win), parsed and rendered canonical; returns the live entries."""
    final = state_dir / name
    try:
        fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        local = b""
    else:
        with os.fdopen(fd, "rb") as existing:
            local = existing.read()
    if restored and not restored.endswith(b"\n"):
        restored += b"\n"  # a torn last line stays one line, not glued to the first local one
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{name}.", suffix=".restore")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(restored + local)
        text, entries = _parse(name, Path(tmp), clock)
        write_atomic(final, text.encode("ascii"), 0o600)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return entries


def restore_memories(
    pki_tree: S3Tree, state_dir: Path, *, clock: Callable[[], float] = time.time
) -> MemoryRestore:
    """Bring the mirrored memories back into StateDir (merged with any already there).
    MirrorError when S3 or StateDir fails, or StateDir is in use by a running aws_ork."""
    tree = memory_tree(pki_tree)
    listing = tree.list()
    ignored = sorted(rel for rel in listing if rel not in FILES)
    for rel in ignored:
        log.warning("restore: ignoring object %s: not a memory file", shorten(tree.key(rel), 160))
    wanted = [name for name in FILES if name in listing]
    if not wanted:
        return MemoryRestore(0, 0, [], len(ignored))
    try:
        lock = lock_directory(state_dir)
    except OSError as exc:
        raise MirrorError(f"StateDir: {exc}: stop aws_ork before --restore") from exc
    refused: list[str] = []
    files = entries = 0
    try:
        for name in wanted:
            try:
                body = tree.get(name, limit=MAX_BYTES).body
            except ObjectTooLarge:
                refused.append(f"{name}: larger than {MAX_BYTES} bytes")
                log.warning("restore: refused memory %s: larger than %d bytes", name, MAX_BYTES)
                continue
            try:
                entries += _merge(name, state_dir, body, clock)
            except OSError as exc:
                raise MirrorError(f"{state_dir / name}: cannot write: {exc}") from exc
            files += 1
    finally:
        os.close(lock)
    return MemoryRestore(files, entries, refused, len(ignored))
