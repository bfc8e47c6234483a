"""``aws_ork --restore``: bring the pki mirror back into PkiDir for a replacement master.

Every object in the bucket is untrusted: whoever can write the bucket must not get a file
written outside PkiDir, nor a setuid or world-writable one inside it. So:

* An object key must be a plain relative path (no ``..``, ``.``, empty part, leading ``/``
  or NUL); a key that is also the directory of other keys is refused.
* Nothing is reached through a symlink: PkiDir is opened once, then every directory below it
  is opened with ``O_NOFOLLOW`` relative to its parent's descriptor (created there with
  ``mkdir`` relative to the parent when missing), and each file is created under a temp name
  with ``O_CREAT|O_EXCL|O_NOFOLLOW`` in that directory and renamed over the final name, both
  relative to the directory's descriptor. A symlink (or a file) where a directory should be,
  whether in the bucket or already on disk, gets the objects below it refused.
* A symlink object (Salt 3008's ``master.pem -> <id>.pem``) is re-created only when its
  target is a plain relative path (some leading ``..``, then names; nothing absolute, no
  ``..`` after a name, no ``.``) that stays inside PkiDir from the link's own directory and
  names a regular file written by this same restore. So a link never leads out of PkiDir,
  never to another link, never through one, and links are created after every file.
* Modes are clamped: a private key (``*.pem``) gets 0400 or 0600 (the stored owner write bit
  kept, owner read always), any other file at most 0644; never setuid, setgid, sticky, group
  or world writable. A clamped mode is logged, not refused.

Objects under ``.aws_ork/`` (the StateDir memories, :mod:`aws_ork.mirror.memories`) are not
written into PkiDir. Each body is checked against the MD5 it was stored with. Directories
that are created get 0700 when they hold a private key (``*.pem``: a master or minion
pki_dir, which Salt keeps 0700) or are PkiDir itself, else 0755 (what Salt's ``verify_env``
creates). A non-empty PkiDir is refused unless ``force``; with ``force``, files in the
mirror overwrite local ones and local files not in the mirror are left alone. Whatever is
refused is logged (one WARNING line each) and listed in the result.

A restore is two steps: :func:`plan_restore`, a pure function of the listing (what to write,
which directories with which mode, what to skip and why: a :class:`RestorePlan`), then the
writes (:class:`_Writes`), which alone touch S3 and the disk.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from aws_ork import defaults
from aws_ork.base.errors import AwsOrkError, MirrorError
from aws_ork.base.files import DIR_FLAGS, tree_entries, write_atomic_at
from aws_ork.base.saltkeys import AUTOSIGN
from aws_ork.base.text import shorten
from aws_ork.defaults import RESTORE_SHOWN_CHARS as SHOWN
from aws_ork.mirror.bucket import Download
from aws_ork.mirror.memories import OWN_ROOT
from aws_ork.mirror.worker import UNMIRRORED

log = logging.getLogger(__name__)

#: Mode for a file whose object carries no mode (written by another tool): private.
FALLBACK_MODE = 0o600
#: The most a file that is not a private key may get.
MAX_MODE = 0o644


class RestoreRefused(AwsOrkError):
    """PkiDir already holds files and ``--force`` was not given."""


class RestoreSource(Protocol):
    """What restore reads: :class:`aws_ork.mirror.bucket.S3Tree`, or a fake in tests."""

    @property
    def target(self) -> object: ...

    def list(self) -> dict[str, str]: ...

    def get(self, relpath: str) -> Download: ...


@dataclass(frozen=True)
class Refusal:
    """An object not restored because it is unsafe: its key (as listed) and why."""

    rel: str
    reason: str

    def __str__(self) -> str:
        return f"{shown(self.rel)}: {self.reason}"


@dataclass(frozen=True)
class RestoreResult:
    files: int  # files and symlinks written
    bytes: int
    refused: list[Refusal]  # objects not restored: unsafe key, link target or place on disk
    left_in_place: int  # local files not overwritten (with force)
    stubs_dropped: int = 0  # autosign stubs not restored
    keys_dropped: int = 0  # pending and denied keys (of an older version's mirror) not restored
    clamped: int = 0  # files given a safer mode than the one stored


class _Unsafe(Exception):
    """A path that cannot be reached without following a symlink (the reason is the text)."""


@dataclass(frozen=True)
class _Done:
    """What became of one object in the first pass."""

    rel: str
    size: int = 0
    link: bytes | None = None  # a symlink object's body, created in the second pass
    refusal: str | None = None
    clamped: bool = False


def shown(value: str | bytes) -> str:
    """An untrusted object key or link target for a log line: escaped and shortened."""
    return shorten(value, SHOWN)


def local_files(root: Path) -> list[str]:
    """Files and symlinks under root (relative posix paths); symlinks are not followed."""
    return [
        rel for rel in tree_entries(root) if (root / rel).is_symlink() or (root / rel).is_file()
    ]


def safe_relpath(rel: str) -> bool:
    """An object key (minus the prefix) that stays inside PkiDir when joined to it."""
    if not rel or "\0" in rel or rel.startswith("/") or rel.endswith("/"):
        return False
    parts = PurePosixPath(rel).parts
    return all(part not in ("", ".", "..") for part in parts) and "/".join(parts) == rel


def safe_mode(rel: str, stored: int | None) -> int:
    """The mode a restored file gets: a private key 0400 or 0600, anything else at most 0644
    (no setuid, setgid, sticky, group or world write, whatever the object says)."""
    mode = FALLBACK_MODE if stored is None else stored
    if rel.endswith(".pem"):
        return 0o400 | (mode & 0o200)
    return mode & MAX_MODE


def link_destination(rel: str, target: str) -> str | None:
    """The relative path (from PkiDir) a symlink at ``rel`` names with ``target``, when the
    target is a plain relative path that stays inside PkiDir: any leading ``..`` (no more than
    the link's depth), then one or more names. None for anything else (absolute, ``.``,
    ``..`` after a name, empty parts, NUL), which restore refuses."""
    if not target or "\0" in target or target.startswith("/"):
        return None
    parts = target.split("/")
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    names = parts[ups:]
    if not names or any(part in ("", ".", "..") for part in names):
        return None
    base = rel.split("/")[:-1]
    if ups > len(base):
        return None
    return "/".join(base[: len(base) - ups] + names)


def _link_refusal(rel: str, body: bytes, files: set[str]) -> str | None:
    """Why a symlink object must not be created; None when it is safe."""
    try:
        target = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"symlink target {shown(body)} is not UTF-8"
    if target.startswith("/"):
        return f"symlink target {shown(target)} is absolute"
    destination = link_destination(rel, target)
    if destination is None:
        return f"symlink target {shown(target)} leaves PkiDir or is not a plain relative path"
    if destination not in files:
        return f"symlink target {shown(target)} is not a file restored with it"
    return None


class Skip(enum.Enum):
    """Why an object of the listing is not written; the value is what the log line says."""

    UNSAFE_PATH = "not a safe relative path"
    STUB = "autosign stub"
    UNMIRRORED_KEY = "pending or denied key"
    DIRECTORY = "also the directory of other objects"

    @property
    def refused(self) -> bool:
        """Unsafe (a WARNING, a :class:`Refusal` in the result, exit 1), not left out on
        purpose (an INFO line and a count)."""
        return self in (Skip.UNSAFE_PATH, Skip.DIRECTORY)


@dataclass(frozen=True)
class Skipped:
    """An object of the listing that the plan does not write, and why."""

    rel: str
    why: Skip


@dataclass(frozen=True)
class RestorePlan:
    """What a restore writes, decided from the listing alone: no S3, no disk, no clock.

    ``writes``: the objects to fetch and write, each at its key below PkiDir, sorted (a
    file's mode is :func:`safe_mode` of the one it was stored with, known once fetched; a
    symlink object is checked by :func:`_link_refusal` against the files written).
    ``directories``: every directory they go to, parents first, with the mode a missing one
    is created with (0700 when it holds a ``*.pem``, else 0755). ``skipped``: the objects not
    written and why, in the order they are logged. What is on disk (a symlink where a
    directory should be) is found by the writes, which walk PkiDir by descriptor: a look
    beforehand would be a check separated from its use.
    """

    writes: tuple[str, ...]
    directories: tuple[tuple[str, int], ...]
    skipped: tuple[Skipped, ...]

    @property
    def refused(self) -> list[Refusal]:
        return [Refusal(s.rel, s.why.value) for s in self.skipped if s.why.refused]

    @property
    def stubs_dropped(self) -> int:
        return sum(s.why is Skip.STUB for s in self.skipped)

    @property
    def keys_dropped(self) -> int:
        return sum(s.why is Skip.UNMIRRORED_KEY for s in self.skipped)


def plan_restore(listing: Iterable[str]) -> RestorePlan:
    """The plan for the object keys of a listing (minus the prefix); a pure function.

    aws_ork's own objects (the StateDir memories) are not files of PkiDir: restored into
    StateDir by :mod:`aws_ork.mirror.memories`, never here, and not in the plan at all."""
    rels = sorted(rel for rel in listing if not rel.startswith(OWN_ROOT))
    skipped = [Skipped(rel, Skip.UNSAFE_PATH) for rel in rels if not safe_relpath(rel)]
    safe = [rel for rel in rels if safe_relpath(rel)]
    left_out = [Skipped(rel, why) for rel in safe if (why := _left_out(rel)) is not None]
    skipped += left_out
    wanted = [rel for rel in safe if _left_out(rel) is None]
    # A key that is also a directory of other keys: it would be a file (or a link) that
    # the others are written under.
    dirs = _ancestors(wanted)
    skipped += [Skipped(rel, Skip.DIRECTORY) for rel in wanted if rel in dirs]
    writes = tuple(rel for rel in wanted if rel not in dirs)
    return RestorePlan(writes, _directory_modes(writes), tuple(skipped))


def _left_out(rel: str) -> Skip | None:
    """What the mirror leaves out (UNMIRRORED) is not restored from a bucket written before
    2.1 that still holds it either: pending and denied keys were written by whoever reached
    the old master's port (minions present their keys again), and an autosign stub is a
    standing pre-authorisation of the old master; a restored copy of any of them would look
    fresh (its mtime is the restore's): an instance long gone could be re-accepted."""
    state = PurePosixPath(rel).parent.name
    if state not in UNMIRRORED:
        return None
    return Skip.STUB if state == AUTOSIGN else Skip.UNMIRRORED_KEY


def _ancestors(rels: Iterable[str]) -> set[str]:
    """Every directory (relative to PkiDir) above the keys."""
    return {"/".join(rel.split("/")[:n]) for rel in rels for n in range(1, rel.count("/") + 1)}


def _directory_modes(rels: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """The directories the files go to with Salt's modes, parents first."""
    private = {_parent(rel) for rel in rels if rel.endswith(".pem")}
    dirs = sorted(_ancestors(rels), key=lambda d: (d.count("/"), d))
    return tuple((d, 0o700 if d in private else 0o755) for d in dirs)


def restore(tree: RestoreSource, pki_dir: Path, *, force: bool = False) -> RestoreResult:
    """Download every object under the prefix into ``pki_dir``: the plan, then the writes."""
    existing = local_files(pki_dir) if pki_dir.exists() else []
    if existing and not force:
        raise RestoreRefused(
            f"{pki_dir} is not empty ({len(existing)} files); "
            "use --restore --force to overwrite them with the mirror"
        )
    plan = plan_restore(tree.list())
    refused: list[Refusal] = []
    for item in plan.skipped:
        if item.why.refused:
            _refuse(refused, item.rel, item.why.value)
        else:
            log.info("restore: not restoring %s %s", item.why.value, shown(item.rel))
    if not plan.writes:
        raise MirrorError(f"{tree.target}: no objects to restore")
    done = _Writes(tree, pki_dir, refused).run(plan)
    refused_rels = {r.rel for r in refused}
    written = [d for d in done if d.rel not in refused_rels]
    left = len(set(existing) - {d.rel for d in written})
    return RestoreResult(
        len(written),
        sum(d.size for d in written),
        refused,
        left,
        plan.stubs_dropped,
        plan.keys_dropped,
        sum(d.clamped for d in written),
    )


def _refuse(refused: list[Refusal], rel: str, reason: str) -> None:
    refused.append(Refusal(rel, reason))
    log.warning("restore: refused object %s: %s", shown(rel), reason)


class _Writes:
    """The writes of a plan, below one descriptor of PkiDir; refusals go to ``refused``."""

    def __init__(self, tree: RestoreSource, pki_dir: Path, refused: list[Refusal]) -> None:
        self.tree = tree
        self.pki_dir = pki_dir
        self.refused = refused
        self.root_fd = -1

    def run(self, plan: RestorePlan) -> list[_Done]:
        """Directories, then files (fetched in parallel), then links: what was done."""
        self.root_fd = _open_root(self.pki_dir)
        try:
            blocked = _make_dirs(self.root_fd, self.pki_dir, plan.directories)
            for rel in [rel for rel in plan.writes if _parent(rel) in blocked]:
                _refuse(self.refused, rel, blocked[_parent(rel)])
            wanted = [rel for rel in plan.writes if _parent(rel) not in blocked]
            with ThreadPoolExecutor(
                defaults.MIRROR_UPLOAD_THREADS, thread_name_prefix="s3-get"
            ) as pool:
                done = list(pool.map(self._fetch, wanted))
            for item in done:
                if item.refusal is not None:
                    _refuse(self.refused, item.rel, item.refusal)
            files = {d.rel for d in done if d.link is None and d.refusal is None}
            # Links last, once every file they may name is written: a target must be one.
            for item in done:
                if item.link is not None:
                    reason = self._link(item.rel, item.link, files)
                    if reason is not None:
                        _refuse(self.refused, item.rel, reason)
        finally:
            os.close(self.root_fd)
        return done

    def _fetch(self, rel: str) -> _Done:
        """Download one object; write it now if it is a file."""
        download = self.tree.get(rel)
        if download.symlink:
            return _Done(rel, link=download.body)
        mode = safe_mode(rel, download.mode)
        clamped = download.mode is not None and mode != download.mode
        if clamped:
            log.warning(
                "restore: %s: stored mode %04o clamped to %04o", shown(rel), download.mode, mode
            )
        try:
            _in_dir(
                self.root_fd, rel, lambda fd, name: write_atomic_at(fd, name, download.body, mode)
            )
        except _Unsafe as exc:
            return _Done(rel, refusal=str(exc))
        except OSError as exc:
            raise MirrorError(f"{self.pki_dir / rel}: cannot write: {exc}") from exc
        return _Done(rel, len(download.body), clamped=clamped)

    def _link(self, rel: str, body: bytes, files: set[str]) -> str | None:
        """Create one symlink object; why it was not, or None."""
        reason = _link_refusal(rel, body, files)
        if reason is not None:
            return reason
        link = body.decode("utf-8")
        try:
            _in_dir(self.root_fd, rel, lambda fd, name: _write_link(fd, name, link))
        except _Unsafe as exc:
            return str(exc)
        except OSError as exc:
            raise MirrorError(f"{self.pki_dir / rel}: cannot write: {exc}") from exc
        return None


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


def _open_root(pki_dir: Path) -> int:
    """A descriptor of PkiDir (created 0700 if missing). PkiDir itself comes from the config,
    so a symlink there is the operator's and is followed; nothing below it is."""
    try:
        pki_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MirrorError(f"{pki_dir.parent}: cannot create: {exc}") from exc
    try:
        pki_dir.mkdir(mode=0o700)
        os.chmod(pki_dir, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise MirrorError(f"{pki_dir}: cannot create: {exc}") from exc
    try:
        return os.open(pki_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise MirrorError(f"{pki_dir}: exists and is not a directory") from None
    except OSError as exc:
        raise MirrorError(f"{pki_dir}: cannot open: {exc}") from exc


def _open_dir(root_fd: int, parts: Sequence[str], modes: Mapping[str, int] | None = None) -> int:
    """A new descriptor of the directory ``parts`` below ``root_fd``, each part opened with
    O_NOFOLLOW relative to the one before: a symlink or a non-directory in the way raises
    :class:`_Unsafe`. With ``modes`` ({relative dir: mode}), a missing directory is created
    (relative to its parent's descriptor) with its mode."""
    fd = os.dup(root_fd)
    try:
        for n, name in enumerate(parts, 1):
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if modes is None:
                    raise
                mode = modes["/".join(parts[:n])]
                os.mkdir(name, mode, dir_fd=fd)  # never follows a symlink at name
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.fchmod(child, mode)  # mkdir's mode is filtered by the umask
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise _Unsafe(f"{shown('/'.join(parts[:n]))} in PkiDir is {what}") from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _in_dir(root_fd: int, rel: str, write: Callable[[int, str], None]) -> None:
    """Call ``write(dir_fd, name)`` for ``rel`` with its directory opened without following
    links; the directory is fsynced after."""
    *parts, name = rel.split("/")
    fd = _open_dir(root_fd, parts)
    try:
        try:
            write(fd, name)
        except IsADirectoryError:
            raise _Unsafe(f"{shown(rel)} in PkiDir is a directory") from None
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(6)}.tmp"


def _replace_with(dir_fd: int, name: str, make: Callable[[str], None]) -> None:
    """``make(tmp)`` creates a temp entry in the directory, which is then renamed over
    ``name`` (a link there is replaced, not followed); the temp entry goes on any error."""
    tmp = _temp_name(name)
    try:
        make(tmp)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def _write_link(dir_fd: int, name: str, target: str) -> None:
    """Create the symlink ``name -> target`` in the directory: temp link + rename."""
    _replace_with(dir_fd, name, lambda tmp: os.symlink(target, tmp, dir_fd=dir_fd))


def _make_dirs(
    root_fd: int, pki_dir: Path, directories: Sequence[tuple[str, int]]
) -> dict[str, str]:
    """Create the plan's directories (parents first) with their modes (existing ones are
    kept), never through a symlink. Returns {directory: reason} for those that cannot be used."""
    modes = dict(directories)
    blocked: dict[str, str] = {}
    for rel, _mode in directories:
        parent = _parent(rel)
        if parent in blocked:
            blocked[rel] = blocked[parent]
            continue
        try:
            os.close(_open_dir(root_fd, rel.split("/"), modes))
        except _Unsafe as exc:
            blocked[rel] = str(exc)
        except OSError as exc:
            raise MirrorError(f"{pki_dir / rel}: cannot create: {exc}") from exc
    return blocked
