"""What differs between the Salt releases aws_ork supports (3006 LTS, 3007, 3008), in one place.

Salt 3008 keeps minion keys behind a key cache: ``salt.key.Key.cache``, whose driver
(``keys.cache_driver``, by default ``localfs_key``) is a shim over the same pki directories
Salt always had, and ``Key.list_match`` looks one id up there. Salt 3006 and 3007 have
neither: ``salt.key.Key`` and the master's auth read and write the files of
``minions``, ``minions_pre``, ``minions_rejected`` and ``minions_denied`` directly. On those
releases :class:`KeyFiles` stands in for the key cache, with exactly the reads and writes
``localfs_key`` does on the same files (3008 wrote it to be the old layout, so both agree),
and the rest of the key stage is the same code on every release.

The other differences: a public key is validated with ``salt.crypt.PublicKey.from_str`` in
3008 and by loading the PEM as Salt 3006/3007's ``get_rsa_pub_key`` does; the AES rotation
drop file takes the master id since 3007; a minion's grains and pillar live in the banks
``grains``/``pillar`` in 3008 and under ``minions/<id>`` before. docs/compatibility.md has
the table.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from aws_ork.base.saltkeys import ACCEPTED, DENIED, PENDING, REJECTED, KeyLocation

#: The order ``localfs_key.fetch`` reads a key's states in (the first file found wins).
LOOKUP_ORDER = ((REJECTED, "rejected"), (PENDING, "pending"), (ACCEPTED, "accepted"))
STATE_DIRS = {state: directory for directory, state in LOOKUP_ORDER}


#: The oldest Salt aws_ork runs on (3006 LTS since its onedir has Python 3.11), and the
#: newest line it is tested with (setup.py's ``salt`` requirement says the same).
OLDEST = (3006, 27)
NEWEST_LINE = 3008


def salt_release() -> tuple[int, int]:
    """The installed Salt's (major, minor), e.g. (3006, 27)."""
    import salt.version

    info = salt.version.__saltstack_version__
    return (int(info.major), int(info.minor or 0))


def release_refusal(release: tuple[int, int]) -> str | None:
    """Why aws_ork refuses to start on this Salt (exit 2), or None. A Salt older than
    :data:`OLDEST` lacks what aws_ork relies on (and was never tested)."""
    if release < OLDEST:
        return (
            f"Salt {release[0]}.{release[1]} is older than {OLDEST[0]}.{OLDEST[1]}, the "
            f"oldest release aws_ork supports (docs/compatibility.md)"
        )
    return None


def release_warnings(release: tuple[int, int], opts: Mapping[str, Any]) -> list[str]:
    """What an operator of this Salt and master config must know (a WARNING at start)."""
    found = []
    if release[0] > NEWEST_LINE:
        found.append(
            f"Salt {release[0]}.{release[1]} is newer than the releases aws_ork is tested "
            f"with ({OLDEST[0]}.{OLDEST[1]} to {NEWEST_LINE}.x; docs/compatibility.md)"
        )
    if release[0] < 3007 and opts.get("cluster_id"):
        found.append(
            f"the master sets cluster_id, but Salt {release[0]} has no master cluster: Salt "
            f"ignores cluster_id and cluster_pki_dir, and so does aws_ork (keys in pki_dir)"
        )
    return found


def key_cache(key: Any, location: KeyLocation) -> Any:
    """The key cache of this ``salt.key.Key``: its own on Salt 3008, else the files."""
    cache = getattr(key, "cache", None)
    return cache if cache is not None else KeyFiles(location, key.opts.get("user"))


def has_key_cache(key: Any) -> bool:
    """True on Salt 3008 and later (``salt.key.Key`` has a key cache driver)."""
    return getattr(key, "cache", None) is not None


class KeyFiles:
    """The ``keys`` and ``denied_keys`` banks on the pki directories, as Salt 3008's
    ``localfs_key`` driver reads and writes them (fetch, store, flush of one id); for Salt
    3006 and 3007, whose ``salt.key.Key`` has no key cache. Callers validate the id."""

    def __init__(self, location: KeyLocation, user: str | None = None) -> None:
        self.location = location
        self.user = user

    def fetch(self, bank: str, minion_id: str) -> Any:
        """``{"state", "pub"}`` of the first state found (rejected, pending, accepted) for
        ``keys``; the one denied key as a list for ``denied_keys``; None when absent."""
        if bank == "denied_keys":
            text = self._read(DENIED, minion_id)
            return None if text is None else [text]
        for directory, state in LOOKUP_ORDER:
            text = self._read(directory, minion_id)
            if text is not None:
                return {"state": state, "pub": text}
        return None

    def store(self, bank: str, minion_id: str, data: Any) -> None:
        """Write the key in its state, after removing every other state of the id (what
        ``localfs_key.store`` does); a denied key replaces the one denied file."""
        if bank == "denied_keys":
            directory, text = DENIED, data[0]
        else:
            directory, text = STATE_DIRS[data["state"]], data["pub"]
        target = self.location.path(directory, minion_id)
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.flush(bank, minion_id)
        fd, tmp = tempfile.mkstemp(dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode("utf-8"))
            self._chown(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def flush(self, bank: str, minion_id: str) -> bool:
        """Remove the id from the bank (every state but denied for ``keys``)."""
        dirs = (DENIED,) if bank == "denied_keys" else tuple(d for d, _ in LOOKUP_ORDER)
        flushed = False
        for directory in dirs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.location.path(directory, minion_id))
                flushed = True
        return flushed

    def list_match(self, names: list[str]) -> dict[str, list[str]]:
        """What Salt 3008's ``Key.list_match`` returns for exact ids: the state the key is
        read in and ``minions_denied`` when a denied key exists."""
        found: dict[str, list[str]] = {}
        for name in names:
            entry = self.fetch("keys", name)
            if entry:
                found.setdefault(STATE_DIRS[entry["state"]], []).append(name)
            if self.fetch("denied_keys", name):
                found.setdefault(DENIED, []).append(name)
        return found

    def _read(self, directory: str, minion_id: str) -> str | None:
        path = self.location.path(directory, minion_id)
        if path.is_symlink() or not path.is_file():  # localfs_key skips symlinks too
            return None
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _chown(self, path: str) -> None:
        """Give the file to the master's user, as the driver does (best effort)."""
        if not self.user:
            return
        import pwd

        with contextlib.suppress(KeyError, OSError):
            os.chown(path, pwd.getpwnam(self.user).pw_uid, -1)


def valid_public_key(pub: str) -> bool:
    """Whether Salt would load this public key (it skips a key it cannot load)."""
    import salt.crypt

    from_str = getattr(salt.crypt.PublicKey, "from_str", None)
    if from_str is not None:  # Salt 3008
        import salt.exceptions

        try:
            from_str(pub)
        except salt.exceptions.InvalidKeyError:
            return False
        return True
    # Salt 3006/3007: what salt.crypt.get_rsa_pub_key does with a key file's content
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_pem_public_key(pub.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def drop_aes_key(opts: Any) -> None:
    """Ask the master to rotate its AES key (``rotate_aes_key``): the drop file, which
    takes the master's id since Salt 3007."""
    import salt.crypt

    if "master_id" in inspect.signature(salt.crypt.dropfile).parameters:
        salt.crypt.dropfile(opts["cachedir"], opts["user"], opts["id"])
    else:
        salt.crypt.dropfile(opts["cachedir"], opts["user"])


def minion_data_banks(
    key: Any, minion_id: str, pillarenv: str | None
) -> list[tuple[str, str | None]]:
    """The (bank, key) pairs of one minion's grains and pillar in the minion data cache,
    which ``Key.check_minion_cache`` flushes after a delete (key None: the whole bank).
    Salt 3008 keeps them in the ``grains`` and ``pillar`` banks; 3006/3007 in a bank
    ``minions/<id>`` of their own."""
    if not has_key_cache(key):
        return [(f"minions/{minion_id}", None)]
    names = [minion_id] + ([f"{minion_id}:{pillarenv}"] if pillarenv else [])
    return [(bank, name) for bank in ("grains", "pillar") for name in names]
