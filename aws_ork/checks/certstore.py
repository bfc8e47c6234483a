"""SNS signing certificates: where they are cached, how they are fetched, which fetches failed.

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

import logging
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from aws_ork import defaults
from aws_ork.base.files import write_atomic
from aws_ork.base.text import shorten
from aws_ork.checks.certurl import check_cert_url
from aws_ork.defaults import FETCH_TIMEOUT_SECONDS as FETCH_TIMEOUT_SECONDS
from aws_ork.defaults import MAX_CERT_BYTES as MAX_CERT_BYTES

#: The certificate log lines keep the logger name they had before this module was split out
#: of :mod:`aws_ork.checks.signature` (log filters name it).
log = logging.getLogger("aws_ork.checks.signature")


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


class Reject(Exception):
    """A certificate (or an envelope) refused for good: the text is the verdict's reason."""


class Unavailable(Reject):
    """The certificate could not be fetched for now (network, timeout, 5xx): a retry."""


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
                raise Reject(
                    f"{entry.reason} (failed {entry.failures} time(s): certificate refused for "
                    f"{self.memory_seconds - elapsed:.0f} s more)"
                )
            wait = self.window(entry.failures) - elapsed
            if wait > 0:
                raise Unavailable(
                    f"{entry.reason} (failure {entry.failures} of {self.limit}; "
                    f"next fetch in {wait:.0f} s)"
                )

    def failed(self, url: str, now: datetime, reason: str, *, final: bool) -> Reject:
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
                return Reject(f"{reason} (failed {entry.failures} time(s): giving up)")
            return Unavailable(
                f"{reason} (failure {entry.failures} of {self.limit}; "
                f"next fetch in {self.window(entry.failures):.0f} s)"
            )

    def forget(self, url: str) -> None:
        """url was fetched: its failures no longer count."""
        with self._lock:
            self._table.pop(url, None)


class CertStore:
    """SNS signing certificates by URL: in memory, else under ``cert_cache_dir``, else fetched
    once (and written there); the fetches that failed are remembered in ``failures``.

    ``fetch`` gets the URL's body (:func:`https_fetch`, or a fake in tests); ``clock`` is
    the verifier's (an aware UTC datetime). Thread-safe."""

    def __init__(
        self,
        cert_cache_dir: Path | str,
        *,
        fetch: Callable[[str], bytes],
        clock: Callable[[], datetime],
        failures: CertFailures | None = None,
    ) -> None:
        self.cert_cache_dir = Path(cert_cache_dir)
        self._fetch = fetch
        self._clock = clock
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()
        self.failures = failures if failures is not None else CertFailures()

    def get(self, url: str) -> x509.Certificate:
        """The certificate at an acceptable URL, valid now: from memory, CertCacheDir or
        one fetch; Reject (final) or Unavailable (retry) otherwise."""
        with self._lock:
            cert = self._certs.get(url)
        if cert is None:
            cert = self._load(url)
            self.failures.forget(url)  # fetched, or put in the cache dir by hand
            with self._lock:
                self._certs[url] = cert
        now = self._clock()
        if now < cert.not_valid_before_utc:
            raise Reject("certificate not yet valid")
        if now > cert.not_valid_after_utc:
            raise Reject("certificate expired")
        return cert

    def _load(self, url: str) -> x509.Certificate:
        """From CertCacheDir if there (no fetch), else fetched and cached there."""
        path = cert_cache_path(self.cert_cache_dir, url)
        if path.is_file():
            try:
                with path.open("rb") as f:
                    pem = f.read(MAX_CERT_BYTES + 1)
            except OSError as e:
                raise Reject(f"certificate cache read failed: {e}") from None
            return _parse(pem, f"cached certificate {path}")
        self.failures.check(url, self._clock())  # failed lately: answer without a fetch
        try:
            pem = self._fetch(url)
        except Exception as e:
            log.debug("fetch of %s failed", url, exc_info=True)
            # the network or AWS failing may pass; an answer of "no such certificate" will not
            transient = isinstance(e, OSError) and not (
                isinstance(e, urllib.error.HTTPError) and e.code < 500
            )
            reason = f"certificate fetch failed: {type(e).__name__}: {shorten(str(e), 160)}"
            raise self.failures.failed(url, self._clock(), reason, final=not transient) from None
        try:
            cert = _parse(pem, "fetched certificate")
        except Reject as e:  # AWS served something else: as final as a 404
            raise self.failures.failed(url, self._clock(), str(e), final=True) from None
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
