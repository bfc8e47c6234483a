"""Files written so that a crash never leaves half of one behind."""

from __future__ import annotations

import fcntl
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write by temp file in the same directory + rename; the temp file is removed on error,
    so readers see the old content or the new one, never a part.

    The mode is set before the data can be read under the final name. The file is fsync'd
    before the rename and the directory after it, so the change survives a power loss.
    A missing directory is created (0755).
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


#: How :func:`write_temp_at` opens its file: a new one (never a file that exists), never
#: through a symlink, not inherited by a child process.
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


#: Opening a directory to work relative to it: never through a symlink (ELOOP), never
#: inherited by a child process.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_temp_at(
    dir_fd: int, data: bytes, mode: int, prefix: str = "."
) -> tuple[str, os.stat_result]:
    """Write ``data`` to a new temp file ``<prefix><random hex>.tmp`` in the directory open as
    ``dir_fd``; return its name and its stat (taken after the fsync: what it costs the disk).

    For directories an untrusted party may have written to: the name is relative to the
    descriptor (no path, so no symlink on the way), the file is created with O_EXCL and
    O_NOFOLLOW (never an existing file, never through a link), 0600, and given ``mode``
    before any data is written; it is fsync'd. On any failure the temp file is removed again
    (only one this call created). The first half of a dir-fd atomic write: the caller gives
    it its final name relative to the same descriptor (:func:`write_atomic_at` replaces; the
    archive links, which never replaces) and fsyncs the directory (once for many names).
    """
    tmp = f"{prefix}{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
    except BaseException:
        _remove_quietly(dir_fd, tmp)
        raise
    return tmp, st


def write_atomic_at(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """:func:`write_atomic` relative to a directory descriptor: a temp file
    (:func:`write_temp_at`) renamed over ``name`` (a symlink there is replaced, not followed;
    a directory there raises IsADirectoryError); the temp file is removed on any error. The
    directory is not fsync'd: the caller does, after its last name."""
    tmp, _ = write_temp_at(dir_fd, data, mode, prefix=f".{name}.")
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _remove_quietly(dir_fd, tmp)
        raise


def _remove_quietly(dir_fd: int, name: str) -> None:
    """Remove a temp file after a failure; an error here must not hide the failure."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def tree_entries(root: Path, onerror: Callable[[OSError], None] | None = None) -> Iterator[str]:
    """Every file and symlink under ``root`` as a relative posix path, in sorted order.

    Symlinks (to directories too) are listed, never followed: the walk stays in the tree.
    ``onerror`` gets the OSError of a directory that cannot be read (default: skipped)."""
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        links = [name for name in dirnames if os.path.islink(os.path.join(dirpath, name))]
        for name in sorted(filenames + links):
            yield Path(dirpath, name).relative_to(root).as_posix()


class DirectoryInUse(OSError):
    """Another process holds the directory's lock."""


def lock_directory(directory: Path, name: str = "lock") -> int:
    """Take an exclusive lock on ``directory/name`` (made 0600, never through a symlink) and
    return its descriptor: the lock lasts as long as the process keeps it open, and the
    kernel drops it when the process dies (no stale lock file to clean up). The file holds
    the holder's pid, for the message of the next one. DirectoryInUse when another process
    holds it; OSError when it cannot be made."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise DirectoryInUse(f"{directory} is in use by another aws_ork (pid {holder})") from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd
