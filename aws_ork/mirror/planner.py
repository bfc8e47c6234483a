"""Make the S3 mirror equal the local pki tree: by named paths, by local rescan, or in full.

Three ways, cheapest first:

- :meth:`S3Mirror.sync_paths`: the paths a key change touched. One PUT per new or changed
  file, one batched DELETE for the removed ones; compared with the manifest (what S3 holds),
  so the work does not grow with the number of keys on the master.
- :meth:`S3Mirror.rescan`: walk the local tree and compare it with the manifest: local work
  only, S3 requests only for what differs (for changes made behind our back, e.g. autosign).
- :meth:`S3Mirror.reconcile`: list the bucket (paginated) and repair drift both ways
  toward the local tree, at start-up and every ReconcileMinutes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aws_ork import defaults
from aws_ork.errors import MirrorError
from aws_ork.mirror import manifest
from aws_ork.mirror.bucket import Remote, S3Tree, md5_from_etag
from aws_ork.runtime.files import tree_entries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncStats:
    """What one mirror run did."""

    uploaded: int = 0
    deleted: int = 0
    unchanged: int = 0
    heads: int = 0

    def __str__(self) -> str:
        text = f"{self.uploaded} uploaded, {self.deleted} deleted, {self.unchanged} unchanged"
        return text + (f", {self.heads} looked up" if self.heads else "")


def link_target(root: Path, rel: str) -> str | None:
    """A symlink's target relative to its directory, if it resolves to a regular file
    inside root; None otherwise (such links are not mirrored)."""
    link = root / rel
    real_root = os.path.realpath(root)
    real = os.path.realpath(link)
    if os.path.commonpath([real, real_root]) != real_root or not os.path.isfile(real):
        return None
    return os.path.relpath(real, os.path.realpath(link.parent))


class S3Mirror:
    """The pki tree at ``pki_dir`` and its mirror ``tree``; ``manifest_path`` in StateDir."""

    def __init__(self, tree: S3Tree, pki_dir: Path, manifest_path: Path | None = None, *,
                 unmirrored: Iterable[str] = ()) -> None:
        self.tree = tree
        self.pki_dir = pki_dir
        #: directories (relative to pki_dir) whose files the mirror leaves out, and whose
        #: objects (from an older version) it deletes: see worker.unmirrored_dirs
        self.unmirrored = tuple(f"{d.strip('/')}/" for d in unmirrored)
        self.manifest_path = manifest_path
        self.manifest: dict[str, Remote] = (
            manifest.load(manifest_path, str(tree.target)) if manifest_path else {})
        #: True once a reconciliation in this process made the manifest equal the bucket
        self.complete = False
        self._hashes: dict[str, tuple[tuple[int, int, int], str]] = {}

    def save_manifest(self) -> None:
        if self.manifest_path is not None:
            manifest.save(self.manifest_path, str(self.tree.target), self.manifest)

    # --- the three ways ---------------------------------------------------------------

    def sync_paths(self, paths: Iterable[str]) -> SyncStats:
        """Mirror exactly these paths (relative to pki_dir): PUT the files that exist and
        differ from the manifest, DELETE the objects of those that are gone. Before the
        first reconciliation the manifest may be stale: then every existing file is put and
        every missing one deleted (a DELETE of an absent key is harmless)."""
        to_put: list[str] = []
        to_delete: list[str] = []
        unchanged = 0
        for rel in sorted(set(paths)):
            st = None if self._left_out(rel) else self._lstat(rel)
            if st is None:
                if rel in self.manifest or not self.complete:
                    to_delete.append(rel)
            elif self.complete and self._same(rel, self.manifest.get(rel), st):
                unchanged += 1
            else:
                to_put.append(rel)
        uploaded, vanished = self._put_many(to_put)
        deleted = self._delete(to_delete + vanished)
        return SyncStats(uploaded, deleted, unchanged)

    def rescan(self) -> SyncStats:
        """Compare the whole local tree with the manifest; S3 requests only for differences."""
        if not self.complete:
            return self.reconcile()
        local = dict(self._scan())
        to_put = [rel for rel, st in local.items()
                  if not self._same(rel, self.manifest.get(rel), st)]
        stale = [rel for rel in self.manifest if rel not in local]
        uploaded, vanished = self._put_many(to_put)
        deleted = self._delete(stale + vanished)
        return SyncStats(uploaded, deleted, len(local) - len(to_put))

    def reconcile(self) -> SyncStats:
        """List the bucket and repair drift both ways toward the local tree."""
        remote = self.tree.list()
        local = dict(self._scan())
        known: dict[str, Remote] = {}
        to_put: list[str] = []
        heads = 0
        for rel, st in local.items():
            etag = remote.get(rel)
            if etag is None:
                to_put.append(rel)
                continue
            entry = self.manifest.get(rel)
            if entry is None or entry.etag != etag:
                entry = self.tree.head(rel)
                heads += 1
                md5 = None if entry is None or entry.md5 is not None else \
                    md5_from_etag(entry.etag, self.tree.options.sse)
                if entry is not None and md5 is not None:
                    entry = Remote(entry.etag, md5, entry.mode)
            if entry is not None and self._same(rel, entry, st):
                known[rel] = entry
            else:
                to_put.append(rel)
        stale = [rel for rel in remote if rel not in local]
        self.manifest = known | {rel: self.manifest[rel] for rel in stale
                                 if rel in self.manifest}
        uploaded, vanished = self._put_many(to_put)
        deleted = self._delete(stale + vanished)
        self.complete = True
        self.save_manifest()
        return SyncStats(uploaded, deleted, len(known), heads)

    # --- the steps ----------------------------------------------------------------------

    def _same(self, rel: str, entry: Remote | None, st: os.stat_result) -> bool:
        """Does the mirror hold this file's content and mode?"""
        if entry is None or entry.md5 is None or entry.mode != stat.S_IMODE(st.st_mode):
            return False
        md5 = self._md5(rel, st)
        return md5 is not None and md5 == entry.md5

    def _md5(self, rel: str, st: os.stat_result) -> str | None:
        """The file's MD5, re-read only when its size, mtime or inode changed."""
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._hashes.get(rel)
        if cached is not None and cached[0] == signature:
            return cached[1]
        body = self._read(rel, st)
        if body is None:
            return None
        digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
        self._hashes[rel] = (signature, digest)
        return digest

    def _read(self, rel: str, st: os.stat_result) -> bytes | None:
        """What the object holds: the file's bytes, or a symlink's target (relative)."""
        path = self.pki_dir / rel
        try:
            if stat.S_ISLNK(st.st_mode):
                target = link_target(self.pki_dir, rel)
                return None if target is None else target.encode()
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MirrorError(f"{path}: {exc}") from exc

    def _lstat(self, rel: str) -> os.stat_result | None:
        """The stat of a regular file, or of a symlink to a file inside the tree (Salt 3008
        links master.pem to <id>.pem); None for anything else."""
        try:
            st = os.lstat(self.pki_dir / rel)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MirrorError(f"{self.pki_dir / rel}: {exc}") from exc
        if stat.S_ISREG(st.st_mode):
            return st
        if stat.S_ISLNK(st.st_mode) and link_target(self.pki_dir, rel) is not None:
            return st
        return None

    def _scan(self) -> Iterator[tuple[str, os.stat_result]]:
        """Regular files (and in-tree links to them) under pki_dir as (posix relative path,
        stat), less those not mirrored."""
        def error(exc: OSError) -> None:
            raise MirrorError(f"{self.pki_dir}: {exc}") from exc

        for rel in tree_entries(self.pki_dir, onerror=error):
            if self._left_out(rel):
                continue
            st = self._lstat(rel)
            if st is not None:
                yield rel, st

    def _left_out(self, rel: str) -> bool:
        """Not mirrored (a pending or denied key, an autosign stub): as if it did not exist."""
        return rel.startswith(self.unmirrored)

    def _put_one(self, rel: str) -> Remote | None:
        """Upload one file as it is now; None when it vanished meanwhile."""
        st = self._lstat(rel)
        body = None if st is None else self._read(rel, st)
        if st is None or body is None:
            return None
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        self._hashes[rel] = ((st.st_size, st.st_mtime_ns, st.st_ino), md5)
        return self.tree.put(rel, body, stat.S_IMODE(st.st_mode), md5,
                             symlink=stat.S_ISLNK(st.st_mode))

    def _put_many(self, rels: list[str]) -> tuple[int, list[str]]:
        """Upload files (in parallel when there are several); the manifest records each
        confirmed upload even when another fails. Returns (uploaded, vanished paths)."""
        if not rels:
            return 0, []
        workers = min(defaults.MIRROR_UPLOAD_THREADS, len(rels))
        results: list[tuple[str, Remote | None | MirrorError]] = []

        def put(rel: str) -> tuple[str, Remote | None | MirrorError]:
            try:
                return rel, self._put_one(rel)
            except MirrorError as exc:
                return rel, exc

        if workers == 1:
            results = [put(rel) for rel in rels]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="s3-put") as pool:
                results = list(pool.map(put, rels))
        uploaded, vanished, errors = 0, [], []
        for rel, result in results:
            if isinstance(result, MirrorError):
                errors.append(result)
            elif result is None:
                vanished.append(rel)
            else:
                self.manifest[rel] = result
                uploaded += 1
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise MirrorError(f"{errors[0]}{more}") from errors[0]
        return uploaded, vanished

    def _delete(self, rels: list[str]) -> int:
        if not rels:
            return 0
        count = self.tree.delete(rels)
        for rel in rels:
            self.manifest.pop(rel, None)
            self._hashes.pop(rel, None)
        return count
