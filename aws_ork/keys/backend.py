"""Accept and delete one key by its exact id through ``salt.key.Key``'s own objects, in O(1).

Why not ``Key.accept(match_dict=...)`` and ``Key.delete_key(match_dict=...)``: in Salt 3008
both end in work proportional to the number of keys on the master. ``accept`` returns
``dict_match()``, which calls ``list_keys()`` (every key); ``delete_key`` builds a LocalClient
and runs ``check_minion_cache()``, which lists every key and every cached minion. On a master
with 10,000 keys that listing is nearly all the work of a message.

This module does what those methods do for one id, with the same objects Salt uses:
``key.cache`` (the ``keys``/``denied_keys`` banks of the configured key cache driver),
``key.event`` (the same ``salt/key`` event, so reactors still see accept and delete), the
grains/pillar cache of that one minion flushed after a delete (what ``check_minion_cache``
does for every deleted id), and the AES rotation drop file when ``rotate_aes_key`` is on,
so a deleted minion can no longer decrypt publications.

One difference, on purpose: with Salt's file driver (``localfs_key``) a pending key is
accepted (or rejected) by one ``rename`` of ``minions_pre/<id>`` to ``minions/<id>`` (or
``minions_rejected/<id>``), where the driver's ``store`` first deletes the pending file and
then writes the new one. Between the two the key exists nowhere, and a minion
authenticating at that moment (it retries every ``acceptance_wait_time``) is taken for a new
minion: the master stores its key as pending again, with a fresh mtime, and the accept is
lost (or, after a reject, a stale key is pending again and looks fresh). With the rename the
key is always in exactly one state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from aws_ork.base.saltkeys import ACCEPTED, DENIED, FILE_DRIVER, PENDING, REJECTED, KeyLocation
from aws_ork.keys import saltcompat

log = logging.getLogger(__name__)


def preload_event_transport() -> None:
    """Import what Salt imports at a process's first event: its IPC transport
    (``salt.transport.tcp``, which pulls in ``salt.master``; about 0.2 s). Run in a helper
    thread at start-up (App), it is done while the first receive waits on SQS, instead of
    on the loop's thread in the middle of the first batch's first accept."""
    import salt.transport.tcp  # noqa: F401


class SaltKeys:
    """Exact, constant-cost key changes on one ``salt.key.Key``.

    Callers validate the id first (``aws_ork.base.ids``) and translate Salt's exceptions.
    """

    def __init__(self, key: Any, location: KeyLocation | None = None) -> None:
        self.key = key
        self.opts = key.opts
        #: where the file driver keeps keys (None: always through the cache driver)
        self.location = (
            location if location is not None and location.driver == FILE_DRIVER else None
        )
        self._data_cache: Any = None  # salt.cache for grains/pillar, made on first delete
        #: the key's ``keys``/``denied_keys`` banks: Salt 3008's key cache, or the files
        #: (Salt 3006/3007: aws_ork.keys.saltcompat)
        self.cache = saltcompat.key_cache(key, location or KeyLocation.from_opts(self.opts))

    def list_match(self, names: list[str]) -> dict[str, list[str]]:
        """The key directories holding these exact ids: ``Key.list_match`` (Salt 3008), or
        the same read of the files (3006/3007, whose ``list_match`` does not exist)."""
        if isinstance(self.cache, saltcompat.KeyFiles):
            return self.cache.list_match(names)
        found: dict[str, list[str]] = self.key.list_match(names)
        return found

    def accept(self, minion_id: str, entry: Any = None) -> bool:
        """Move a pending key to accepted, as ``Key.change_state(PEND, ACC)`` does.

        ``entry`` is the key's ``keys`` bank entry when the caller has just fetched it.
        False when there is no pending key or its public key is not a valid RSA key (Salt
        logs and skips those too).
        """
        import salt.utils.event

        if entry is None:
            entry = self.cache.fetch("keys", minion_id)
        if not isinstance(entry, dict) or entry.get("state") != "pending":
            return False
        if not saltcompat.valid_public_key(entry["pub"]):
            log.error("%s: pending key is not a valid RSA public key; not accepted", minion_id)
            return False
        if not self._move_pending(minion_id, entry, "accepted"):
            return False
        self._fire(
            {"result": True, "act": "accept", "id": minion_id, "pub": entry["pub"]},
            salt.utils.event.tagify(prefix="key"),
        )
        return True

    def reject(self, minion_id: str) -> bool:
        """Move a pending key to rejected, as ``Key.change_state(PEND, REJ)`` does (without
        listing every key). False when there is no pending key any more."""
        import salt.utils.event

        entry = self.cache.fetch("keys", minion_id)
        if not isinstance(entry, dict) or entry.get("state") != "pending":
            return False
        if not self._move_pending(minion_id, entry, "rejected"):
            return False
        self._fire(
            {"result": True, "act": "reject", "id": minion_id},
            salt.utils.event.tagify(prefix="key"),
        )
        return True

    def _move_pending(self, minion_id: str, entry: dict[str, Any], state: str) -> bool:
        """The pending key's new state. Under the file driver one rename of
        ``minions_pre/<id>`` (see the module docstring), so the key is never absent; then,
        as the driver's store would, no other state of the id is left. False when the key
        was no longer pending (another process changed it)."""
        if self.location is None:
            self.cache.store("keys", minion_id, {**entry, "state": state})
            return True
        target, other = (ACCEPTED, REJECTED) if state == "accepted" else (REJECTED, ACCEPTED)
        try:
            os.rename(self.location.path(PENDING, minion_id), self.location.path(target, minion_id))
        except FileNotFoundError:
            return False
        try:  # a rejected copy would win over an accepted one (the driver reads it first)
            os.unlink(self.location.path(other, minion_id))
        except FileNotFoundError:
            pass
        return True

    def denied(self, minion_id: str) -> list[str]:
        """The public keys Salt denied under this id (another key was pending or accepted).
        Only keys: Salt rewrites the denied file at each denied attempt (truncated first), so
        a read can find it empty or half written; that is no key (the next attempt's event
        looks again)."""
        found = self.cache.fetch("denied_keys", minion_id)
        pubs = [found] if isinstance(found, str) else found or []
        return [pub for pub in pubs if isinstance(pub, str) and saltcompat.valid_public_key(pub)]

    def accept_presented(self, minion_id: str, pub: str) -> bool:
        """Accept a key Salt did not keep as pending (key binding: the genuine key, denied
        because an impostor's was pending first, or thrown away because the one denied slot
        was taken too: seen only on its ``salt/auth`` event). False when it is not a valid RSA
        public key.

        Under the file driver the accepted file is written first (atomically) and only then
        is the impostor's pending file removed: Salt's ``store`` would delete every state of
        the id first, and a presenter authenticating in that gap finds no key, is taken for a
        new minion and stored as pending, which deletes the accepted key again. With a key
        always there, Salt denies every other key and never replaces the accepted one."""
        import salt.utils.event

        if not saltcompat.valid_public_key(pub):
            log.error("%s: presented key is not a valid RSA public key; not accepted", minion_id)
            return False
        pub = pub.strip()
        if self.location is None:
            self.cache.store("keys", minion_id, {"state": "accepted", "pub": pub})
        else:
            target = self.location.path(ACCEPTED, minion_id)
            target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".aws_ork-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(pub.encode("utf-8"))
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            for state in (PENDING, REJECTED):  # they would win over it (read first)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.location.path(state, minion_id))
        self.cache.flush("denied_keys", minion_id)
        self._fire(
            {"result": True, "act": "accept", "id": minion_id, "pub": pub},
            salt.utils.event.tagify(prefix="key"),
        )
        return True

    def drop_denied(self, minion_id: str) -> None:
        """Delete the denied key (key binding: an impostor's), so that the genuine key finds
        Salt's one denied slot free at its next attempt (Salt keeps the first denied key of
        an id and throws every later one away)."""
        self.cache.flush("denied_keys", minion_id)

    def drop_impostor(
        self, state: str, minion_id: str, genuine: Callable[[str], bool]
    ) -> list[str]:
        """Remove the pending (``state`` PENDING) or denied (DENIED) key of this id unless it
        is ``genuine`` (key binding gave up: they were proven not to be the instance's key).
        The public keys removed. Only under the file driver, and only the very file that was
        read (same inode: Salt's store writes a new file, so a key stored in between is
        kept); with another driver nothing is removed (its flush of the ``keys`` bank would
        take every state of the id, an accepted key too)."""
        if self.location is None:
            return []
        path = self.location.path(state, minion_id)
        try:
            with open(path, "rb") as fh:
                seen = os.fstat(fh.fileno())
                text = fh.read(1 << 20).decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        pubs = [text] if state == PENDING else self.denied(minion_id)
        if not pubs or any(genuine(pub) for pub in pubs):
            return []
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return []
        if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
            return []  # replaced since it was read: not the key we judged
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return [pub.strip() for pub in pubs]

    def delete(self, minion_id: str, states: Iterable[str]) -> None:
        """Delete the key in each of ``states`` (directory names), as ``Key.delete_key`` does."""
        import salt.utils.event

        states = set(states)
        for state in sorted(states):
            self.cache.flush("denied_keys" if state == DENIED else "keys", minion_id)
            self._fire(
                {"result": True, "act": "delete", "id": minion_id},
                salt.utils.event.tagify(prefix="key"),
            )
        self._forget_minion_data(minion_id, was_accepted=ACCEPTED in states)
        if self.opts.get("rotate_aes_key"):
            saltcompat.drop_aes_key(self.opts)

    def _forget_minion_data(self, minion_id: str, *, was_accepted: bool) -> None:
        """Flush this minion's grains and pillar cache, honouring Salt's preserve options."""
        if self.opts.get("preserve_minion_cache", False):
            return
        if was_accepted and self.opts.get("preserve_minions") is True:
            return
        if self._data_cache is None:
            import salt.cache

            self._data_cache = salt.cache.factory(self.opts)
        pillarenv = self.opts.get("pillarenv")
        for bank, name in saltcompat.minion_data_banks(self.key, minion_id, pillarenv):
            self._data_cache.flush(bank, name)

    def _fire(self, data: dict[str, Any], tag: str) -> None:
        """Tell the master's event bus, like salt.key does (best effort there too)."""
        self.key.event.fire_event(data, tag)
