"""``aws_ork --restore``: bring the pki mirror back into PkiDir for a replacement master.

Each object becomes a file written atomically (temp file + fsync + rename) with the mode
stored in its metadata, after its body was checked against the MD5 it was stored with;
objects marked as symlinks (Salt 3008's master.pem -> <id>.pem) become symlinks again.
Directories that are created get 0700 when they hold a private key (``*.pem``: a master or
minion pki_dir, which Salt keeps 0700) or are PkiDir itself, else 0755 (what Salt's
``verify_env`` creates). A non-empty PkiDir is refused unless ``force``; with ``force``,
files in the mirror overwrite local ones and local files not in the mirror are left alone.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aws_ork import defaults
from aws_ork.errors import AwsOrkError, MirrorError
from aws_ork.keys.location import AUTOSIGN
from aws_ork.mirror.bucket import S3Tree
from aws_ork.runtime.files import write_atomic

log = logging.getLogger(__name__)

#: Mode for a file whose object carries no mode (written by another tool): private.
FALLBACK_MODE = 0o600


class RestoreRefused(AwsOrkError):
    """PkiDir already holds files and ``--force`` was not given."""


@dataclass(frozen=True)
class RestoreResult:
    files: int
    bytes: int
    skipped: list[str]  # object keys that are no safe relative path
    left_in_place: int  # local files the mirror does not have (with force)
    stubs_dropped: int = 0  # autosign stubs not restored


def local_files(root: Path) -> list[str]:
    """Regular files under root (relative posix paths); symlinks are not followed."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return found


def safe_relpath(rel: str) -> bool:
    """An object key (minus the prefix) that stays inside PkiDir when joined to it."""
    if not rel or "\0" in rel or rel.startswith("/") or rel.endswith("/"):
        return False
    parts = PurePosixPath(rel).parts
    return all(part not in ("", ".", "..") for part in parts) and "/".join(parts) == rel


def restore(tree: S3Tree, pki_dir: Path, *, force: bool = False) -> RestoreResult:
    """Download every object under the prefix into ``pki_dir``."""
    existing = local_files(pki_dir) if pki_dir.exists() else []
    if existing and not force:
        raise RestoreRefused(f"{pki_dir} is not empty ({len(existing)} files); "
                             "use --restore --force to overwrite them with the mirror")
    listing = tree.list()
    wanted = sorted(rel for rel in listing if safe_relpath(rel))
    skipped = sorted(set(listing) - set(wanted))
    for rel in skipped:
        log.warning("restore: skipping object %r: not a safe relative path", rel)
    # An autosign stub is a standing pre-authorisation for an id; a restored copy would look
    # fresh (its mtime is the restore's) and could let an instance long gone be re-accepted.
    stubs = {rel for rel in wanted if PurePosixPath(rel).parent.name == AUTOSIGN}
    for rel in sorted(stubs):
        log.info("restore: not restoring autosign stub %s", rel)
    wanted = [rel for rel in wanted if rel not in stubs]
    if not wanted:
        raise MirrorError(f"{tree.target}: no objects to restore")
    _make_dirs(pki_dir, wanted)

    def fetch(rel: str) -> int:
        download = tree.get(rel)
        mode = download.mode if download.mode is not None else FALLBACK_MODE
        try:
            if download.symlink:
                _write_link(pki_dir, rel, download.body)
            else:
                write_atomic(pki_dir / rel, download.body, mode)
        except OSError as exc:
            raise MirrorError(f"{pki_dir / rel}: cannot write: {exc}") from exc
        return len(download.body)

    with ThreadPoolExecutor(defaults.MIRROR_UPLOAD_THREADS, thread_name_prefix="s3-get") as pool:
        sizes = list(pool.map(fetch, wanted))
    left = len(set(existing) - set(wanted))
    return RestoreResult(len(sizes), sum(sizes), skipped, left, len(stubs))


def _write_link(pki_dir: Path, rel: str, body: bytes) -> None:
    """Re-create a symlink (temp link + rename) if its target stays inside PkiDir."""
    target = body.decode("utf-8", errors="replace")
    joined = PurePosixPath(rel).parent / target
    if target.startswith("/") or not safe_relpath(os.path.normpath(joined.as_posix())):
        log.warning("restore: skipping symlink %s -> %r: target outside PkiDir", rel, target)
        return
    path = pki_dir / rel
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _make_dirs(pki_dir: Path, rels: list[str]) -> None:
    """Create the directories the files go to, with Salt's modes (existing ones are kept)."""
    private = {str(PurePosixPath(rel).parent) for rel in rels if rel.endswith(".pem")}
    try:
        pki_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MirrorError(f"{pki_dir.parent}: cannot create: {exc}") from exc
    dirs = {"."} | {str(parent) for rel in rels for parent in PurePosixPath(rel).parents}
    for rel in sorted(dirs, key=lambda d: (d != ".", d.count("/"), d)):
        path = pki_dir if rel == "." else pki_dir / rel
        mode = 0o700 if rel == "." or rel in private else 0o755
        try:
            path.mkdir(mode=mode)
            os.chmod(path, mode)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            if not path.is_dir():
                raise MirrorError(f"{path}: exists and is not a directory") from None
        except OSError as exc:
            raise MirrorError(f"{path}: cannot create: {exc}") from exc
