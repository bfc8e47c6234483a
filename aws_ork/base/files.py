"""Files written so that a crash never leaves half of one behind."""

from __future__ import annotations

import fcntl
import os
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
