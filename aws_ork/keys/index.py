"""Which minion id holds an accepted public key: one key must not be two minions.

Key binding by key stores the key an instance published as accepted. Were that key already
accepted under another id (a fleet instance re-publishing a neighbour's key, an image that
ships one key pair to every instance), the same private key would then be two minions, and
its holder could answer as either. So before a pre-accept the key stage asks this index.

Salt has no lookup by key: the index lists the accepted keys once (at the first question)
and is kept up to date by the key stage's own accepts and deletes. A key accepted by someone
else (an operator's ``salt-key -a``, another master of a cluster) is found when the index is
read again: on a miss, at most once per :data:`~aws_ork.defaults.ACCEPTED_INDEX_SECONDS`. A
hit is always confirmed against the key store (the key may have been deleted since).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aws_ork import defaults
from aws_ork.base import pubkey

#: the accepted ids and their public keys, read from the key store
Listing = Callable[[], Iterable[tuple[str, str]]]
#: the public key accepted under an id now (None: none)
Accepted = Callable[[str], "str | None"]


class AcceptedKeys:
    """key -> minion id of the accepted keys (see the module docstring)."""

    def __init__(
        self,
        listing: Listing,
        accepted: Accepted,
        *,
        max_age: float = defaults.ACCEPTED_INDEX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listing = listing
        self._accepted = accepted
        self.max_age = max_age
        self._clock = clock
        self._owners: dict[str, str] = {}  # pubkey.key_id -> minion id
        self._keys: dict[str, str] = {}  # minion id -> pubkey.key_id
        self._read_at: float | None = None

    def owner(self, pem: str, *, other_than: str) -> str | None:
        """The id other than ``other_than`` whose accepted key is ``pem``, or None."""
        key = pubkey.key_id(pem)
        if self._read_at is None:
            self._read()
        found = self._confirmed(key, pem, other_than)
        if found is None and self._clock() - (self._read_at or 0.0) > self.max_age:
            self._read()
            found = self._confirmed(key, pem, other_than)
        return found

    def _confirmed(self, key: str, pem: str, other_than: str) -> str | None:
        minion_id = self._owners.get(key)
        if minion_id is None or minion_id == other_than:
            return None
        now = self._accepted(minion_id)
        if now is not None and pubkey.same_key(now, pem):
            return minion_id
        self.discard(minion_id)  # deleted or replaced since the index saw it
        if now is not None:
            self.add(minion_id, now)
        return None

    def _read(self) -> None:
        self._owners, self._keys = {}, {}
        for minion_id, pem in self._listing():
            self.add(minion_id, pem)
        self._read_at = self._clock()

    def add(self, minion_id: str, pem: str) -> None:
        """``pem`` is accepted under ``minion_id`` now (the key stage just stored it)."""
        self.discard(minion_id)
        key = pubkey.key_id(pem)
        self._owners.setdefault(key, minion_id)
        self._keys[minion_id] = key

    def discard(self, minion_id: str) -> None:
        """The key under ``minion_id`` was deleted."""
        key = self._keys.pop(minion_id, None)
        if key is not None and self._owners.get(key) == minion_id:
            del self._owners[key]
