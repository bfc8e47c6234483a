"""The secret that authenticates aws_ork's reactor events, and the signature it makes.

Any accepted minion can put any tag on the master's event bus (Salt 3008 fires a
``_minion_event``'s ``pretag`` before its blacklist check), so a reactor cannot tell an
``aws_ork/accepted/<id>`` of ours from a minion's by its tag. Each event of ours therefore
carries an HMAC-SHA256 of its content under a secret only the master's side can read, in the
form Salt's own Jinja filter ``hmac`` checks (``salt.utils.hashutils.hmac_signature``: the
base64 of the digest): a reactor sls reads the secret with ``salt['file.read']`` (reactor
renders run in the master's process, as the master's user) and verifies
``data['signed'] | hmac(key, data['hmac'])`` before it parses ``data['signed'] | load_json``.

The secret is a file of 64 hex characters (32 random bytes), by default in the master's
cachedir (:data:`KEY_FILE_NAME`), which the master's user can read and no minion can reach.
It is made at the first start when absent (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600, then
given to the master's user when aws_ork runs as root and the master as another user). A key
file that is a symlink, not a regular file, writable by its group, readable or writable by
others, owned by anyone but aws_ork's or the master's user, or not 64 hex characters is
refused (a config error, exit 2): a secret others can read or replace authenticates nothing.
The key is never logged and never put in an event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_ork.base.errors import ConfigError

if TYPE_CHECKING:  # a type only: the config module imports keys.naming, keys import no config
    from aws_ork.config import Config

#: The default key file, in the master's cachedir (the README's recipes name this path).
KEY_FILE_NAME = "aws_ork-event.key"
#: Random bytes in a new key (written as hex).
KEY_BYTES = 32
#: Mode bits a key file may not have: group write, anything for others.
UNSAFE_MODE = stat.S_IWGRP | stat.S_IRWXO


class EventKeyError(Exception):
    """The key file is unusable; the message says why (never the key)."""


def default_path(master_opts: Mapping[str, Any]) -> Path:
    """``<master cachedir>/aws_ork-event.key``."""
    return Path(str(master_opts["cachedir"])) / KEY_FILE_NAME


def event_key_path(cfg: Config, master_opts: Mapping[str, Any]) -> Path:
    """SaltEventKey, default in the master's cachedir. Never under PkiDir: PkiDir is mirrored
    to S3, and the secret stays on the master (a restored master makes its own)."""
    path = cfg.salt_event_key or default_path(master_opts)
    real, root = os.path.realpath(path), os.path.realpath(cfg.pki_dir)
    if os.path.commonpath([real, root]) == root:
        raise ConfigError(
            cfg.source,
            "SaltEventKey",
            f"{path} is under PkiDir {cfg.pki_dir}, which is mirrored to S3: "
            f"keep the secret out of the bucket (the default is in the "
            f"master's cachedir)",
        )
    return path


def _master_uid(master_opts: Mapping[str, Any]) -> int | None:
    user = master_opts.get("user")
    if not isinstance(user, str) or not user:
        return None
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


@dataclass(frozen=True, repr=False)
class EventKey:
    """The secret (never in a repr, a log line or an event)."""

    secret: bytes
    path: Path

    def __repr__(self) -> str:
        return f"EventKey({str(self.path)!r})"

    def sign(self, text: str) -> str:
        """base64(HMAC-SHA256(key, text)): what Salt's ``hmac`` Jinja filter compares."""
        digest = hmac.new(self.secret, text.encode("utf-8"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    def verify(self, text: str, signature: str) -> bool:
        """For tests and tools: does ``signature`` authenticate ``text``?"""
        return hmac.compare_digest(self.sign(text), signature)

    @classmethod
    def load_or_create(
        cls, path: Path, master_opts: Mapping[str, Any], *, create: bool = True
    ) -> EventKey:
        """Read the key file, or make it when absent (``create``). EventKeyError when it is
        unsafe or unusable."""
        master_uid = _master_uid(master_opts)
        try:
            return cls._read(path, master_uid)
        except FileNotFoundError:
            if not create:
                raise EventKeyError(f"{path} does not exist") from None
        try:
            cls._create(path, master_uid)
        except FileExistsError:  # made meanwhile (another start): read what is there
            pass
        except OSError as exc:
            raise EventKeyError(f"cannot create {path}: {exc.strerror}") from None
        try:
            return cls._read(path, master_uid)
        except FileNotFoundError:
            raise EventKeyError(f"{path} vanished right after it was created") from None

    @classmethod
    def _read(cls, path: Path, master_uid: int | None) -> EventKey:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if os.path.islink(path):
                raise EventKeyError(f"{path} is a symlink; it must be a regular file") from None
            raise EventKeyError(f"cannot read {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise EventKeyError(f"{path} is not a regular file")
            owners = {os.geteuid()} | ({master_uid} if master_uid is not None else set())
            if st.st_uid not in owners:
                raise EventKeyError(
                    f"{path} is owned by uid {st.st_uid}, neither aws_ork's user nor the master's"
                )
            if st.st_mode & UNSAFE_MODE:
                raise EventKeyError(
                    f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; it must "
                    f"be 0600 or 0640 (no group write, nothing for others)"
                )
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        text = raw.decode("ascii", "replace").strip()
        if len(text) != 2 * KEY_BYTES or any(c not in "0123456789abcdef" for c in text):
            raise EventKeyError(f"{path} does not hold {2 * KEY_BYTES} lower-case hex characters")
        return cls(text.encode("ascii"), path)

    @staticmethod
    def _create(path: Path, master_uid: int | None) -> None:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            if master_uid is not None and os.geteuid() == 0 and master_uid != 0:
                os.fchown(fd, master_uid, -1)  # the master's reactor must read it
            os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii"))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
