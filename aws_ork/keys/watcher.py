"""Notice key changes made by Salt itself, so the S3 mirror (and the counters) follow them.

Keys accepted through an autosign stub, keys a minion submits, keys an operator changes with
``salt-key``: none of these pass through aws_ork. Each of them adds, renames or removes a file
in one of the master's key directories, which changes that directory's mtime. The loop asks
:meth:`KeyDirWatcher.poll` once per cycle: four ``stat`` calls, whatever the number of keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_ork.base.saltkeys import KeyLocation

log = logging.getLogger(__name__)


#: (inode, mtime) of each key directory; None where it is missing
DirStamps = tuple[tuple[int, int] | None, ...]


@dataclass(frozen=True)
class Change:
    """What one poll saw: did a key directory change, and which pre-authorised minions' stubs
    Salt has consumed (accepted on first contact) or expired since."""

    changed: bool
    consumed: list[str] = field(default_factory=list)


class KeyDirWatcher:
    """Compares (inode, mtime) of the key directories with the last look."""

    def __init__(self, location: KeyLocation, expected: Iterable[str] = ()) -> None:
        self.dirs = location.state_dirs()
        self.autosign = location.autosign_dir
        self._last = self._snapshot()
        self._stubbed: set[str] = set(expected)

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: watch where the (re-read) master config keeps keys; the minions whose
        stubs are still waiting are carried over."""
        location = KeyLocation.from_opts(opts)
        self.dirs = location.state_dirs()
        self.autosign = location.autosign_dir
        self._last = self._snapshot()

    @property
    def expected(self) -> frozenset[str]:
        """The minions whose stubs are still waiting (carried over by a reload)."""
        return frozenset(self._stubbed)

    def expect(self, minion_id: str) -> None:
        """A stub was written for this minion: report it when Salt has used it up."""
        self._stubbed.add(minion_id)

    def poll(self) -> Change:
        """Whether a key directory changed since the last poll (four ``stat`` calls, plus one
        per outstanding stub when something changed)."""
        now = self._snapshot()
        if now == self._last:
            return Change(False)
        self._last = now
        consumed = sorted(i for i in self._stubbed if not (self.autosign / i).exists())
        self._stubbed.difference_update(consumed)
        log.debug("key directories changed on disk; stubs used up: %s", consumed or "none")
        return Change(True, consumed)

    def _snapshot(self) -> DirStamps:
        out: list[tuple[int, int] | None] = []
        for path in self.dirs:
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
                continue
            out.append((st.st_ino, st.st_mtime_ns))
        return tuple(out)
