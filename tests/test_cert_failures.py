"""Certificate fetch failures are bounded and remembered (queue poisoning through certificates).

No network and no wall-clock thresholds: ``fetch`` and ``clock`` are injected, costs are counted
as fetch calls, and time is a number the test moves.
"""

from __future__ import annotations

import json
import string
import threading
import urllib.error
from collections import Counter
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aws_ork import defaults
from aws_ork.checks.certstore import CertFailures
from aws_ork.checks.certurl import regions_of
from aws_ork.checks.signature import SignatureVerifier, Verdict
from tests.snssign import (
    SigningIdentity,
    make_cert,
    make_key,
    make_signing_identity,
    sign_envelope,
)

FIXTURE = Path(__file__).parent / "fixtures" / "messages" / "sns-asg-launch.json"
LIMIT = defaults.CERT_FAILURE_LIMIT
BACKOFF = defaults.CERT_FAILURE_BACKOFF_SECONDS
MEMORY = defaults.CERT_FAILURE_MEMORY_SECONDS


class Clock:
    """The verifier's clock, moved by hand."""

    def __init__(self) -> None:
        # a start inside the test certificates' validity; whole seconds keep ages exact
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Fetch:
    """An injected fetch: serves the PEMs it knows, raises ``error`` for every other URL."""

    def __init__(self, error: Exception | None = None, known: dict[str, bytes] | None = None):
        self.calls: list[str] = []
        self.error = error or OSError("[Errno -2] Name or service not known")
        self.known = dict(known or {})
        self._lock = threading.Lock()

    def __call__(self, url: str) -> bytes:
        with self._lock:
            self.calls.append(url)
        if url in self.known:
            return self.known[url]
        raise self.error


def notification(region: str = "us-west-2") -> dict:
    envelope = json.loads(FIXTURE.read_text())
    for field in ("Signature", "SignatureVersion", "SigningCertURL"):
        envelope.pop(field)
    envelope["TopicArn"] = f"arn:aws:sns:{region}:123456789012:salt-master-asg-events"
    return envelope


def made_up_region(i: int) -> str:
    """A distinct region that passes the URL rules but does not exist (NXDOMAIN)."""
    letters = string.ascii_lowercase
    return f"zz-{letters[i // 26 % 26]}{letters[i % 26]}fake-1"


ATTACKER_KEY = make_key()  # one key for all forgeries: RSA key generation is the slow part
ATTACKER_CERT = make_cert(ATTACKER_KEY)


def forged(tmp_path: Path, region: str) -> dict:
    """An envelope signed by an attacker's key, naming a certificate URL in ``region``."""
    ident = make_signing_identity(
        tmp_path, region=region, key=ATTACKER_KEY, cert=ATTACKER_CERT, write=False
    )
    return sign_envelope(notification(region), ident)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> SigningIdentity:
    """The test CA's certificate, already in the cache dir (no fetch needed)."""
    return make_signing_identity(tmp_path_factory.mktemp("certs"))


def verifier_for(
    genuine: SigningIdentity,
    fetch: Fetch,
    clock: Clock,
    *,
    allowed_regions: Collection[str] | None = None,
    **table: int | float,
) -> SignatureVerifier:
    cache_dir = genuine.cert_path.parent.parent
    failures = CertFailures(**table) if table else None  # type: ignore[arg-type]
    return SignatureVerifier(
        cache_dir,
        fetch=fetch,
        clock=clock,
        cert_failures=failures,
        allowed_regions=allowed_regions,
    )


def assert_retry(verdict: Verdict, *fragments: str) -> None:
    assert not verdict.ok and verdict.retry, verdict
    for fragment in fragments:
        assert fragment in verdict.reason, verdict.reason


def assert_final(verdict: Verdict, *fragments: str) -> None:
    assert not verdict.ok and not verdict.retry, verdict
    for fragment in fragments:
        assert fragment in verdict.reason, verdict.reason


# --- one failing URL --------------------------------------------------------------------------


def test_network_failure_backs_off_then_is_final(tmp_path, genuine, clock) -> None:
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock)
    envelope = forged(tmp_path, "zz-nowhere-1")

    assert_retry(
        verifier.verify(envelope), "certificate fetch failed", "OSError", f"failure 1 of {LIMIT}"
    )
    assert len(fetch.calls) == 1
    clock.advance(BACKOFF - 1)  # redelivered inside the window: answered from memory
    assert_retry(verifier.verify(envelope), "Name or service not known", "next fetch in 1 s")
    assert len(fetch.calls) == 1

    clock.advance(1)  # window over: one more attempt
    assert_retry(verifier.verify(envelope), f"failure 2 of {LIMIT}")
    assert len(fetch.calls) == 2
    clock.advance(2 * BACKOFF - 1)  # the second window is twice as long
    assert_retry(verifier.verify(envelope))
    assert len(fetch.calls) == 2

    clock.advance(1)
    assert_final(verifier.verify(envelope), f"failed {LIMIT} time(s)", "giving up")
    assert len(fetch.calls) == LIMIT == 3
    # the failures spanned minutes: a short AWS blip does not reject genuine launches
    assert BACKOFF + 2 * BACKOFF >= 180

    for _ in range(5):  # refused without a fetch while remembered
        clock.advance((MEMORY - 1) / 5)
        assert_final(verifier.verify(envelope), "refused")
    assert len(fetch.calls) == LIMIT

    clock.advance(1)  # forgotten: fresh attempts
    assert_retry(verifier.verify(envelope), f"failure 1 of {LIMIT}")
    assert len(fetch.calls) == LIMIT + 1


def test_success_after_failure_clears_entry(tmp_path, genuine, clock) -> None:
    source = make_signing_identity(tmp_path / "elsewhere")  # not in the verifier's cache dir
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock)
    signed = sign_envelope(notification(), source)

    assert_retry(verifier.verify(signed))
    assert len(verifier.cert_failures) == 1
    fetch.known[source.cert_url] = source.pem  # AWS is back
    clock.advance(BACKOFF)
    assert verifier.verify(signed).ok
    assert len(verifier.cert_failures) == 0
    assert len(fetch.calls) == 2
    assert verifier.verify(signed).ok
    assert len(fetch.calls) == 2  # cached now


def test_failure_count_restarts_after_a_success(clock) -> None:
    table = CertFailures()
    url = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-a.pem"
    table.failed(url, clock(), "r", final=False)
    clock.advance(BACKOFF)
    table.failed(url, clock(), "r", final=False)
    table.forget(url)
    clock.advance(BACKOFF)
    assert "failure 1 of" in str(table.failed(url, clock(), "r", final=False))


def test_failures_far_apart_do_not_add_up(tmp_path, genuine, clock) -> None:
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock)
    envelope = forged(tmp_path, "zz-nowhere-1")
    for calls in range(1, 6):  # one blip an hour is never a rejection
        assert_retry(verifier.verify(envelope), f"failure 1 of {LIMIT}")
        assert len(fetch.calls) == calls
        clock.advance(MEMORY)


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.HTTPError("u", 404, "Not Found", None, None),  # type: ignore[arg-type]
        urllib.error.HTTPError("u", 403, "Forbidden", None, None),  # type: ignore[arg-type]
        ValueError("response larger than 65536 bytes"),
    ],
    ids=["404", "403", "too-big"],
)
def test_answer_that_is_no_certificate_is_final_and_remembered(
    tmp_path, genuine, clock, error
) -> None:
    fetch = Fetch(error=error)
    verifier = verifier_for(genuine, fetch, clock)
    envelope = forged(tmp_path, "us-west-2")
    assert_final(verifier.verify(envelope), "certificate fetch failed", type(error).__name__)
    clock.advance(BACKOFF * 10)
    assert_final(verifier.verify(envelope), "refused")
    assert len(fetch.calls) == 1


@pytest.mark.parametrize("error", [TimeoutError("timed out"), ConnectionResetError("reset")])
def test_timeouts_count_like_network_failures(tmp_path, genuine, clock, error) -> None:
    fetch = Fetch(error=error)
    verifier = verifier_for(genuine, fetch, clock)
    envelope = forged(tmp_path, "us-west-2")
    assert_retry(verifier.verify(envelope), type(error).__name__, str(error))


def test_server_error_is_transient(tmp_path, genuine, clock) -> None:
    error = urllib.error.HTTPError("u", 503, "Slow Down", None, None)  # type: ignore[arg-type]
    verifier = verifier_for(genuine, Fetch(error=error), clock)
    assert_retry(verifier.verify(forged(tmp_path, "us-west-2")), "HTTPError", "503")


def test_long_error_text_is_shortened_and_escaped(tmp_path, genuine, clock) -> None:
    fetch = Fetch(error=OSError("\x1b[31mred\n" + "x" * 1000))
    verdict = verifier_for(genuine, fetch, clock).verify(forged(tmp_path, "us-west-2"))
    assert_retry(verdict, "\\x1b[31mred\\n")
    assert "\n" not in verdict.reason and "\x1b" not in verdict.reason
    assert len(verdict.reason) < 300


# --- the flood --------------------------------------------------------------------------------


def test_flood_of_made_up_regions_is_bounded(tmp_path, genuine, clock) -> None:
    """200 envelopes naming 200 unreachable certificates, redelivered every 20 s (SQS), with
    genuine launches in between: every made-up URL is fetched LIMIT times, then the messages
    are refused for good; the genuine envelopes verify every time with no fetch at all, or one
    for a certificate not cached yet."""
    fresh = make_signing_identity(tmp_path / "aws")  # genuine, served by "AWS" once
    fetch = Fetch(known={fresh.cert_url: fresh.pem})
    verifier = verifier_for(genuine, fetch, clock)
    flood = {made_up_region(i): forged(tmp_path, made_up_region(i)) for i in range(200)}
    urls = {envelope["SigningCertURL"] for envelope in flood.values()}
    assert len(urls) == 200
    pending = dict(flood)
    genuine_signed = sign_envelope(notification(), genuine)
    fresh_signed = sign_envelope(notification(), fresh)

    rounds = 0
    while pending:
        rounds += 1
        assert rounds <= 20, "the flood never ends"
        for region, envelope in list(pending.items()):
            verdict = verifier.verify(envelope)
            assert not verdict.ok
            if not verdict.retry:
                assert "giving up" in verdict.reason or "refused" in verdict.reason
                del pending[region]  # a final rejection deletes the message
            before = len(fetch.calls)
            assert verifier.verify(genuine_signed).ok  # a real launch in the middle
            assert len(fetch.calls) == before
        assert verifier.verify(fresh_signed).ok
        assert len(verifier.cert_failures) <= defaults.CERT_FAILURE_TABLE_SIZE
        clock.advance(20)

    per_url = Counter(fetch.calls)
    assert set(per_url) == urls | {fresh.cert_url}
    assert per_url.pop(fresh.cert_url) == 1
    assert set(per_url.values()) == {LIMIT}
    assert len(fetch.calls) == 200 * LIMIT + 1
    # the flood is over after the back-off windows (60 + 120 s), not "never"
    assert rounds * 20 <= BACKOFF + 2 * BACKOFF + 20


def test_table_is_bounded_and_forgets_least_recent(tmp_path, genuine, clock) -> None:
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock, size=50)
    envelopes = [forged(tmp_path, made_up_region(i)) for i in range(200)]
    for envelope in envelopes:
        assert_retry(verifier.verify(envelope))
        assert len(verifier.cert_failures) <= 50
        clock.advance(0.01)
    assert len(verifier.cert_failures) == 50
    assert len(fetch.calls) == 200
    assert_retry(verifier.verify(envelopes[-1]))  # recent: remembered, no fetch
    assert len(fetch.calls) == 200
    assert_retry(verifier.verify(envelopes[0]))  # evicted: fresh attempt
    assert len(fetch.calls) == 201
    assert len(verifier.cert_failures) == 50
    assert verifier.verify(sign_envelope(notification(), genuine)).ok
    assert len(fetch.calls) == 201


def test_table_is_thread_safe(tmp_path, genuine, clock) -> None:
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock, size=64)
    envelopes = [forged(tmp_path, made_up_region(i)) for i in range(120)]
    genuine_signed = sign_envelope(notification(), genuine)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(len(envelopes)):
                assert verifier.verify(envelopes[(i + offset) % len(envelopes)]).retry
                assert verifier.verify(genuine_signed).ok
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n * 30,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(verifier.cert_failures) <= 64


def test_concurrent_failures_of_one_window_count_once(clock) -> None:
    """Threads that fetched the same URL at once failed one attempt, not LIMIT of them."""
    table = CertFailures()
    url = "https://sns.zz-nowhere-1.amazonaws.com/SimpleNotificationService-a.pem"
    for _ in range(LIMIT + 2):
        assert "failure 1 of" in str(table.failed(url, clock(), "r", final=False))


def test_clock_set_back_forgets_instead_of_locking_out(tmp_path, genuine, clock) -> None:
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock)
    envelope = forged(tmp_path, "zz-nowhere-1")
    assert_retry(verifier.verify(envelope))
    clock.advance(-3600)
    assert_retry(verifier.verify(envelope), "failure 1 of")
    assert len(fetch.calls) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"size": 0},
        {"backoff_seconds": 0},
        {"memory_seconds": 2 * BACKOFF},  # the third attempt would find the count forgotten
    ],
)
def test_table_settings_that_could_not_bound_anything_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        CertFailures(**kwargs)


def test_defaults_are_consistent() -> None:
    table = CertFailures()
    assert defaults.CERT_FAILURE_MEMORY_SECONDS > table.window(LIMIT - 1)
    spread = sum(table.window(n) for n in range(1, LIMIT))
    assert spread >= 180  # "a few minutes" before a certificate is refused for good


# --- certificate region must be that of an allowed topic ---------------------------------------


def test_region_outside_allowed_is_refused_without_fetch(tmp_path, genuine, clock) -> None:
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock, allowed_regions={"us-west-2", "eu-west-1"})
    verdict = verifier.verify(forged(tmp_path, "zz-nowhere-1"))
    assert verdict == Verdict(
        False, "SigningCertURL region 'zz-nowhere-1' is not the region of an allowed topic"
    )
    assert fetch.calls == []
    assert len(verifier.cert_failures) == 0
    assert verifier.verify(sign_envelope(notification(), genuine)).ok


def test_flood_outside_allowed_regions_costs_no_fetch(tmp_path, genuine, clock) -> None:
    fetch = Fetch()
    verifier = verifier_for(
        genuine,
        fetch,
        clock,
        allowed_regions=regions_of(["arn:aws:sns:us-west-2:123456789012:salt-master-asg-events"]),
    )
    for i in range(200):
        assert_final(verifier.verify(forged(tmp_path, made_up_region(i))), "not the region")
    assert fetch.calls == []
    assert len(verifier.cert_failures) == 0


def test_allowed_region_with_unknown_cert_is_fetched(tmp_path, genuine, clock) -> None:
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock, allowed_regions=["us-west-2"])
    assert_retry(verifier.verify(forged(tmp_path, "us-west-2")), "certificate fetch failed")
    assert len(fetch.calls) == 1


@pytest.mark.parametrize("allowed", [None, ["*"], {"*", "eu-west-1"}])
def test_no_region_restriction(tmp_path, genuine, clock, allowed) -> None:
    fetch = Fetch()
    verifier = verifier_for(genuine, fetch, clock, allowed_regions=allowed)
    assert verifier.allowed_regions is None
    assert_retry(verifier.verify(forged(tmp_path, "zz-nowhere-1")), "certificate fetch failed")
    assert len(fetch.calls) == 1


def test_empty_allowed_regions_refuse_everything(genuine, clock) -> None:
    verifier = verifier_for(genuine, Fetch(), clock, allowed_regions=())
    assert_final(verifier.verify(sign_envelope(notification(), genuine)), "'us-west-2'")


def test_allowed_regions_must_not_be_a_str(genuine, clock) -> None:
    with pytest.raises(TypeError):
        verifier_for(genuine, Fetch(), clock, allowed_regions="us-west-2")


@pytest.mark.parametrize(
    ("arns", "regions"),
    [
        ([], None),
        (["*"], None),
        (["arn:aws:sns:us-east-1:123456789012:a", "*"], None),
        (["arn:aws:sns:us-east-1:123456789012:a"], {"us-east-1"}),
        (
            (
                "arn:aws:sns:us-east-1:123456789012:a",
                "arn:aws:sns:us-east-1:123456789012:b",
                "arn:aws-us-gov:sns:us-gov-west-1:123456789012:c",
                "arn:aws-cn:sns:cn-north-1:123456789012:d",
            ),
            {"us-east-1", "us-gov-west-1", "cn-north-1"},
        ),
        ("arn:aws:sns:eu-west-1:123456789012:a", {"eu-west-1"}),  # one ARN as a str
        (["not-an-arn"], set()),  # fails closed: no region is opened by a broken entry
        (["arn:aws:sns:EVIL:1:a", "arn:aws:sqs:us-east-1:1:q"], set()),
        (["arn:aws:sns:eu-west-1:123456789012:a", "bogus"], {"eu-west-1"}),
    ],
)
def test_regions_of(arns, regions) -> None:
    assert regions_of(arns) == (None if regions is None else frozenset(regions))


# --- signed Timestamp must be recent -----------------------------------------------------------

MAX_AGE = 3600.0
SKEW = defaults.SNS_TIMESTAMP_SKEW_SECONDS


def sns_time(moment: datetime) -> str:
    """A time the way SNS writes it: milliseconds and Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def stamped(identity: SigningIdentity, timestamp: str) -> dict:
    return sign_envelope({**notification(), "Timestamp": timestamp}, identity)


@pytest.fixture
def aged(genuine, clock) -> SignatureVerifier:
    return SignatureVerifier(
        genuine.cert_path.parent.parent, fetch=Fetch(), clock=clock, max_age_seconds=MAX_AGE
    )


@pytest.mark.parametrize(
    "offset",
    [0, -1, -MAX_AGE + 1, -MAX_AGE, 1, SKEW],
    ids=["now", "1s-old", "almost-max", "max", "1s-ahead", "skew"],
)
def test_recent_timestamp_accepted(aged, genuine, clock, offset) -> None:
    moment = clock.now + timedelta(seconds=offset)
    verdict = aged.verify(stamped(genuine, sns_time(moment)))
    assert verdict.ok, verdict.reason


def test_old_timestamp_refused(aged, genuine, clock) -> None:
    moment = clock.now - timedelta(seconds=MAX_AGE + 1)
    verdict = aged.verify(stamped(genuine, sns_time(moment)))
    assert_final(verdict, f"Timestamp {sns_time(moment)!r} is 3601 s old", "3600 s allowed")


def test_replayed_envelope_expires_by_the_clock(aged, genuine, clock) -> None:
    signed = stamped(genuine, sns_time(clock.now))
    assert aged.verify(signed).ok
    clock.advance(MAX_AGE + 1)
    assert_final(aged.verify(signed), "s old")


def test_timestamp_far_in_future_refused(aged, genuine, clock) -> None:
    moment = clock.now + timedelta(seconds=SKEW + 1)
    assert_final(aged.verify(stamped(genuine, sns_time(moment))), "301 s in the future")


@pytest.mark.parametrize(
    "timestamp",
    [
        "",
        "yesterday",
        "2026-11-23",
        "2026-11-23 10:00:00.123Z",
        "2026-11-23T10:00:00.123",
        "2026-11-23T10:00:00.123+00:00",
        "2026-11-23T10:00:00.Z",
        "2026-13-23T10:00:00.123Z",
        "2026-11-23T24:00:00.123Z",
        "2026-11-23T10:00:60Z",
        "2026-11-23T10:00:00.123Z\n",
        "\uff12026-11-23T10:00:00.123Z",
    ],
)
def test_unparseable_timestamp_refused(aged, genuine, timestamp) -> None:
    verdict = aged.verify(stamped(genuine, timestamp))
    assert verdict == Verdict(False, f"Timestamp {timestamp!r} is not an SNS UTC time")


def test_timestamp_in_reason_is_shortened_and_escaped(aged, genuine) -> None:
    verdict = aged.verify(stamped(genuine, "\x1b[2J" + "9" * 5000))
    assert_final(verdict, "Timestamp '\\x1b[2J999", "...")
    assert "\x1b" not in verdict.reason and len(verdict.reason) < 150


@pytest.mark.parametrize("timestamp", ["2001-01-01T00:00:00.000Z", "not a time"])
def test_forged_envelope_is_still_bad_signature(aged, genuine, clock, timestamp) -> None:
    signed = stamped(genuine, sns_time(clock.now))
    signed["Timestamp"] = timestamp  # the age check must not mask the forgery
    assert aged.verify(signed) == Verdict(False, "bad signature")


def test_parsed_fraction_and_naive_clock(genuine) -> None:
    """A naive clock is UTC; milliseconds count (a 0.5 s margin decides here)."""
    naive_now = datetime(2026, 1, 2, 3, 4, 5, 500000)
    verifier = SignatureVerifier(
        genuine.cert_path.parent.parent,
        fetch=Fetch(),
        clock=lambda: naive_now,
        max_age_seconds=10,
    )
    ident = make_signing_identity(  # a certificate valid at naive_now, whatever today is
        genuine.cert_path.parent.parent,
        key=ATTACKER_KEY,
        cert=make_cert(
            ATTACKER_KEY,
            not_before=datetime(2025, 1, 1, tzinfo=UTC),
            not_after=datetime(2027, 1, 1, tzinfo=UTC),
        ),
    )
    assert verifier.verify(stamped(ident, "2026-01-02T03:03:55.500Z")).ok  # exactly 10 s
    assert_final(verifier.verify(stamped(ident, "2026-01-02T03:03:55.499Z")), "s old")


def test_no_max_age_keeps_old_behaviour(genuine, clock) -> None:
    verifier = verifier_for(genuine, Fetch(), clock)
    assert verifier.max_age_seconds is None
    for timestamp in ["2001-01-01T00:00:00.000Z", "not a time", "2999-01-01T00:00:00.000Z"]:
        assert verifier.verify(stamped(genuine, timestamp)).ok


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_max_age_must_be_positive(genuine, bad) -> None:
    with pytest.raises(ValueError):
        SignatureVerifier(genuine.cert_path.parent.parent, max_age_seconds=bad)


def test_cert_put_in_cache_dir_by_hand_clears_entry(tmp_path, clock) -> None:
    """An operator fixing a failing certificate by copying it into CertCacheDir."""
    ident = make_signing_identity(tmp_path, write=False)
    fetch = Fetch()
    verifier = SignatureVerifier(tmp_path, fetch=fetch, clock=clock)
    signed = sign_envelope(notification(), ident)
    assert_retry(verifier.verify(signed))
    ident.cert_path.parent.mkdir(parents=True, exist_ok=True)
    ident.cert_path.write_bytes(ident.pem)
    assert verifier.verify(signed).ok  # in its back-off window, yet no fetch needed
    assert len(fetch.calls) == 1
    assert len(verifier.cert_failures) == 0


def test_unexpected_error_text_is_shortened(genuine) -> None:
    def broken_clock() -> datetime:
        raise RuntimeError("\n" + "x" * 1000)

    verifier = SignatureVerifier(genuine.cert_path.parent.parent, fetch=Fetch(), clock=broken_clock)
    verdict = verifier.verify(sign_envelope(notification(), genuine))
    assert_final(verdict, "signature check error: RuntimeError: '\\nxxx", "...")
    assert "\n" not in verdict.reason and len(verdict.reason) < 200
