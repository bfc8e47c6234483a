"""Is a directory only aws_ork's to write? For trust anchors such as CertCacheDir, whose files
are believed without a fetch: whoever can write one there, or swap the directory for another,
can sign any message.

The rules: the directory itself (through whatever symlinks name it) is owned by aws_ork's
effective user and writable by no group or other; so are the entries of the two levels below
it (``<dir>/<host>/<file>``), which may also be root's. Every directory the path is looked up
in on the way (each ancestor, and the directory holding each symlink followed) is owned by
root or by aws_ork's user and writable by no group or other, unless it is sticky (``/tmp``):
there no one can rename or delete what another user made. A directory that does not exist yet
is judged by its existing ancestors (aws_ork makes it 0755, then 0700 under StateDir).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: symlinks followed at most (Linux's own limit)
MAX_HOPS = 40


def _looked_up_in(path: str) -> tuple[list[str], str | None]:
    """Every existing directory a name of ``path`` is looked up in, in order, and the path's
    final target (None if it does not exist yet), following symlinks as the kernel does."""
    parents: list[str] = []
    current = "/"
    parts = [part for part in os.path.abspath(path).split("/") if part]
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        parents.append(current)
        candidate = os.path.join(current, name)
        if os.path.islink(candidate):
            hops += 1
            if hops > MAX_HOPS:
                raise OSError(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            parts = [part for part in target.split("/") if part] + parts
        elif os.path.lexists(candidate):
            current = candidate
        else:
            return parents, None
    return parents, current


def _who_can_write(info: os.stat_result, owners: tuple[int, ...], *, sticky_ok: bool) -> str | None:
    """Why someone other than aws_ork (and root) can change this entry, or None."""
    if info.st_uid not in owners:
        return f"owned by uid {info.st_uid}, not by aws_ork's user (uid {os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if sticky_ok and info.st_mode & stat.S_ISVTX:
            return None
        return (
            f"writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'} "
            f"(mode {stat.S_IMODE(info.st_mode):04o})"
        )
    return None


def untrusted_dir_problem(directory: Path) -> str | None:
    """None when only aws_ork's user (and root) can change what ``directory`` holds; else what
    is wrong, naming the path at fault."""
    me = os.geteuid()
    try:
        parents, target = _looked_up_in(str(directory))
        for parent in parents:
            why = _who_can_write(os.stat(parent), (0, me), sticky_ok=True)
            if why:
                return (
                    f"{parent} (on the way to {directory}) is {why}: whoever can write "
                    f"there can replace the directory"
                )
        if target is None:
            return None
        info = os.stat(target)
        if not stat.S_ISDIR(info.st_mode):
            return f"{target} is not a directory"
        why = _who_can_write(info, (me,), sticky_ok=False)
        if why:
            return f"{target} is {why}"
        for entry in _entries(Path(target)):
            why = _who_can_write(os.stat(entry), (0, me), sticky_ok=False)
            if why:
                return f"{entry} is {why}"
    except OSError as exc:
        return f"cannot be checked: {exc}"
    return None


def _entries(directory: Path) -> list[Path]:
    """The entries one and two levels under ``directory`` (``<host>`` and its files)."""
    out: list[Path] = []
    for entry in sorted(directory.iterdir()):
        out.append(entry)
        if entry.is_dir():
            out.extend(sorted(entry.iterdir()))
    return out
