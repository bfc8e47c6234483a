"""Verify the AWS signature on SNS envelopes before trusting what they say.

Anyone allowed to send to the SQS queue can forge an Auto Scaling notification and get a key
accepted. SNS signs every envelope: AWS specifies a string to sign made of fixed fields in a fixed
order, each as ``Name\\nValue\\n`` (Notification: Message, MessageId, Subject if present,
Timestamp, TopicArn, Type; (Un)SubscriptionConfirmation: Message, MessageId, SubscribeURL,
Timestamp, Token, TopicArn, Type), signed with RSA PKCS#1 v1.5 over SHA1 (SignatureVersion "1")
or SHA256 ("2"), by the key of the X.509 certificate at ``SigningCertURL``.

The certificate URL comes from the message itself, so it is the attack surface: a forger names a
certificate of their own. We therefore accept only ``https://sns.<region>.amazonaws.com[.cn]/
SimpleNotificationService-<alnum>.pem``, checked component by component with urllib.parse and
again by a regex anchored on the whole URL. Rules chosen here:

* no explicit port at all (not even ``:443``), no user info, query, fragment, percent-escapes,
  backslashes, upper case or trailing dot; ``.amazonaws.com.cn`` only for ``cn-*`` regions;
* region: ``[a-z]{2}(-gov)?-[a-z]+-[0-9]{1,2}`` (us-east-1, us-gov-west-1, cn-northwest-1 ...);
* if TopicArn is an SNS ARN naming a region, the certificate's region must equal it;
* with ``allowed_regions`` (the regions of AllowedTopicArns, see :func:`regions_of`), the
  certificate's region must be one of them: an invented region is refused before any fetch;
* with ``max_age_seconds``, the signed Timestamp (``2026-11-23T10:00:00.123Z``, UTC, as SNS writes
  it) must be at most that old and at most SNS_TIMESTAMP_SKEW_SECONDS in the future, so a
  captured genuine envelope cannot be replayed for ever; checked after the signature, so a forged
  envelope is still reported as "bad signature";
* a field that is present but not a str (None included, also for Subject) is rejected.

Certificates are fetched over verified TLS (no redirects, short timeout, size limit), must be
valid now, and are cached in memory and under CertCacheDir at ``<dir>/<host>/<file name>``; a
file already there is used without any fetch (air-gapped masters, tests), its dates still checked.

A certificate that cannot be fetched is the other attack surface (queue poisoning): a network
failure may be an AWS blip, so the message is retried, but an invented region never resolves and
a retried message comes back every minute. Failures are therefore remembered per URL in a small
bounded table (:class:`CertFailures`, tunables ``CERT_FAILURE_*`` in :mod:`aws_ork.defaults`):
while a URL is in its back-off window it is answered at once without a fetch ("retry" while it
has attempts left), and after ``CERT_FAILURE_LIMIT`` failures spread over minutes it is refused
for good. An answer from AWS that is no certificate (HTTP 4xx, not PEM) is final at once and
remembered the same way. A successful fetch forgets the URL.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aws_ork import defaults
from aws_ork.base.files import write_atomic
from aws_ork.base.text import shorten
from aws_ork.checks.verdict import Verdict

log = logging.getLogger(__name__)

#: largest certificate we read, from the network or the cache dir.
MAX_CERT_BYTES = 64 * 1024
FETCH_TIMEOUT_SECONDS = 5.0

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_FIELDS = {
    "Notification": _NOTIFICATION,
    "SubscriptionConfirmation": _CONFIRMATION,
    "UnsubscribeConfirmation": _CONFIRMATION,
}
_OPTIONAL = frozenset({"Subject"})

_REGION = r"[a-z]{2}(?:-gov)?-[a-z]+-[0-9]{1,2}"
_HOST_RE = re.compile(rf"sns\.(?P<region>{_REGION})\.amazonaws\.com(?P<cn>\.cn)?", re.ASCII)
_PATH_RE = re.compile(r"/SimpleNotificationService-[A-Za-z0-9]{1,64}\.pem", re.ASCII)
_URL_RE = re.compile(rf"https://{_HOST_RE.pattern}{_PATH_RE.pattern}", re.ASCII)
_FORBIDDEN = frozenset(" \\%[]")  # space, backslash, percent-escapes, IPv6 literals
_TOPIC_ARN_RE = re.compile(r"arn:[a-z-]+:sns:(?P<region>[^:]+):", re.ASCII)
_TIMESTAMP_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})T(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?Z",
    re.ASCII,
)


def regions_of(topic_arns: Iterable[str]) -> frozenset[str] | None:
    """The regions of the SNS topics named, for ``SignatureVerifier(allowed_regions=...)``.

    None (no restriction) when no topic is named or ``*`` is among them, as AllowedTopicArns
    then restricts nothing either. An entry that is no SNS ARN with a valid region adds no
    region: it matches no genuine envelope, so it must not open a region either.
    """
    arns = [topic_arns] if isinstance(topic_arns, str) else list(topic_arns)
    if not arns or "*" in arns:
        return None
    regions = set()
    for arn in arns:
        match = _TOPIC_ARN_RE.match(arn)
        if match and re.fullmatch(_REGION, match["region"], re.ASCII):
            regions.add(match["region"])
    return frozenset(regions)


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


def check_cert_url(url: object) -> str:
    """Return the host of an acceptable SNS SigningCertURL; ValueError(reason) otherwise."""
    if not isinstance(url, str):
        raise ValueError("field 'SigningCertURL' is not a string")
    if not url.isascii() or not url.isprintable() or not _FORBIDDEN.isdisjoint(url):
        raise ValueError(f"SigningCertURL {shorten(url, 80)} has forbidden characters")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:
        raise ValueError(
            f"SigningCertURL {shorten(url, 80)} does not parse: {shorten(str(e), 80)}"
        ) from None
    if parts.scheme != "https":
        raise ValueError(f"SigningCertURL scheme {shorten(parts.scheme, 80)} is not https")
    if "@" in parts.netloc:
        raise ValueError("SigningCertURL has user info")
    if ":" in parts.netloc:
        raise ValueError("SigningCertURL has an explicit port")
    host_match = _HOST_RE.fullmatch(parts.netloc)
    if host_match is None:
        raise ValueError(f"SigningCertURL host {shorten(parts.netloc, 80)} is not an SNS host")
    if bool(host_match["cn"]) != host_match["region"].startswith("cn-"):
        raise ValueError(f"SigningCertURL host {shorten(parts.netloc, 80)} is not an SNS host")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("SigningCertURL has a query or fragment")
    if _PATH_RE.fullmatch(parts.path) is None:
        raise ValueError(f"SigningCertURL path {shorten(parts.path, 80)} is not an SNS certificate")
    if _URL_RE.fullmatch(url) is None:  # second gate over the whole string
        raise ValueError(f"SigningCertURL {shorten(url, 80)} is not an SNS certificate URL")
    return parts.netloc


def cert_cache_path(cert_cache_dir: Path, url: str) -> Path:
    """``<dir>/<host>/<file name>`` for an acceptable URL (ValueError otherwise)."""
    host = check_cert_url(url)
    return Path(cert_cache_dir) / host / urllib.parse.urlsplit(url).path.rsplit("/", 1)[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise urllib.error.HTTPError(newurl, code, f"refusing redirect: {msg}", headers, fp)


def https_fetch(url: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> bytes:
    """GET url over TLS verified against the system CAs; no redirects, at most MAX_CERT_BYTES."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl.create_default_context()), _NoRedirect
    )
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read(MAX_CERT_BYTES + 1)
    if len(body) > MAX_CERT_BYTES:
        raise ValueError(f"response larger than {MAX_CERT_BYTES} bytes")
    return body


class _Reject(Exception):
    """Internal: carries a verdict reason out of a helper."""


class _Unavailable(_Reject):
    """Internal: the certificate could not be fetched for now (network, timeout, 5xx)."""


@dataclass(slots=True)
class _Failure:
    failures: int  # failed fetches counted, at most one per back-off window
    last: datetime  # when the last counted failure happened (the verifier's clock)
    reason: str  # the last failure, already shortened
    final: bool  # AWS answered, and not with a certificate: no attempt left


class CertFailures:
    """Certificate URLs whose fetch failed: {url: (failures, last failure, reason)}.

    Thread-safe and bounded: at most ``size`` URLs, the least recently failed forgotten first
    (forgetting only grants fresh attempts, and memory must not grow with a flood of made-up
    URLs). Times come from the verifier's clock; an entry dated in the future (the clock was set
    back) is forgotten rather than trusted, so a clock step cannot lock a URL out.
    """

    def __init__(
        self,
        *,
        limit: int = defaults.CERT_FAILURE_LIMIT,
        backoff_seconds: float = defaults.CERT_FAILURE_BACKOFF_SECONDS,
        memory_seconds: float = defaults.CERT_FAILURE_MEMORY_SECONDS,
        size: int = defaults.CERT_FAILURE_TABLE_SIZE,
    ) -> None:
        if limit < 1 or size < 1 or not backoff_seconds > 0:
            raise ValueError("limit and size must be >= 1 and backoff_seconds > 0")
        self.limit = limit
        self.backoff_seconds = backoff_seconds
        self.memory_seconds = memory_seconds
        self.size = size
        # else an entry would be forgotten before its next attempt and never reach the limit
        if not memory_seconds > self.window(limit - 1):
            raise ValueError(
                f"memory_seconds must exceed the longest back-off window "
                f"({self.window(limit - 1):g} s)"
            )
        self._table: OrderedDict[str, _Failure] = OrderedDict()  # least recently failed first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)

    def window(self, failures: int) -> float:
        """Seconds without a fetch after the ``failures``-th failure: BACKOFF * 2**(n-1)."""
        return defaults.backoff(failures, self.backoff_seconds, float("inf"))

    def _live(self, url: str, now: datetime) -> tuple[_Failure, float] | None:
        """The entry for url and its age in seconds, dropping it if stale; caller holds lock."""
        entry = self._table.get(url)
        if entry is None:
            return None
        elapsed = (now - entry.last).total_seconds()
        if elapsed < 0 or elapsed >= self.memory_seconds:
            del self._table[url]
            return None
        return entry, elapsed

    def check(self, url: str, now: datetime) -> None:
        """Return if url may be fetched now; else raise the remembered answer, at once."""
        with self._lock:
            live = self._live(url, now)
            if live is None:
                return
            entry, elapsed = live
            if entry.final or entry.failures >= self.limit:
                raise _Reject(
                    f"{entry.reason} (failed {entry.failures} time(s): certificate refused for "
                    f"{self.memory_seconds - elapsed:.0f} s more)"
                )
            wait = self.window(entry.failures) - elapsed
            if wait > 0:
                raise _Unavailable(
                    f"{entry.reason} (failure {entry.failures} of {self.limit}; "
                    f"next fetch in {wait:.0f} s)"
                )

    def failed(self, url: str, now: datetime, reason: str, *, final: bool) -> _Reject:
        """Count a failed fetch of url; the exception for the verdict (final or retry)."""
        with self._lock:
            live = self._live(url, now)
            if live is None:
                entry = self._table[url] = _Failure(1, now, reason, final)
            else:
                entry, elapsed = live
                # a fetch started before another one's failure was recorded (threads) is the
                # same attempt: one failure per window, so the limit still spans minutes
                if elapsed >= self.window(entry.failures) or final:
                    entry.failures += 1
                entry.last, entry.reason, entry.final = now, reason, entry.final or final
                self._table.move_to_end(url)
            while len(self._table) > self.size:
                self._table.popitem(last=False)
            if entry.final or entry.failures >= self.limit:
                return _Reject(f"{reason} (failed {entry.failures} time(s): giving up)")
            return _Unavailable(
                f"{reason} (failure {entry.failures} of {self.limit}; "
                f"next fetch in {self.window(entry.failures):.0f} s)"
            )

    def forget(self, url: str) -> None:
        """url was fetched: its failures no longer count."""
        with self._lock:
            self._table.pop(url, None)


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
        except _Unavailable as e:
            return Verdict(False, str(e), retry=True)
        except (_Reject, ValueError) as e:  # ValueError: string_to_sign, check_cert_url
            return Verdict(False, str(e))
        except Exception as e:
            log.debug("signature check failed unexpectedly", exc_info=True)
            detail = shorten(str(e), 160)  # may echo message content
            return Verdict(False, f"signature check error: {type(e).__name__}: {detail}")
        return Verdict(True, "signature ok")

    def _verify(self, envelope: Mapping[str, object]) -> None:
        if not isinstance(envelope, Mapping):
            raise _Reject("envelope is not a JSON object")
        if "SignatureVersion" not in envelope:
            raise _Reject("missing field 'SignatureVersion'")
        version = envelope["SignatureVersion"]
        if not isinstance(version, str) or version not in _HASHES:
            raise _Reject(f"unsupported SignatureVersion {shorten(version, 80)}")
        encoded = _field(envelope, "Signature")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _Reject("Signature is not valid base64") from None
        if not signature:
            raise _Reject("empty Signature")
        data = string_to_sign(envelope)
        url = _field(envelope, "SigningCertURL")
        host = check_cert_url(url)
        topic = _TOPIC_ARN_RE.match(_field(envelope, "TopicArn"))
        host_region = host.split(".")[1]
        if topic and topic["region"] != host_region:
            raise _Reject(
                f"SigningCertURL region {shorten(host_region, 80)} differs from TopicArn region "
                f"{shorten(topic['region'], 80)}"
            )
        if self.allowed_regions is not None and host_region not in self.allowed_regions:
            raise _Reject(
                f"SigningCertURL region {shorten(host_region, 80)} is not the region of an allowed "
                f"topic"
            )
        key = self._certificate(url).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise _Reject("certificate key is not RSA")
        try:
            key.verify(signature, data, padding.PKCS1v15(), _HASHES[version]())
        except InvalidSignature:
            raise _Reject("bad signature") from None
        if self.max_age_seconds is not None:
            self._check_age(_field(envelope, "Timestamp"), self.max_age_seconds)

    def _check_age(self, value: str, max_age: float) -> None:
        """Refuse a signed Timestamp older than max_age or too far in the future."""
        try:
            sent = _parse_timestamp(value)
        except ValueError:
            raise _Reject(f"Timestamp {shorten(value, 80)} is not an SNS UTC time") from None
        age = (self._now() - sent).total_seconds()
        if age > max_age:
            raise _Reject(
                f"Timestamp {shorten(value, 80)} is {age:.0f} s old, more than the "
                f"{max_age:g} s allowed"
            )
        if -age > defaults.SNS_TIMESTAMP_SKEW_SECONDS:
            raise _Reject(
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
            raise _Reject("certificate not yet valid")
        if now > cert.not_valid_after_utc:
            raise _Reject("certificate expired")
        return cert

    def _load(self, url: str) -> x509.Certificate:
        path = cert_cache_path(self.cert_cache_dir, url)
        if path.is_file():
            try:
                with path.open("rb") as f:
                    pem = f.read(MAX_CERT_BYTES + 1)
            except OSError as e:
                raise _Reject(f"certificate cache read failed: {e}") from None
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
        except _Reject as e:  # AWS served something else: as final as a 404
            raise self.cert_failures.failed(url, self._now(), str(e), final=True) from None
        log.info("fetched SNS signing certificate %s", url)
        try:
            write_atomic(path, pem)
        except OSError:
            log.warning("could not cache certificate at %s", path, exc_info=True)
        return cert


def _parse(pem: object, what: str) -> x509.Certificate:
    if not isinstance(pem, bytes) or len(pem) > MAX_CERT_BYTES:
        raise _Reject(f"{what} is not PEM bytes of at most {MAX_CERT_BYTES} bytes")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise _Reject(f"{what} is not a PEM X.509 certificate") from None
