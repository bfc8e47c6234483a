"""Pre-authorisation: Salt's ``pki_dir/minions_autosign/<id>`` stubs.

A launch event usually arrives tens of seconds before the new instance's minion presents its
key. Instead of waiting for the key, aws_ork leaves a stub named after the minion id; the
master consumes it on the minion's first authentication and accepts the key there and then
(``salt.daemons.masterapi.AutoKey.check_autosign_dir``). Stubs older than the master's
``autosign_timeout`` (minutes) are removed by the master.

The stub is an empty file created with ``O_CREAT | O_EXCL``: its appearance (and its mtime,
the only thing Salt reads) is one system call, so it is atomic without a temporary file.
A temporary file in ``minions_autosign/`` would be worse: the master sweeps that directory
for expired stubs on every authentication (list, then ``getmtime`` each entry), and a temp
file renamed away between the two makes that sweep raise in the middle of a minion's auth.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from aws_ork.base.saltkeys import KeyLocation

log = logging.getLogger(__name__)

STUB_MODE = 0o600  # Salt reads only the name and the mtime


class AutosignStubs:
    """Write and remove autosign stubs for exact minion ids (validated by the caller)."""

    def __init__(self, location: KeyLocation, *, auto_accept: bool = False) -> None:
        self.directory = location.autosign_dir
        # With auto_accept the master accepts every key before it looks at stubs: a stub
        # would never be consumed, and is not needed.
        self.useful = not auto_accept

    def path(self, minion_id: str) -> Path:
        return self.directory / minion_id

    def write(self, minion_id: str) -> bool:
        """Create the stub, or renew its mtime (restarting the master's expiry clock).

        Returns True when a new stub was created. Raises OSError when it cannot be written.
        """
        path = self.path(minion_id)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, STUB_MODE)
        except FileExistsError:
            os.utime(path, follow_symlinks=False)
            return False
        os.close(fd)
        return True

    def remove(self, minion_id: str) -> bool:
        """Remove the stub; True if there was one."""
        try:
            self.path(minion_id).unlink()
        except FileNotFoundError:
            return False
        return True

    def exists(self, minion_id: str) -> bool:
        return os.path.lexists(self.path(minion_id))
