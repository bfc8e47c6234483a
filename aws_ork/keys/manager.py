"""Accept and delete minion keys through Salt's own key API (``salt.key.Key``).

Salt's API takes globs; we never give it one. Every id is checked first (an instance id, or
a safe minion id MinionIdTemplate made: :func:`aws_ork.base.ids.is_minion_id`), its state
is looked up by exact name (``list_match``), and the change is made on exactly that key
(:mod:`aws_ork.keys.backend`: Salt's cache and event objects, O(1) per key), so ``*`` or
``i-*`` can never widen a match. A launch whose minion has no key yet leaves an autosign stub
(:mod:`aws_ork.keys.autosign`), so Salt accepts the key on the minion's first contact.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from aws_ork.base import binding, pubkey
from aws_ork.base.errors import ConfigError, KeyStoreError
from aws_ork.base.ids import is_instance_id, is_minion_id
from aws_ork.base.saltkeys import ACCEPTED, DENIED, PENDING, REJECTED, KeyLocation
from aws_ork.keys import saltcompat
from aws_ork.keys.autosign import AutosignStubs
from aws_ork.keys.backend import SaltKeys
from aws_ork.keys.index import AcceptedKeys
from aws_ork.keys.result import KeyResult, Outcome

log = logging.getLogger(__name__)


def load_master_opts(path: Path) -> dict[str, Any]:
    """The Salt master's options, loaded once per process (Salt parses YAML safely)."""
    if not path.is_file():
        raise ConfigError(str(path), "SaltMasterConfig", "no such file")
    import salt.config  # slow import: only when a key manager is really wanted

    refusal = saltcompat.release_refusal(saltcompat.salt_release())
    if refusal:
        raise ConfigError("salt", None, refusal)
    try:
        opts: dict[str, Any] = salt.config.master_config(str(path))
    except Exception as exc:  # Salt raises many types for a bad file
        raise ConfigError(str(path), "SaltMasterConfig", f"unreadable: {exc}") from None
    return opts


class KeyManager:
    """Exact-match key operations for instance minions.

    ``key`` is a ``salt.key.Key`` (made from ``opts`` when not given). Dry-run mode looks the
    key up and says what it would do, but changes nothing.
    """

    def __init__(self, opts: Mapping[str, Any], *, dry_run: bool = False, key: Any = None):
        if key is None:
            import salt.key

            key = salt.key.Key(dict(opts))
        self._key = key
        for warning in saltcompat.release_warnings(saltcompat.salt_release(), opts):
            log.warning("%s", warning)
        self.location = KeyLocation.from_opts(opts)
        self._salt = SaltKeys(key, self.location)  # exact O(1): salt.key's own list every key
        self._stubs = AutosignStubs(self.location, auto_accept=bool(opts.get("auto_accept")))
        self.dry_run = dry_run
        #: key binding by key: which id holds an accepted key (one key, one minion)
        self.index = AcceptedKeys(self._accepted_keys, self.accepted_key)

    def close(self) -> None:
        """Close the master event connection ``salt.key.Key`` opens on the first key change
        (``key.event``); left to the garbage collector, Salt closes it with an
        ``unclosed MasterEvent`` ResourceWarning at exit."""
        event = getattr(self._key, "__dict__", {}).get("event")  # only if it was opened
        if event is not None:
            event.destroy()

    def instance_keys(self, named: Collection[str] = ()) -> dict[str, set[str]]:
        """Every key whose id is an instance id or one of ``named`` (the ids MinionIdTemplate
        gave), with the states it is in (a full listing: for the periodic sweep, never per
        message)."""
        wanted = set(named)
        listing = self._call("list", "*", self._key.list_keys)
        found: dict[str, set[str]] = {}
        for state, names in (listing or {}).items():
            for name in names or ():
                if is_instance_id(name) or name in wanted:
                    found.setdefault(name, set()).add(state)
        return found

    def states(self, minion_id: str) -> set[str]:
        """The key directories (``minions``, ``minions_pre``, ...) that hold this exact id."""
        if not is_minion_id(minion_id):
            raise ValueError(f"{minion_id!r:.80} is not a safe minion id")
        found = self._call("look up", minion_id, self._salt.list_match, [minion_id])
        return {state for state, names in found.items() if minion_id in names}

    def accept(self, minion_id: str, *, enrolled: bool = False) -> KeyResult:
        """Accept the pending key of exactly this minion.

        ``enrolled``: this instance's key was accepted once before. An instance launches
        once; if its key is no longer accepted, someone (an operator) removed it, and no
        launch message (a replay, or a late one) may accept or pre-authorise a key again."""
        if not is_minion_id(minion_id):
            log.warning("refusing to accept key %.80r: not a safe minion id", minion_id)
            return KeyResult(Outcome.INVALID_ID)
        states = self.states(minion_id)
        if ACCEPTED in states:
            return KeyResult(Outcome.ALREADY_ACCEPTED)
        if enrolled:
            return KeyResult(Outcome.REMOVED)
        if REJECTED in states and PENDING not in states:
            return KeyResult(Outcome.REFUSED)
        if not states and self._stubs.useful:
            return self._preauthorise(minion_id)
        if PENDING not in states:
            return KeyResult(Outcome.NOT_PENDING)
        return self._accept_pending(minion_id)

    def accept_bound(
        self,
        minion_id: str,
        fingerprint: str,
        *,
        enrolled: bool = False,
        presented: str | None = None,
    ) -> KeyResult:
        """Key binding: accept exactly the key whose fingerprint the instance published.

        Never writes an autosign stub (a stub accepts whichever key comes first). The bound
        key is accepted wherever it is seen: pending, denied (an impostor's key was pending
        first), or ``presented`` (the public key of a ``salt/auth`` event: Salt keeps one
        denied key per id and throws the others away). An impostor's denied key is deleted,
        so the slot is free for the genuine key's next attempt; an impostor's pending key is
        left pending (never accepted) until the bound key is accepted, and removed then:
        deleting it would leave the id without a key, and Salt stores the next presenter's
        key as pending with a ``store`` that deletes the accepted key too when it lands after
        ours. A key already accepted with another fingerprint is left alone (an operator
        decides). Not presented yet: BOUND_NOT_YET; ``others`` names the impostors' keys."""
        if not is_minion_id(minion_id):
            log.warning("refusing to accept key %.80r: not a safe minion id", minion_id)
            return KeyResult(Outcome.INVALID_ID)
        hash_type = str(self._key.opts.get("hash_type") or "sha256")
        states = self.states(minion_id)
        if ACCEPTED in states:
            return self._accepted_bound(minion_id, fingerprint, hash_type)
        if enrolled:
            return KeyResult(Outcome.REMOVED)
        impostors: list[str] = []
        if PENDING in states:
            pub = self._pub(minion_id)
            if pub is not None and binding.matches(pub, fingerprint, hash_type):
                return self._accept_pending(minion_id)
            impostors.append(binding.finger(pub, hash_type) if pub is not None else "?")
        genuine = (
            presented
            if presented is not None and binding.matches(presented.strip(), fingerprint, hash_type)
            else None
        )
        denied_impostor = False
        if DENIED in states:
            denied_genuine, denied_impostor = self._sort_denied(
                minion_id, fingerprint, hash_type, impostors
            )
            genuine = denied_genuine or genuine
        if genuine is not None:
            if self.dry_run:
                return KeyResult(Outcome.ACCEPTED, dry_run=True, others=tuple(impostors))
            if not self._call("accept", minion_id, self._salt.accept_presented, minion_id, genuine):
                raise KeyStoreError(f"{minion_id}: Salt did not accept the presented key")
            return KeyResult(Outcome.ACCEPTED, changed=True, others=tuple(impostors))
        if denied_impostor and not self.dry_run:
            self._call("delete", minion_id, self._salt.drop_denied, minion_id)
        return KeyResult(
            Outcome.BOUND_NOT_YET,
            changed=denied_impostor and not self.dry_run,
            dry_run=self.dry_run and bool(impostors),
            others=tuple(impostors),
        )

    def preaccept(self, minion_id: str, published: str, *, enrolled: bool = False) -> KeyResult:
        """Key binding by key: store the key the instance published (its key tags) as
        accepted, through Salt's key store, before its minion's first authentication: Salt
        then accepts the minion at once, and denies any other key presented under the id.

        A pending or denied key under the id that is not the published one is an impostor's
        (``others`` names them): the accept clears them (Salt's accept does). The published
        key rejected under the id (an operator's ``salt-key -r``): REFUSED, left rejected.
        A key already accepted under the id: the published one (ALREADY_ACCEPTED), or
        another, left alone for an operator (OTHER_KEY_ACCEPTED). The published key already
        accepted under another id: KEY_TWICE (``others``: that id), nothing stored."""
        if not is_minion_id(minion_id):
            log.warning("refusing to accept key %.80r: not a safe minion id", minion_id)
            return KeyResult(Outcome.INVALID_ID)
        hash_type = str(self._key.opts.get("hash_type") or "sha256")
        states = self.states(minion_id)
        if ACCEPTED in states:
            pub = self.accepted_key(minion_id)
            if pub is not None and pubkey.same_key(pub, published):
                return KeyResult(Outcome.ALREADY_ACCEPTED)
            other = (binding.finger(pub, hash_type),) if pub is not None else ()
            return KeyResult(Outcome.OTHER_KEY_ACCEPTED, others=other)
        if enrolled:
            return KeyResult(Outcome.REMOVED)
        if REJECTED in states and self._rejected(minion_id, published):
            return KeyResult(Outcome.REFUSED)  # an operator rejected exactly this key
        twice = self.index.owner(published, other_than=minion_id)
        if twice is not None:
            return KeyResult(Outcome.KEY_TWICE, others=(twice,))
        others = self._others(minion_id, states, published, hash_type)
        if self.dry_run:
            return KeyResult(Outcome.ACCEPTED, dry_run=True, others=others)
        if not self._call("accept", minion_id, self._salt.accept_presented, minion_id, published):
            raise KeyStoreError(f"{minion_id}: Salt did not accept the published key")
        self.index.add(minion_id, published)
        return KeyResult(Outcome.ACCEPTED, changed=True, others=others)

    def _others(
        self, minion_id: str, states: Collection[str], published: str, hash_type: str
    ) -> tuple[str, ...]:
        """The fingerprints of the pending and denied keys under the id that are not the
        published key (impostors')."""
        pubs = [self._pub(minion_id)] if PENDING in states else []
        if DENIED in states:
            pubs.extend(self._call("look up", minion_id, self._salt.denied, minion_id))
        return tuple(
            binding.finger(pub, hash_type)
            for pub in pubs
            if pub is not None and not pubkey.same_key(pub, published)
        )

    def _rejected(self, minion_id: str, published: str) -> bool:
        """Is the published key the one rejected under this id (by an operator: a rejected
        key of anyone else is overwritten by the accept)?"""
        entry = self._entry(minion_id)
        if not isinstance(entry, dict) or entry.get("state") != "rejected":
            return False
        pub = entry.get("pub")
        return isinstance(pub, str) and pubkey.same_key(pub, published)

    def accepted_key(self, minion_id: str) -> str | None:
        """The public key accepted under this id, or None (none, or not accepted)."""
        entry = self._entry(minion_id) if is_minion_id(minion_id) else None
        if isinstance(entry, dict) and entry.get("state") == "accepted":
            pub = entry.get("pub")
            return pub if isinstance(pub, str) else None
        return None

    def _accepted_keys(self) -> list[tuple[str, str]]:
        """(id, public key) of every accepted key (the index's listing)."""
        listing = self._call("list", "*", self._key.list_keys) or {}
        found = []
        for name in listing.get(ACCEPTED) or ():
            pub = self.accepted_key(name) if isinstance(name, str) else None
            if pub is not None:
                found.append((name, pub))
        return found

    def denied_impostors(self, minion_id: str) -> tuple[str | None, tuple[str, ...]]:
        """Key binding: Salt denied a key under this id. When a key is accepted under it,
        the keys denied there that are not that key are impostors': removed from the denied
        keys (dry run: would be), so that they stall nothing. Returns (the accepted key's
        fingerprint, the removed keys' fingerprints); (None, ()) when no key is accepted
        (the launch's own binding deals with that id)."""
        if not is_minion_id(minion_id):
            return None, ()
        accepted = self.accepted_key(minion_id)
        if accepted is None:
            return None, ()
        hash_type = str(self._key.opts.get("hash_type") or "sha256")
        pubs = self._call("look up", minion_id, self._salt.denied, minion_id)
        impostors = [pub for pub in pubs if not pubkey.same_key(pub, accepted)]
        if impostors and len(impostors) == len(pubs) and not self.dry_run:
            self._call("delete", minion_id, self._salt.drop_denied, minion_id)
        return binding.finger(accepted, hash_type), tuple(
            binding.finger(pub, hash_type) for pub in impostors
        )

    def _accepted_bound(self, minion_id: str, fingerprint: str, hash_type: str) -> KeyResult:
        """Key binding, a key already accepted under the id: the bound one, or another."""
        pub = self._pub(minion_id)
        if pub is not None and binding.matches(pub, fingerprint, hash_type):
            return KeyResult(Outcome.ALREADY_ACCEPTED)
        other = (binding.finger(pub, hash_type),) if pub is not None else ()
        return KeyResult(Outcome.OTHER_KEY_ACCEPTED, others=other)

    def _sort_denied(
        self, minion_id: str, fingerprint: str, hash_type: str, impostors: list[str]
    ) -> tuple[str | None, bool]:
        """Key binding: the denied keys under the id: (the bound key among them, or None;
        whether an impostor's is among them, its fingerprint added to ``impostors``)."""
        genuine: str | None = None
        impostor = False
        for pub in self._call("look up", minion_id, self._salt.denied, minion_id):
            if binding.matches(pub, fingerprint, hash_type):
                genuine = pub
            else:
                impostors.append(binding.finger(pub, hash_type))
                impostor = True
        return genuine, impostor

    def drop_impostors(self, minion_id: str, fingerprint: str) -> tuple[str, ...]:
        """Key binding gave up on this id: remove the pending and denied keys under it whose
        fingerprint is not the published one (they were proven not to be the instance's
        key; Salt would otherwise keep the id's pending and denied slots for them). Never a
        key with the published fingerprint, never an accepted key (nothing at all is removed
        when one is accepted). The fingerprints removed (dry run: that would be)."""
        if not is_minion_id(minion_id):
            return ()
        hash_type = str(self._key.opts.get("hash_type") or "sha256")
        states = self.states(minion_id)
        if ACCEPTED in states:
            return ()

        def genuine(pub: str) -> bool:
            return binding.matches(pub.strip(), fingerprint, hash_type)

        removed: list[str] = []
        for state in (PENDING, DENIED):
            if state not in states:
                continue
            if self.dry_run:
                pubs = (
                    [self._pub(minion_id)]
                    if state == PENDING
                    else self._call("look up", minion_id, self._salt.denied, minion_id)
                )
                found = [pub for pub in pubs if pub is not None]
                if found and not any(genuine(pub) for pub in found):
                    removed.extend(found)
                continue
            removed.extend(
                self._call("delete", minion_id, self._salt.drop_impostor, state, minion_id, genuine)
            )
        return tuple(binding.finger(pub, hash_type) for pub in removed)

    def restore_bound(self, minion_id: str, fingerprint: str, pub: str) -> KeyResult:
        """Key binding, just after the bound key ``pub`` was accepted: if the accepted key
        is gone and a pending key is there instead, a Salt auth attempt that found the id
        without any key (before our accept) stored its key as pending after it, and Salt's
        store deleted the accepted key: accept ``pub`` again (``others``: the pending key's
        fingerprint, removed). Nothing pending (an operator deleted the key): left alone."""
        hash_type = str(self._key.opts.get("hash_type") or "sha256")
        if not is_minion_id(minion_id) or not binding.matches(pub.strip(), fingerprint, hash_type):
            return KeyResult(Outcome.INVALID_ID)
        states = self.states(minion_id)
        if ACCEPTED in states:
            return KeyResult(Outcome.ALREADY_ACCEPTED)
        if PENDING not in states:
            return KeyResult(Outcome.NOT_PENDING)
        pending = self._pub(minion_id)
        if pending is not None and binding.matches(pending, fingerprint, hash_type):
            return self._accept_pending(minion_id)  # the genuine minion's own attempt
        other = (binding.finger(pending, hash_type) if pending is not None else "?",)
        if self.dry_run:
            return KeyResult(Outcome.ACCEPTED, dry_run=True, others=other)
        if not self._call("accept", minion_id, self._salt.accept_presented, minion_id, pub):
            raise KeyStoreError(f"{minion_id}: Salt did not accept the bound key again")
        return KeyResult(Outcome.ACCEPTED, changed=True, others=other)

    def public_key(self, minion_id: str) -> str | None:
        """The public key Salt holds for this id (accepted or pending), or None."""
        return self._pub(minion_id) if is_minion_id(minion_id) else None

    def _pub(self, minion_id: str) -> str | None:
        """The public key Salt holds for this id (accepted or pending)."""
        entry = self._entry(minion_id)
        pub = entry.get("pub") if isinstance(entry, dict) else None
        return pub if isinstance(pub, str) else None

    def _accept_pending(self, minion_id: str) -> KeyResult:
        entry = self._entry(minion_id)
        if self.dry_run:
            return KeyResult(Outcome.ACCEPTED, dry_run=True)
        pub = entry.get("pub") if isinstance(entry, dict) else None
        try:
            accepted = self._call("accept", minion_id, self._salt.accept, minion_id, entry)
        except KeyStoreError:
            self._restore_pending(minion_id, pub)
            raise
        if not accepted:
            if ACCEPTED in self.states(minion_id):
                # another daemon on the same key store (a Salt cluster) accepted it first
                return KeyResult(Outcome.ALREADY_ACCEPTED)
            raise KeyStoreError(f"{minion_id}: Salt did not accept the key (invalid public key?)")
        return KeyResult(Outcome.ACCEPTED, changed=True)

    def _entry(self, minion_id: str) -> Any:
        """The key's ``keys`` bank entry (``{"state", "pub"}``), or None."""
        try:
            return self._salt.cache.fetch("keys", minion_id)
        except Exception:  # the accept fetches it again and reports the error
            return None

    def delete(self, minion_id: str) -> KeyResult:
        """Delete this minion's key in whatever state it is: pending, accepted, rejected, denied."""
        if not is_minion_id(minion_id):
            log.warning("refusing to delete key %.80r: not a safe minion id", minion_id)
            return KeyResult(Outcome.INVALID_ID)
        withdrawn = self._withdraw(minion_id)  # first: Salt must not accept it from now on
        states = self.states(minion_id)
        if not states:
            return KeyResult(
                Outcome.PREAUTH_WITHDRAWN if withdrawn else Outcome.ABSENT,
                dry_run=self.dry_run and withdrawn,
            )
        if self.dry_run:
            return KeyResult(Outcome.DELETED, dry_run=True)
        self._call("delete", minion_id, self._salt.delete, minion_id, states)
        self.index.discard(minion_id)
        left = self.states(minion_id)
        if left:
            raise KeyStoreError(f"{minion_id}: key still present in {sorted(left)} after delete")
        return KeyResult(Outcome.DELETED, changed=True)

    def reject(self, minion_id: str) -> KeyResult:
        """Move exactly this minion's pending key to the rejected keys (a key we must never
        accept, e.g. one submitted before its instance existed); an operator can still see it."""
        if not is_minion_id(minion_id):
            log.warning("refusing to reject key %.80r: not a safe minion id", minion_id)
            return KeyResult(Outcome.INVALID_ID)
        if PENDING not in self.states(minion_id):
            return KeyResult(Outcome.NOT_PENDING)
        if self.dry_run:
            return KeyResult(Outcome.REJECTED, dry_run=True)
        self._call("reject", minion_id, self._salt.reject, minion_id)
        if PENDING in self.states(minion_id):
            raise KeyStoreError(f"{minion_id}: key still pending after reject")
        return KeyResult(Outcome.REJECTED, changed=True)

    def _preauthorise(self, minion_id: str) -> KeyResult:
        """No key of this id yet: leave an autosign stub, so Salt accepts the key on the
        minion's first contact. The message is done once the stub is written."""
        if self.dry_run:
            return KeyResult(Outcome.PREAUTHORISED, dry_run=True)
        try:
            self._stubs.write(minion_id)
        except OSError as exc:
            raise KeyStoreError(f"{minion_id}: cannot write autosign stub: {exc}") from exc
        # The minion may have presented its key between our look-up and the stub: a pending
        # key is accepted now (Salt would only do it at the minion's next auth attempt).
        states = self.states(minion_id)
        if PENDING in states and ACCEPTED not in states:
            self._stubs.remove(minion_id)
            return self._accept_pending(minion_id)
        if ACCEPTED in states:
            return KeyResult(Outcome.ALREADY_ACCEPTED)
        return KeyResult(Outcome.PREAUTHORISED)

    def _withdraw(self, minion_id: str) -> bool:
        """Remove this minion's autosign stub (if any); True if there was one."""
        if self.dry_run:
            return self._stubs.exists(minion_id)
        try:
            return self._stubs.remove(minion_id)
        except OSError as exc:
            raise KeyStoreError(f"{minion_id}: cannot remove autosign stub: {exc}") from exc

    def _restore_pending(self, minion_id: str, pub: str | None) -> None:
        """Salt removes the pending key before it writes the accepted one; when that write
        fails the key would be gone until the minion submits it again. Put it back."""
        if pub is None or self.states(minion_id):
            return
        try:
            self._salt.cache.store("keys", minion_id, {"state": "pending", "pub": pub})
            log.warning("%s: accept failed half-way; pending key put back", minion_id)
        except Exception as exc:  # the store is broken; the minion will resubmit its key
            log.error(
                "%s: accept failed and the pending key could not be put back: %s", minion_id, exc
            )

    def _call(self, what: str, minion_id: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a salt.key call, translating its failures into KeyStoreError."""
        import salt.exceptions

        try:
            return fn(*args, **kwargs)
        except (OSError, salt.exceptions.SaltException) as exc:
            raise KeyStoreError(f"{minion_id}: cannot {what} key: {exc}") from exc
