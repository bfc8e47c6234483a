"""Verify the AWS signature on SNS envelopes before trusting what they say.

Anyone allowed to send to the SQS queue can forge an Auto Scaling notification and get a key
accepted. SNS signs every envelope: AWS specifies a string to sign made of fixed fields in a fixed
order, each as ``Name\\nValue\\n`` (Notification: Message, MessageId, Subject if present,
Timestamp, TopicArn, Type; (Un)SubscriptionConfirmation: Message, MessageId, SubscribeURL,
Timestamp, Token, TopicArn, Type), signed with RSA PKCS#1 v1.5 over SHA1 (SignatureVersion "1")
or SHA256 ("2"), by the key of the X.509 certificate at ``SigningCertURL``.

The certificate URL comes from the message itself: which URLs are accepted is the policy of
:mod:`aws_ork.checks.certurl`; fetching, caching and remembering failed fetches is
:mod:`aws_ork.checks.certstore`. Rules of this module:

* with ``max_age_seconds``, the signed Timestamp (``2026-11-23T10:00:00.123Z``, UTC, as SNS writes
  it) must be at most that old and at most SNS_TIMESTAMP_SKEW_SECONDS in the future, so a
  captured genuine envelope cannot be replayed for ever; checked after the signature, so a forged
  envelope is still reported as "bad signature";
* a field that is present but not a str (None included, also for Subject) is rejected.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aws_ork import defaults
from aws_ork.base.text import shorten
from aws_ork.checks.certstore import (
    FETCH_TIMEOUT_SECONDS,
    CertFailures,
    CertStore,
    Reject,
    Unavailable,
    https_fetch,
)
from aws_ork.checks.certurl import TOPIC_ARN_RE, check_cert_url
from aws_ork.checks.verdict import Verdict

log = logging.getLogger(__name__)

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_FIELDS = {
    "Notification": _NOTIFICATION,
    "SubscriptionConfirmation": _CONFIRMATION,
    "UnsubscribeConfirmation": _CONFIRMATION,
}
_OPTIONAL = frozenset({"Subject"})

_TIMESTAMP_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})T(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?Z",
    re.ASCII,
)


def _parse_timestamp(value: str) -> datetime:
    """An SNS Timestamp as an aware UTC datetime; ValueError for anything else.

    Strict on purpose (datetime.fromisoformat also takes dates alone, offsets, week dates): SNS
    always writes ``YYYY-MM-DDTHH:MM:SS[.fff]Z``, and this value decides a rejection."""
    match = _TIMESTAMP_RE.fullmatch(value)
    if match is None:
        raise ValueError("not YYYY-MM-DDTHH:MM:SS[.fff]Z")
    stamp = datetime.fromisoformat(f"{match['date']}T{match['time']}")
    micros = int((match["fraction"] or "0").ljust(6, "0")[:6])
    return stamp.replace(microsecond=micros, tzinfo=UTC)


def _field(envelope: Mapping[str, object], name: str) -> str:
    if name not in envelope:
        raise ValueError(f"missing field {name!r}")
    value = envelope[name]
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} is not a string")
    return value


def string_to_sign(envelope: Mapping[str, object]) -> bytes:
    """The bytes SNS signed; ValueError(reason) on a missing/mistyped field or unknown Type."""
    kind = _field(envelope, "Type")
    if kind not in _FIELDS:
        raise ValueError(f"unknown Type {shorten(kind, 80)}")
    parts = []
    for name in _FIELDS[kind]:
        if name in _OPTIONAL and name not in envelope:
            continue
        parts.append(f"{name}\n{_field(envelope, name)}\n")
    return "".join(parts).encode("utf-8")


class SignatureVerifier:
    """Checks SNS envelopes; the signing certificates come from ``certs`` (a
    :class:`~aws_ork.checks.certstore.CertStore` over cert_cache_dir).

    ``cert_failures`` remembers certificate URLs that could not be fetched (see
    :class:`CertFailures`; ``len()`` of it is the number of URLs remembered)."""

    def __init__(
        self,
        cert_cache_dir: Path | str,
        *,
        fetch: Callable[[str], bytes] | None = None,
        timeout: float = FETCH_TIMEOUT_SECONDS,
        clock: Callable[[], datetime] | None = None,
        cert_failures: CertFailures | None = None,
        allowed_regions: Collection[str] | None = None,
        max_age_seconds: float | None = None,
    ) -> None:
        """``allowed_regions``: the regions a SigningCertURL may name (None or containing
        ``*``: any); an empty collection refuses every certificate. ``max_age_seconds``: the
        oldest signed Timestamp accepted, by ``clock`` (None: Timestamp not checked)."""
        if max_age_seconds is not None and not max_age_seconds > 0:  # NaN included
            raise ValueError("max_age_seconds must be > 0 (or None)")
        if isinstance(allowed_regions, str):  # "us-east-1" would otherwise allow 'u', 's', ...
            raise TypeError("allowed_regions must be a collection of region names, not a str")
        self._clock = clock or (lambda: datetime.now(UTC))
        self.certs = CertStore(
            cert_cache_dir,
            fetch=fetch or (lambda url: https_fetch(url, timeout)),
            clock=self._now,
            failures=cert_failures,
        )
        self.cert_cache_dir = self.certs.cert_cache_dir
        self.cert_failures = self.certs.failures
        self.allowed_regions: frozenset[str] | None = (
            None
            if allowed_regions is None or "*" in allowed_regions
            else frozenset(allowed_regions)
        )
        self.max_age_seconds = max_age_seconds

    def _now(self) -> datetime:
        """The injected clock, a naive datetime taken as UTC."""
        now = self._clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def verify(self, envelope: Mapping[str, object]) -> Verdict:
        """Verdict(True) only for an envelope carrying a valid SNS signature; never raises."""
        try:
            self._verify(envelope)
        except Unavailable as e:
            return Verdict(False, str(e), retry=True)
        except (Reject, ValueError) as e:  # ValueError: string_to_sign, check_cert_url
            return Verdict(False, str(e))
        except Exception as e:
            log.debug("signature check failed unexpectedly", exc_info=True)
            detail = shorten(str(e), 160)  # may echo message content
            return Verdict(False, f"signature check error: {type(e).__name__}: {detail}")
        return Verdict(True, "signature ok")

    def _verify(self, envelope: Mapping[str, object]) -> None:
        if not isinstance(envelope, Mapping):
            raise Reject("envelope is not a JSON object")
        if "SignatureVersion" not in envelope:
            raise Reject("missing field 'SignatureVersion'")
        version = envelope["SignatureVersion"]
        if not isinstance(version, str) or version not in _HASHES:
            raise Reject(f"unsupported SignatureVersion {shorten(version, 80)}")
        encoded = _field(envelope, "Signature")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise Reject("Signature is not valid base64") from None
        if not signature:
            raise Reject("empty Signature")
        data = string_to_sign(envelope)
        url = _field(envelope, "SigningCertURL")
        host = check_cert_url(url)
        topic = TOPIC_ARN_RE.match(_field(envelope, "TopicArn"))
        host_region = host.split(".")[1]
        if topic and topic["region"] != host_region:
            raise Reject(
                f"SigningCertURL region {shorten(host_region, 80)} differs from TopicArn region "
                f"{shorten(topic['region'], 80)}"
            )
        if self.allowed_regions is not None and host_region not in self.allowed_regions:
            raise Reject(
                f"SigningCertURL region {shorten(host_region, 80)} is not the region of an allowed "
                f"topic"
            )
        key = self.certs.get(url).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Reject("certificate key is not RSA")
        try:
            key.verify(signature, data, padding.PKCS1v15(), _HASHES[version]())
        except InvalidSignature:
            raise Reject("bad signature") from None
        if self.max_age_seconds is not None:
            self._check_age(_field(envelope, "Timestamp"), self.max_age_seconds)

    def _check_age(self, value: str, max_age: float) -> None:
        """Refuse a signed Timestamp older than max_age or too far in the future."""
        try:
            sent = _parse_timestamp(value)
        except ValueError:
            raise Reject(f"Timestamp {shorten(value, 80)} is not an SNS UTC time") from None
        age = (self._now() - sent).total_seconds()
        if age > max_age:
            raise Reject(
                f"Timestamp {shorten(value, 80)} is {age:.0f} s old, more than the "
                f"{max_age:g} s allowed"
            )
        if -age > defaults.SNS_TIMESTAMP_SKEW_SECONDS:
            raise Reject(
                f"Timestamp {shorten(value, 80)} is {-age:.0f} s in the future, more than the "
                f"{defaults.SNS_TIMESTAMP_SKEW_SECONDS:g} s of clock skew allowed"
            )
