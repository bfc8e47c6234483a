"""Make the S3 mirror equal the local pki tree: by named paths, by local rescan, or in full.

Three ways, cheapest first:

- :meth:`S3Mirror.sync_paths`: the paths a key change touched. One PUT per new or changed
  file, one batched DELETE for the removed ones; compared with the manifest (what S3 holds),
  so the work does not grow with the number of keys on the master.
- :meth:`S3Mirror.rescan`: walk the local tree and compare it with the manifest: local work
  only, S3 requests only for what differs (for changes made behind our back, e.g. autosign).
- :meth:`S3Mirror.reconcile`: list the bucket (paginated) and repair drift both ways
  toward the local tree, at start-up and every ReconcileMinutes.

An object's own metadata is never proof of its body: a bucket writer can overwrite an object
and copy its ``x-amz-meta-md5``. Reconciliation compares the local file with what S3 says of
the body (see :mod:`aws_ork.mirror.bucket`); an object whose metadata claims the local file
while S3 says otherwise (or cannot say) is uploaded again, logged as a WARNING and counted
(``repaired``, the metric ``aws_ork_mirror_repaired_total``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aws_ork import defaults
from aws_ork.base.errors import MirrorError
from aws_ork.base.files import tree_entries
from aws_ork.base.text import shorten
from aws_ork.mirror import manifest
from aws_ork.mirror.bucket import Remote, S3Tree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncStats:
    """What one mirror run did."""

    uploaded: int = 0
    deleted: int = 0
    unchanged: int = 0
    heads: int = 0
    repaired: int = 0  # of the uploaded: objects whose body was not what their metadata said

    def __str__(self) -> str:
        text = f"{self.uploaded} uploaded, {self.deleted} deleted, {self.unchanged} unchanged"
        text += f", {self.heads} looked up" if self.heads else ""
        return text + (f", {self.repaired} repaired" if self.repaired else "")


@dataclass(frozen=True)
class Digests:
    """A local file's MD5 (hex) and SHA-256 (base64, as S3 writes its checksums)."""

    md5: str
    sha256: str

    @classmethod
    def of(cls, body: bytes) -> Digests:
        return cls(
            hashlib.md5(body, usedforsecurity=False).hexdigest(),
            base64.b64encode(hashlib.sha256(body).digest()).decode("ascii"),
        )

    def held_by(self, entry: Remote) -> bool:
        """Does S3 vouch that the object holds this body? (Its metadata does not count.)"""
        return (entry.md5 is not None and entry.md5 == self.md5) or (
            entry.sha256 is not None and entry.sha256 == self.sha256
        )


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

    def __init__(
        self,
        tree: S3Tree,
        pki_dir: Path,
        manifest_path: Path | None = None,
        *,
        unmirrored: Iterable[str] = (),
        only: Iterable[str] | None = None,
        foreign: Iterable[str] = (),
    ) -> None:
        self.tree = tree
        self.pki_dir = pki_dir
        #: directories (relative to pki_dir) whose files the mirror leaves out, and whose
        #: objects (from an older version) it deletes: see worker.unmirrored_dirs
        self.unmirrored = tuple(f"{d.strip('/')}/" for d in unmirrored)
        #: when set, the only files mirrored (relative paths, stat'ed one by one: no walk)
        self.only = None if only is None else tuple(sorted(set(only)))
        #: key prefixes (relative to the tree's prefix) of objects another mirror owns: not
        #: listed, never deleted (the memories under the pki prefix)
        self.foreign = tuple(foreign)
        #: objects repaired since start (for the metrics)
        self.repaired = 0
        self.manifest_path = manifest_path
        self.manifest: dict[str, Remote] = (
            manifest.load(manifest_path, str(tree.target)) if manifest_path else {}
        )
        #: True once a reconciliation in this process made the manifest equal the bucket
        self.complete = False
        self._hashes: dict[str, tuple[tuple[int, int, int], Digests]] = {}

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
        to_put = [
            rel for rel, st in local.items() if not self._same(rel, self.manifest.get(rel), st)
        ]
        stale = [rel for rel in self.manifest if rel not in local]
        uploaded, vanished = self._put_many(to_put)
        deleted = self._delete(stale + vanished)
        return SyncStats(uploaded, deleted, len(local) - len(to_put))

    def reconcile(self) -> SyncStats:
        """List the bucket and repair drift both ways toward the local tree."""
        remote = {
            rel: etag for rel, etag in self.tree.list().items() if not rel.startswith(self.foreign)
        }
        local = dict(self._scan())
        known: dict[str, Remote] = {}
        to_put: list[str] = []
        tampered: list[str] = []
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
            if entry is not None and self._same(rel, entry, st):
                known[rel] = entry
                continue
            to_put.append(rel)
            if entry is not None and self._claims_local(rel, entry, st):
                tampered.append(rel)
        stale = [rel for rel in remote if rel not in local]
        self.manifest = known | {rel: self.manifest[rel] for rel in stale if rel in self.manifest}
        try:
            uploaded, vanished = self._put_many(to_put)
        finally:
            repaired = sum(1 for rel in tampered if rel in self.manifest)
            self.repaired += repaired
        deleted = self._delete(stale + vanished)
        self.complete = True
        self.save_manifest()
        return SyncStats(uploaded, deleted, len(known), heads, repaired)

    # --- the steps ----------------------------------------------------------------------

    def _same(self, rel: str, entry: Remote | None, st: os.stat_result) -> bool:
        """Does the mirror hold this file's content (as S3 vouches for it) and mode?"""
        if entry is None or entry.mode != stat.S_IMODE(st.st_mode):
            return False
        digests = self._digests(rel, st)
        return digests is not None and digests.held_by(entry)

    def _claims_local(self, rel: str, entry: Remote, st: os.stat_result) -> bool:
        """An object whose metadata claims this file's MD5 while S3 does not vouch for that
        body (it reports another, or none): overwritten behind our back with the metadata
        copied. Logged here (one WARNING, the key escaped); the caller uploads it again."""
        digests = self._digests(rel, st)
        if digests is None or entry.claimed != digests.md5 or digests.held_by(entry):
            return False
        if entry.md5 is not None:
            said = f"S3 reports MD5 {entry.md5} for its body"
        elif entry.sha256 is not None:
            said = f"S3 reports SHA-256 {entry.sha256} for its body"
        else:
            said = "S3 reports no MD5 ETag and no SHA-256 checksum for its body"
        log.warning(
            "S3 mirror: object %s claims (x-amz-meta-md5) to hold the local file, but "
            "%s: overwritten in the bucket; uploading the local file again",
            shorten(self.tree.key(rel), 160),
            said,
        )
        return True

    def _digests(self, rel: str, st: os.stat_result) -> Digests | None:
        """The file's digests, re-read only when its size, mtime or inode changed."""
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._hashes.get(rel)
        if cached is not None and cached[0] == signature:
            return cached[1]
        body = self._read(rel, st)
        if body is None:
            return None
        digests = Digests.of(body)
        self._hashes[rel] = (signature, digests)
        return digests

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

        rels = self.only if self.only is not None else tree_entries(self.pki_dir, onerror=error)
        for rel in rels:
            if self._left_out(rel):
                continue
            st = self._lstat(rel)
            if st is not None:
                yield rel, st

    def _left_out(self, rel: str) -> bool:
        """Not mirrored (a pending or denied key, an autosign stub, a file not in ``only``, a
        path another mirror owns): as if it did not exist."""
        return (
            rel.startswith(self.unmirrored)
            or rel.startswith(self.foreign)
            or (self.only is not None and rel not in self.only)
        )

    def _put_one(self, rel: str) -> Remote | None:
        """Upload one file as it is now; None when it vanished meanwhile."""
        st = self._lstat(rel)
        body = None if st is None else self._read(rel, st)
        if st is None or body is None:
            return None
        digests = Digests.of(body)
        self._hashes[rel] = ((st.st_size, st.st_mtime_ns, st.st_ino), digests)
        return self.tree.put(
            rel, body, stat.S_IMODE(st.st_mode), digests.md5, symlink=stat.S_ISLNK(st.st_mode)
        )

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
