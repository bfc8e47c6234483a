"""What the mirror holds, as last confirmed by S3: ``{relative path: Remote(etag, md5, mode,
sha256)}``.

The listing of a reconciliation gives ETags but no metadata; the manifest adds the MD5 and
mode each object was written with, so a reconciliation needs a HEAD only for objects whose
ETag it does not know (first start, or changed out of band). It is saved in StateDir after
each reconciliation and at a clean stop, and is only a cache: losing it costs HEAD requests,
never correctness. Version 2 records only what S3 itself vouched for (an upload of ours, an
MD5 ETag, S3's SHA-256 checksum); a manifest of an older version (which took an object's own
metadata on trust) is dropped, so every object is looked up once more.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from aws_ork.base.files import write_atomic
from aws_ork.mirror.bucket import Remote

log = logging.getLogger(__name__)

FILE_NAME = "mirror-manifest.json"
VERSION = 2


def load(path: Path, target: str) -> dict[str, Remote]:
    """The saved manifest for ``target``; empty when missing, unreadable or for another URL."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("target") != target or data.get("version") != VERSION:
            return {}
        return {
            rel: Remote(
                str(etag),
                md5 if isinstance(md5, str) else None,
                mode if isinstance(mode, int) else None,
                sha256 if isinstance(sha256, str) else None,
            )
            for rel, (etag, md5, mode, sha256) in data["objects"].items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s: ignoring an unreadable mirror manifest: %s", path, exc)
        return {}


def save(path: Path, target: str, objects: dict[str, Remote]) -> None:
    """Write the manifest atomically; a failure is logged (it is a cache)."""
    data = {
        "version": VERSION,
        "target": target,
        "objects": {rel: [r.etag, r.md5, r.mode, r.sha256] for rel, r in sorted(objects.items())},
    }
    try:
        write_atomic(path, json.dumps(data, separators=(",", ":")).encode(), 0o600)
    except OSError as exc:
        log.warning("%s: cannot save the mirror manifest: %s", path, exc)
