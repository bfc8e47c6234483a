"""Files written so that a crash never leaves half of one behind."""

from __future__ import annotations

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


def tree_entries(root: Path,
                 onerror: Callable[[OSError], None] | None = None) -> Iterator[str]:
    """Every file and symlink under ``root`` as a relative posix path, in sorted order.

    Symlinks (to directories too) are listed, never followed: the walk stays in the tree.
    ``onerror`` gets the OSError of a directory that cannot be read (default: skipped)."""
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        links = [name for name in dirnames if os.path.islink(os.path.join(dirpath, name))]
        for name in sorted(filenames + links):
            yield Path(dirpath, name).relative_to(root).as_posix()
