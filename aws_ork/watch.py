"""Notice key changes made by Salt itself, so the S3 mirror (and the counters) follow them.

Keys accepted through an autosign stub, keys a minion submits, keys an operator changes with
``salt-key``: none of these pass through aws_ork. Each of them adds, renames or removes a file
in one of the master's key directories, which changes that directory's mtime. The loop asks
:meth:`KeyDirWatcher.poll` once per cycle: four ``stat`` calls, whatever the number of keys.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

KEY_DIRS = ("minions", "minions_pre", "minions_rejected", "minions_denied")

Snapshot = tuple[tuple[int, int] | None, ...]


class KeyDirWatcher:
    """Compares (inode, mtime) of the key directories with the last look."""

    def __init__(self, pki_dir: Path) -> None:
        self.dirs = tuple(Path(pki_dir) / name for name in KEY_DIRS)
        self._last = self._snapshot()

    def poll(self) -> bool:
        """True when a key directory changed since the last poll."""
        now = self._snapshot()
        if now == self._last:
            return False
        self._last = now
        log.debug("key directories changed on disk")
        return True

    def _snapshot(self) -> Snapshot:
        out: list[tuple[int, int] | None] = []
        for path in self.dirs:
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
                continue
            out.append((st.st_ino, st.st_mtime_ns))
        return tuple(out)
