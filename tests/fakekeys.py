"""A key store for tests of the message handler that must not (or only partly) reach Salt.

:class:`UnusedKeys` is the whole :class:`aws_ork.keys.stage.KeyStore` Protocol, every call an
AssertionError: a test that expects no key change uses it as is, a test that fakes one call
overrides that method. (The real store is Salt's, through ``KeyManager``, in every other test.)
"""

from __future__ import annotations

from collections.abc import Collection

from aws_ork.keys.result import KeyResult


class UnusedKeys:
    dry_run = False

    def _unexpected(self, name: str) -> AssertionError:
        return AssertionError(f"the key store was not expected to be asked: {name}")

    def close(self) -> None:
        pass

    def instance_keys(self, named: Collection[str] = (), /) -> dict[str, set[str]]:
        raise self._unexpected("instance_keys")

    def states(self, minion_id: str, /) -> set[str]:
        raise self._unexpected("states")

    def accept(self, minion_id: str, /, *, enrolled: bool = False) -> KeyResult:
        raise self._unexpected("accept")

    def accept_bound(
        self,
        minion_id: str,
        fingerprint: str,
        /,
        *,
        enrolled: bool = False,
        presented: str | None = None,
    ) -> KeyResult:
        raise self._unexpected("accept_bound")

    def drop_impostors(self, minion_id: str, fingerprint: str, /) -> tuple[str, ...]:
        raise self._unexpected("drop_impostors")

    def restore_bound(self, minion_id: str, fingerprint: str, pub: str, /) -> KeyResult:
        raise self._unexpected("restore_bound")

    def public_key(self, minion_id: str, /) -> str | None:
        raise self._unexpected("public_key")

    def delete(self, minion_id: str, /) -> KeyResult:
        raise self._unexpected("delete")

    def reject(self, minion_id: str, /) -> KeyResult:
        raise self._unexpected("reject")
