"""Mirror the Salt pki tree to S3, so a replacement master can be restored with every key.

Only this module talks to S3. The mirror makes the bucket prefix equal the local tree:
new or changed files are uploaded (changed means the MD5 differs from the object's ETag),
objects whose file is gone are deleted, every object gets ``bucket-owner-full-control``.

:class:`MirrorWorker` runs the mirror in a thread of its own, so key handling never waits
for S3: the loop only marks the mirror dirty; a failed mirror is retried with backoff.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_ork import defaults
from aws_ork.aws import AWS_ERRORS, error_code
from aws_ork.config import BucketUrl
from aws_ork.errors import MirrorError

log = logging.getLogger(__name__)

ACL = "bucket-owner-full-control"
DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes


@dataclass(frozen=True)
class SyncStats:
    """What one mirror run did."""

    uploaded: int = 0
    deleted: int = 0
    unchanged: int = 0


class S3Mirror:
    """Make ``s3://bucket/prefix/`` equal ``pki_dir``."""

    def __init__(self, client: Any, target: BucketUrl, pki_dir: Path) -> None:
        self.client = client
        self.target = target
        self.pki_dir = pki_dir

    def check(self) -> None:
        """Reach the bucket (for ``--check``)."""
        try:
            self.client.head_bucket(Bucket=self.target.bucket)
        except AWS_ERRORS as exc:
            raise MirrorError(f"{self.target}: {error_code(exc)}") from exc

    def sync(self) -> SyncStats:
        """One full mirror run; raises MirrorError when any part of it failed."""
        try:
            remote = self._remote_etags()
            uploaded = unchanged = 0
            for relpath, path in _local_files(self.pki_dir):
                body = path.read_bytes()
                key = self.target.prefix + relpath
                if remote.pop(key, None) == hashlib.md5(body, usedforsecurity=False).hexdigest():
                    unchanged += 1
                    continue
                self.client.put_object(Bucket=self.target.bucket, Key=key, Body=body, ACL=ACL)
                uploaded += 1
            self._delete(sorted(remote))
        except AWS_ERRORS as exc:
            raise MirrorError(f"{self.target}: {error_code(exc)}: {exc}") from exc
        except OSError as exc:
            raise MirrorError(f"{self.pki_dir}: {exc}") from exc
        return SyncStats(uploaded, len(remote), unchanged)

    def _remote_etags(self) -> dict[str, str]:
        paginator = self.client.get_paginator("list_objects_v2")
        etags: dict[str, str] = {}
        for page in paginator.paginate(Bucket=self.target.bucket, Prefix=self.target.prefix):
            for obj in page.get("Contents", []):
                etags[obj["Key"]] = obj["ETag"].strip('"')
        return etags

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start:start + DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=self.target.bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise MirrorError(f"{self.target}: delete of {first.get('Key')} failed: "
                                  f"{first.get('Code')}")


def _local_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Regular files under root as (posix relative path, path); symlinks are not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root).as_posix(), path


class MirrorWorker:
    """Runs :meth:`S3Mirror.sync` in a background thread whenever the tree was changed.

    ``request()`` is cheap and never blocks; a burst of requests leads to one run. A failed
    run is retried after a delay that doubles up to RECONNECT_CAP_SECONDS.
    """

    def __init__(self, mirror: S3Mirror) -> None:
        self.mirror = mirror
        self._cond = threading.Condition()
        self._dirty = False
        self._running = False
        self._stopping = False
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="s3-mirror", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """Mark the tree changed: a mirror run follows soon."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    @property
    def pending(self) -> bool:
        """True while a change has not yet reached S3."""
        with self._cond:
            return self._dirty or self._running

    def flush(self, timeout: float) -> bool:
        """Wait until every requested change is mirrored; False if that did not happen in time."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._dirty or self._running), timeout)

    def stop(self, timeout: float) -> bool:
        """Try to mirror what is pending, then stop the thread. True if nothing is left behind."""
        done = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=1)
        return done

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._dirty or self._stopping)
                if self._stopping:
                    return
                self._dirty = False
                self._running = True
            ok = self._sync_once()
            with self._cond:
                self._running = False
                if not ok:
                    self._dirty = True
                self._cond.notify_all()
                if not ok:
                    delay = min(defaults.RECONNECT_CAP_SECONDS,
                                defaults.RECONNECT_BASE_SECONDS * 2 ** (self._failures - 1))
                    self._cond.wait_for(lambda: self._stopping, delay)

    def _sync_once(self) -> bool:
        try:
            stats = self.mirror.sync()
        except MirrorError as exc:
            self._failures += 1
            log.error("S3 mirror failed (attempt %d), will retry: %s", self._failures, exc)
            return False
        except Exception:  # never let the mirror thread die silently
            self._failures += 1
            log.exception("S3 mirror failed unexpectedly (attempt %d), will retry",
                          self._failures)
            return False
        if self._failures:
            log.info("S3 mirror recovered after %d failed attempts", self._failures)
        self._failures = 0
        if stats.uploaded or stats.deleted:
            log.info("S3 mirror: %d uploaded, %d deleted, %d unchanged", stats.uploaded,
                     stats.deleted, stats.unchanged)
        return True
