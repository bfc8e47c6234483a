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
import threading
import urllib.error
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aws_ork import defaults
from aws_ork.base.files import write_atomic
from aws_ork.base.text import shorten
from aws_ork.checks.certstore import (
    FETCH_TIMEOUT_SECONDS,
    MAX_CERT_BYTES,
    CertFailures,
    Reject,
    Unavailable,
    cert_cache_path,
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
    """Checks SNS envelopes; caches signing certificates in memory and under cert_cache_dir.

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
        self.cert_cache_dir = Path(cert_cache_dir)
        self._fetch = fetch or (lambda url: https_fetch(url, timeout))
        self._clock = clock or (lambda: datetime.now(UTC))
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()
        self.cert_failures = cert_failures if cert_failures is not None else CertFailures()
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
        key = self._certificate(url).public_key()
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

    def _certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cert = self._certs.get(url)
        if cert is None:
            cert = self._load(url)
            self.cert_failures.forget(url)  # fetched, or put in the cache dir by hand
            with self._lock:
                self._certs[url] = cert
        now = self._now()
        if now < cert.not_valid_before_utc:
            raise Reject("certificate not yet valid")
        if now > cert.not_valid_after_utc:
            raise Reject("certificate expired")
        return cert

    def _load(self, url: str) -> x509.Certificate:
        path = cert_cache_path(self.cert_cache_dir, url)
        if path.is_file():
            try:
                with path.open("rb") as f:
                    pem = f.read(MAX_CERT_BYTES + 1)
            except OSError as e:
                raise Reject(f"certificate cache read failed: {e}") from None
            return _parse(pem, f"cached certificate {path}")
        self.cert_failures.check(url, self._now())  # failed lately: answer without a fetch
        try:
            pem = self._fetch(url)
        except Exception as e:
            log.debug("fetch of %s failed", url, exc_info=True)
            # the network or AWS failing may pass; an answer of "no such certificate" will not
            transient = isinstance(e, OSError) and not (
                isinstance(e, urllib.error.HTTPError) and e.code < 500
            )
            reason = f"certificate fetch failed: {type(e).__name__}: {shorten(str(e), 160)}"
            raise self.cert_failures.failed(url, self._now(), reason, final=not transient) from None
        try:
            cert = _parse(pem, "fetched certificate")
        except Reject as e:  # AWS served something else: as final as a 404
            raise self.cert_failures.failed(url, self._now(), str(e), final=True) from None
        log.info("fetched SNS signing certificate %s", url)
        try:
            write_atomic(path, pem)
        except OSError:
            log.warning("could not cache certificate at %s", path, exc_info=True)
        return cert


def _parse(pem: object, what: str) -> x509.Certificate:
    if not isinstance(pem, bytes) or len(pem) > MAX_CERT_BYTES:
        raise Reject(f"{what} is not PEM bytes of at most {MAX_CERT_BYTES} bytes")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Reject(f"{what} is not a PEM X.509 certificate") from None
