"""Where the master's key store keeps each key: the one place that knows.

Salt's ``localfs_key`` driver keeps one file per minion id in a directory per state under
the key directory; the autosign stubs live beside them. The key directory is the master's
``cluster_pki_dir`` when it belongs to a Salt cluster (``cluster_id`` set, Salt 3007 and
later), else its ``pki_dir``: the rule of ``salt.key.Key``, ``salt.cache.localfs_key`` and
the master's ``AutoKey``. Every module that needs a key's path takes it from here, so a
clustered master's keys are read and written where Salt reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_ork.base.errors import KeyStoreError
from aws_ork.base.ids import is_minion_id

ACCEPTED = "minions"
PENDING = "minions_pre"
REJECTED = "minions_rejected"
DENIED = "minions_denied"
AUTOSIGN = "minions_autosign"

#: The four key states, in Salt's order.
KEY_STATES = (ACCEPTED, PENDING, REJECTED, DENIED)
#: Salt's default key cache driver, the one that keeps a file per key (``keys.cache_driver``).
FILE_DRIVER = "localfs_key"


def salt_major() -> int:
    """The installed Salt's release line: 3006, 3007, 3008."""
    import salt.version

    return int(salt.version.__saltstack_version__.major)


def salt_has_clusters() -> bool:
    """Whether the installed Salt has master clusters (3007 and later). Salt 3006 ignores
    ``cluster_id`` and ``cluster_pki_dir`` and keeps every key in ``pki_dir``."""
    return salt_major() >= 3007


class KeyAgeUnknown(KeyStoreError):
    """The master keeps keys with a driver that has no files: a key's age cannot be read."""


@dataclass(frozen=True)
class KeyLocation:
    """The master's key directory, and the path of each key in it."""

    key_dir: Path
    driver: str = FILE_DRIVER  # the master's keys.cache_driver

    @classmethod
    def from_opts(cls, opts: Mapping[str, Any]) -> KeyLocation:
        """From the master's options (``salt.config.master_config``)."""
        clustered = opts.get("cluster_id") and opts.get("cluster_pki_dir") and salt_has_clusters()
        return cls(
            Path(opts["cluster_pki_dir"] if clustered else opts["pki_dir"]),
            # before 3008 Salt has no key cache driver: the keys are always files
            str(opts.get("keys.cache_driver") or FILE_DRIVER)
            if salt_major() >= 3008
            else FILE_DRIVER,
        )

    @property
    def autosign_dir(self) -> Path:
        return self.key_dir / AUTOSIGN

    def state_dirs(self) -> tuple[Path, ...]:
        """The four key-state directories, in Salt's order."""
        return tuple(self.key_dir / state for state in KEY_STATES)

    def path(self, state: str, minion_id: str) -> Path:
        """The file of this minion's key in ``state`` (a safe minion id only: never a path)."""
        if not is_minion_id(minion_id):
            raise ValueError(f"{minion_id!r:.80} is not a safe minion id")
        return self.key_dir / state / minion_id

    def pending_mtime(self, minion_id: str) -> float | None:
        """When this minion's pending key file was last written (epoch); None if there is
        none. KeyStoreError when it cannot be read (permissions, I/O); KeyAgeUnknown when the
        master keeps keys in a driver without files (nothing tells a key's age there)."""
        if self.driver != FILE_DRIVER:
            raise KeyAgeUnknown(
                f"{minion_id}: the master keeps keys with the "
                f"{self.driver!r} driver, which gives no key's age"
            )
        try:
            return self.path(PENDING, minion_id).stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"{minion_id}: cannot read the pending key: {exc}") from exc
