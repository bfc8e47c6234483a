"""Key binding by key: the minion's whole public key, published on the instance's own tags.

The contract (fixed names): tags ``salt:minion-key-0``, ``salt:minion-key-1``, ... (each value
at most 256 characters), concatenated in index order, are the standard base64 (with padding)
of the DER SubjectPublicKeyInfo of the minion's public key (``minion.pub``). RSA-2048 needs 2
tags, 4096 needs 3. aws_ork stores the key as Salt's ``salt-key`` writes it: ``-----BEGIN
PUBLIC KEY-----``, the base64 wrapped at 64 columns, ``-----END PUBLIC KEY-----``. Salt
compares keys after stripping whitespace only, so this exact text is what the minion's first
authentication must present: the PEM a minion makes with Salt's own tooling.

Tag values are untrusted (anyone who may tag the instance wrote them): the text is decoded
strictly (canonical base64 only, one DER structure with nothing after it), the key must be
RSA with e = 65537 and one of :data:`KEY_SIZES`, and the tags must be numbered from 0 without
a gap. Anything else is a :class:`PublishedKeyError`, never a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping

#: The tag keys: this prefix and the index (0, 1, 2).
KEY_TAG_PREFIX = "salt:minion-key-"
#: The most key tags read (RSA-4096 needs 3); a tag beyond them is an error.
MAX_KEY_TAGS = 3
#: EC2's longest tag value.
TAG_VALUE_MAX = 256
#: The RSA sizes accepted (Salt makes 2048 by default; keysize 4096 is common).
KEY_SIZES = frozenset({2048, 3072, 4096})
#: The only public exponent Salt (and every sane tool) uses.
PUBLIC_EXPONENT = 65537
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_TAG_INDEX = re.compile(re.escape(KEY_TAG_PREFIX) + r"(0|[1-9][0-9]{0,2})")


class PublishedKeyError(ValueError):
    """The key tags are there but do not hold a minion key (the message says why)."""


def key_tags(tags: Mapping[str, str]) -> dict[int, str]:
    """The key tags among an instance's tags, by index (empty: none published)."""
    found: dict[int, str] = {}
    for key, value in tags.items():
        match = _TAG_INDEX.fullmatch(key)
        if match is not None:
            found[int(match.group(1))] = value
    return found


def has_key_tags(tags: Mapping[str, str]) -> bool:
    """Did the instance publish any key tag?"""
    return bool(key_tags(tags))


def from_tags(tags: Mapping[str, str]) -> str | None:
    """The public key the instance published, as the PEM ``salt-key`` writes (ending in a
    newline); None when it published no key tag. PublishedKeyError when the tags do not
    hold an accepted minion key."""
    parts = key_tags(tags)
    if not parts:
        return None
    if sorted(parts) != list(range(len(parts))):
        raise PublishedKeyError(
            f"the key tags are not numbered {KEY_TAG_PREFIX}0 to {KEY_TAG_PREFIX}"
            f"{len(parts) - 1} without a gap"
        )
    if len(parts) > MAX_KEY_TAGS:
        raise PublishedKeyError(f"{len(parts)} key tags: at most {MAX_KEY_TAGS} (RSA-4096)")
    if any(len(value) > TAG_VALUE_MAX for value in parts.values()):
        raise PublishedKeyError(f"a key tag value is longer than {TAG_VALUE_MAX} characters")
    text = "".join(parts[index] for index in range(len(parts)))
    return to_pem(decode(text))


def decode(text: str) -> bytes:
    """The DER of a canonical standard base64 text (with padding, no blanks)."""
    if not _BASE64.fullmatch(text) or len(text) % 4:
        raise PublishedKeyError("the key tags are not standard base64 with padding")
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PublishedKeyError("the key tags are not standard base64") from None
    if base64.b64encode(der).decode("ascii") != text:
        raise PublishedKeyError("the key tags are not canonical base64")
    return der


def to_pem(der: bytes) -> str:
    """Check that ``der`` is an accepted RSA SubjectPublicKeyInfo; its PEM as salt-key
    writes it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # (an unknown algorithm OID)
        raise PublishedKeyError(f"the key tags hold no DER public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise PublishedKeyError("the key tags hold a public key that is not RSA")
    if key.key_size not in KEY_SIZES:
        sizes = "/".join(str(size) for size in sorted(KEY_SIZES))
        raise PublishedKeyError(f"the key tags hold an RSA-{key.key_size} key, not {sizes}")
    if key.public_numbers().e != PUBLIC_EXPONENT:
        raise PublishedKeyError("the key tags hold an RSA key whose exponent is not 65537")
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != der:  # PKCS#1 RSAPublicKey (cryptography reads it too), or not canonical
        raise PublishedKeyError(
            "the key tags hold a DER key that is not a canonical SubjectPublicKeyInfo"
            " (PKCS#1 RSAPublicKey, or a non-canonical encoding)"
        )
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def to_tags(pem: str) -> dict[str, str]:
    """The key tags for a public key (PEM, SubjectPublicKeyInfo): what the instance-side
    script publishes (tests use it; the script does the same with openssl and cut)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(pem.encode("ascii"))
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b64encode(der).decode("ascii")
    chunks = [text[i : i + TAG_VALUE_MAX] for i in range(0, len(text), TAG_VALUE_MAX)]
    return {f"{KEY_TAG_PREFIX}{index}": chunk for index, chunk in enumerate(chunks)}


def same_key(first: str, second: str) -> bool:
    """Are these the same key as Salt compares them (``clean_key``: whitespace stripped)?"""
    return "".join(first.split()) == "".join(second.split())


def key_id(pem: str) -> str:
    """A short name for a key in the accepted-keys index (sha256 of its text without
    whitespace, as Salt compares keys)."""
    return hashlib.sha256("".join(pem.split()).encode("ascii", "replace")).hexdigest()
