"""Unit tests for aws_ork.signature: no network, certificates made at test time."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aws_ork.checks.certstore import cert_cache_path
from aws_ork.checks.certurl import check_cert_url
from aws_ork.checks.signature import SignatureVerifier, Verdict, string_to_sign
from tests.messages import fixture
from tests.snssign import make_cert, make_key, make_signing_identity, sign_envelope

CERT_ID = "9c6465fa7f48f5cacd23014631ec1136"


def load(name: str) -> dict:
    envelope = fixture(name)
    for field in ("Signature", "SignatureVersion", "SigningCertURL"):
        envelope.pop(field)
    return envelope


def notification(subject: bool = True) -> dict:
    envelope = load("sns-asg-launch")
    if not subject:
        del envelope["Subject"]
    return envelope


def confirmation(kind: str = "SubscriptionConfirmation") -> dict:
    envelope = load("sns-asg-launch")
    del envelope["Subject"], envelope["UnsubscribeURL"]
    envelope["Type"] = kind
    envelope["Message"] = "You have chosen to subscribe to the topic ..."
    envelope["Token"] = "2336412f37fb687f5d51e6e2425ba1f2" * 4
    envelope["SubscribeURL"] = (
        "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription"
        "&TopicArn=arn:aws:sns:us-west-2:123456789012:salt-master-asg-events&Token=x"
    )
    return envelope


class FetchRecorder:
    """An injected fetch: records URLs, returns body or raises error."""

    def __init__(self, body: bytes | None = None, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.body = body
        self.error = error or AssertionError("fetch must not be called")

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if self.body is None:
            raise self.error
        return self.body


@pytest.fixture
def no_fetch() -> FetchRecorder:
    return FetchRecorder()


@pytest.fixture
def verifier(cert_dir: Path, no_fetch: FetchRecorder) -> SignatureVerifier:
    return SignatureVerifier(cert_dir, fetch=no_fetch)


def rejected(verdict: Verdict, *fragments: str) -> bool:
    assert isinstance(verdict, Verdict)
    assert not verdict.ok
    assert verdict.reason
    for fragment in fragments:
        assert fragment in verdict.reason, verdict.reason
    return True


# --- string to sign ---------------------------------------------------------------------------


def test_string_to_sign_notification_order_and_format() -> None:
    envelope = {
        "Type": "Notification",
        "MessageId": "id",
        "TopicArn": "arn",
        "Subject": "s",
        "Message": "m\nline2",
        "Timestamp": "t",
        "UnsubscribeURL": "ignored",
    }
    expected = (
        "Message\nm\nline2\nMessageId\nid\nSubject\ns\n"
        "Timestamp\nt\nTopicArn\narn\nType\nNotification\n"
    )
    assert string_to_sign(envelope) == expected.encode()
    del envelope["Subject"]
    assert b"Subject" not in string_to_sign(envelope)


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_string_to_sign_confirmation(kind: str) -> None:
    envelope = {
        "Type": kind,
        "MessageId": "id",
        "TopicArn": "arn",
        "Message": "m",
        "Timestamp": "t",
        "Token": "tok",
        "SubscribeURL": "url",
        "Subject": "not signed",
    }
    expected = (
        f"Message\nm\nMessageId\nid\nSubscribeURL\nurl\nTimestamp\nt\nToken\ntok\n"
        f"TopicArn\narn\nType\n{kind}\n"
    )
    assert string_to_sign(envelope) == expected.encode()


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        ({}, "missing field 'Type'"),
        ({"Type": "Bogus"}, "unknown Type 'Bogus'"),
        ({"Type": None}, "field 'Type' is not a string"),
        ({**notification(), "Message": {"a": 1}}, "field 'Message' is not a string"),
        ({**notification(), "Subject": None}, "field 'Subject' is not a string"),
        (
            {k: v for k, v in notification().items() if k != "Timestamp"},
            "missing field 'Timestamp'",
        ),
        ({**confirmation(), "Token": 5}, "field 'Token' is not a string"),
    ],
)
def test_string_to_sign_rejects(envelope: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        string_to_sign(envelope)


# --- valid signatures -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    "envelope",
    [
        notification(),
        notification(subject=False),
        load("sns-hook-launching"),
        confirmation(),
        confirmation("UnsubscribeConfirmation"),
    ],
    ids=["with-subject", "without-subject", "hook", "subscribe", "unsubscribe"],
)
def test_valid_signature_passes(verifier, identity, no_fetch, envelope, version) -> None:
    verdict = verifier.verify(sign_envelope(envelope, identity, version))
    assert verdict.ok, verdict.reason
    assert no_fetch.calls == []


def test_subject_may_be_empty_string(verifier, identity) -> None:
    assert verifier.verify(sign_envelope({**notification(), "Subject": ""}, identity)).ok


# --- tampering --------------------------------------------------------------------------------


NOTIFICATION_FIELDS = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION_FIELDS = [
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
]


def tamper(value: str) -> str:
    if value.startswith("arn:aws:sns:"):
        return value.replace("123456789012", "999999999999")  # same region: signature must catch it
    return value + "x"


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("field", NOTIFICATION_FIELDS)
def test_notification_single_field_tamper_fails(verifier, identity, field, version) -> None:
    signed = sign_envelope(notification(), identity, version)
    signed[field] = tamper(signed[field])
    rejected(verifier.verify(signed))


@pytest.mark.parametrize("field", CONFIRMATION_FIELDS)
def test_confirmation_single_field_tamper_fails(verifier, identity, field) -> None:
    signed = sign_envelope(confirmation(), identity)
    signed[field] = tamper(signed[field])
    rejected(verifier.verify(signed))


@pytest.mark.parametrize("field", ["Message", "MessageId", "Timestamp", "TopicArn"])
def test_tamper_is_reported_as_bad_signature(verifier, identity, field) -> None:
    signed = sign_envelope(notification(), identity)
    signed[field] = tamper(signed[field])
    rejected(verifier.verify(signed), "bad signature")


def test_type_switched_to_confirmation_fails(verifier, identity) -> None:
    signed = sign_envelope(notification(), identity)
    signed.update(Type="SubscriptionConfirmation", Token="t", SubscribeURL="u")
    rejected(verifier.verify(signed), "bad signature")


def test_unsigned_subject_added_fails(verifier, identity) -> None:
    signed = sign_envelope(notification(subject=False), identity)
    signed["Subject"] = "injected"
    rejected(verifier.verify(signed), "bad signature")


def test_signed_subject_removed_fails(verifier, identity) -> None:
    signed = sign_envelope(notification(), identity)
    del signed["Subject"]
    rejected(verifier.verify(signed), "bad signature")


def test_unsigned_fields_do_not_matter(verifier, identity) -> None:
    signed = sign_envelope(notification(), identity)
    signed["UnsubscribeURL"] = "anything"
    assert verifier.verify(signed).ok


def test_version_swap_fails(verifier, identity) -> None:
    signed = sign_envelope(notification(), identity, "1")
    signed["SignatureVersion"] = "2"
    rejected(verifier.verify(signed), "bad signature")


def test_wrong_key_fails(verifier, identity, cert_dir) -> None:
    other = make_signing_identity(cert_dir, write=False)  # other key, certificate not published
    signed = sign_envelope(notification(), other)
    signed["SigningCertURL"] = identity.cert_url
    rejected(verifier.verify(signed), "bad signature")


# --- signature encoding and version -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda s: s[:-4], "bad signature"),  # still base64, too short
        (lambda s: s[:-1], "not valid base64"),
        (lambda s: s[: len(s) // 2], ""),
        (lambda s: "!!" + s[2:], "not valid base64"),
        (lambda s: s[:20] + "\n" + s[20:], "not valid base64"),
        (lambda s: s[:20] + " " + s[20:], "not valid base64"),
        (lambda s: s.replace("=", "") + "====", "not valid base64"),
        (lambda s: "", "empty Signature"),
        (lambda s: base64.b64encode(b"\0" * 256).decode(), "bad signature"),
        (lambda s: 12345, "field 'Signature' is not a string"),
        (lambda s: None, "field 'Signature' is not a string"),
        (lambda s: [s], "field 'Signature' is not a string"),
    ],
)
def test_bad_signature_encoding_fails(verifier, identity, mangle, reason) -> None:
    signed = sign_envelope(notification(), identity)
    signed["Signature"] = mangle(signed["Signature"])
    rejected(verifier.verify(signed), reason)


def test_missing_signature_fails(verifier, identity) -> None:
    signed = sign_envelope(notification(), identity)
    del signed["Signature"]
    rejected(verifier.verify(signed), "missing field 'Signature'")


@pytest.mark.parametrize("version", ["3", "", 1, 2, None, "01", " 2", "2 ", "v2", 2.0, ["2"]])
def test_unknown_signature_version_fails(verifier, identity, version) -> None:
    signed = sign_envelope(notification(), identity)
    signed["SignatureVersion"] = version
    rejected(verifier.verify(signed), "unsupported SignatureVersion")


def test_reason_quotes_version(verifier, identity) -> None:
    signed = {**sign_envelope(notification(), identity), "SignatureVersion": "3"}
    assert verifier.verify(signed).reason == "unsupported SignatureVersion '3'"
    del signed["SignatureVersion"]
    rejected(verifier.verify(signed), "missing field 'SignatureVersion'")


# --- certificate URL --------------------------------------------------------------------------

P = f"/SimpleNotificationService-{CERT_ID}.pem"
H = "sns.us-west-2.amazonaws.com"

BAD_URLS = [
    f"http://{H}{P}",
    f"https://sns.us-east-1.amazonaws.com.evil.net{P}",
    f"https://{H}.evil.net{P}",
    f"https://evil.com/sns.us-east-1.amazonaws.com{P}",
    f"https://evil.com/{H}{P}",
    f"https://{H}@evil.com{P}",
    f"https://evil.com@{H}{P}",
    f"https://user:pw@{H}{P}",
    f"https://@{H}{P}",
    f"https://{H}:443{P}",
    f"https://{H}:8443{P}",
    f"https://{H}:{P}",
    f"https://{H}\\@evil.com{P}",
    f"https://evil.com\\@{H}{P}",
    f"https://{H}\\SimpleNotificationService-{CERT_ID}.pem",
    f"https://sns%2eus-west-2.amazonaws.com{P}",
    f"https://sns.us-west-2.amazonaws.com%2eevil.net{P}",
    f"https://{H}/SimpleNotificationService-%39c64.pem",
    f"https://{H}/%2e%2e{P}",
    f"https://{H}/..{P}",
    f"https://{H}/x{P}",
    f"https://{H}{P}/",
    f"https://{H}//SimpleNotificationService-{CERT_ID}.pem",
    f"https://SNS.us-west-2.amazonaws.com{P}",
    f"https://sns.US-WEST-2.amazonaws.com{P}",
    f"https://sns.us-west-2.AMAZONAWS.com{P}",
    f"HTTPS://{H}{P}",
    f"Https://{H}{P}",
    f"https://{H}./SimpleNotificationService-{CERT_ID}.pem",
    f"https://{H}{P}?x=1",
    f"https://{H}{P}?",
    f"https://{H}{P}#frag",
    f"https://{H}{P}#",
    f"https://{H}/?file=SimpleNotificationService-{CERT_ID}.pem",
    f"https://{H}/SimpleNotificationService-{CERT_ID}.crt",
    f"https://{H}/SimpleNotificationService-.pem",
    f"https://{H}/SimpleNotificationService-ab_cd.pem",
    f"https://{H}/SimpleNotificationService-ab.cd.pem",
    f"https://{H}/SimpleNotificationService-{'a' * 65}.pem",
    f"https://{H}/simplenotificationservice-{CERT_ID}.pem",
    f"https://{H}",
    f"https://{H}/",
    f"https://sns.amazonaws.com{P}",
    f"https://sns.useast1.amazonaws.com{P}",
    f"https://sns.us-west-2a.amazonaws.com{P}",
    f"https://sns.us-west-123.amazonaws.com{P}",
    f"https://sns.evil.amazonaws.com{P}",
    f"https://sns.us-west-2.amazonaws.cn{P}",
    f"https://sns.us-west-2.amazonaws.com.cn{P}",  # .cn only for cn-* regions
    f"https://sns.cn-north-1.amazonaws.com{P}",
    f"https://sns.us-west-\u0662.amazonaws.com{P}",  # Arabic-Indic digit two
    f"https://sns.us-west-2.amazonaws.com\uff0eevil.net{P}",  # fullwidth dot
    f"https://sqs.us-west-2.amazonaws.com{P}",
    f"https://xsns.us-west-2.amazonaws.com{P}",
    f"https://a.sns.us-west-2.amazonaws.com{P}",
    f"https://sns.us-west-2.amazon\taws.com{P}",
    f"https://{H}{P}\n",
    f"\nhttps://{H}{P}",
    f" https://{H}{P}",
    f"https://{H}{P} ",
    f"https:/{H}{P}",
    f"https:///{H}{P}",
    f"//{H}{P}",
    f"{H}{P}",
    f"https://[::1]{P}",
    f"https://[{P}",
    f"https://127.0.0.1{P}",
    f"file:///{H}{P}",
    "",
]
NON_STR_URLS = [
    None,
    123,
    b"https://sns.us-west-2.amazonaws.com/SimpleNotificationService-a.pem",
    {"u": 1},
]

GOOD_URLS = [
    ("https://sns.us-east-1.amazonaws.com" + P, "sns.us-east-1.amazonaws.com"),
    (
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        H,
    ),
    ("https://sns.us-gov-west-1.amazonaws.com" + P, "sns.us-gov-west-1.amazonaws.com"),
    ("https://sns.us-gov-east-1.amazonaws.com" + P, "sns.us-gov-east-1.amazonaws.com"),
    ("https://sns.cn-north-1.amazonaws.com.cn" + P, "sns.cn-north-1.amazonaws.com.cn"),
    ("https://sns.cn-northwest-1.amazonaws.com.cn" + P, "sns.cn-northwest-1.amazonaws.com.cn"),
    ("https://sns.eu-central-2.amazonaws.com" + P, "sns.eu-central-2.amazonaws.com"),
    ("https://sns.ap-southeast-4.amazonaws.com" + P, "sns.ap-southeast-4.amazonaws.com"),
    ("https://sns.il-central-1.amazonaws.com" + P, "sns.il-central-1.amazonaws.com"),
    ("https://sns.mx-central-1.amazonaws.com" + P, "sns.mx-central-1.amazonaws.com"),
    (
        "https://sns.af-south-1.amazonaws.com/SimpleNotificationService-ABCdef012.pem",
        "sns.af-south-1.amazonaws.com",
    ),
]


@pytest.mark.parametrize("url", BAD_URLS + NON_STR_URLS)
def test_check_cert_url_rejects(url) -> None:
    with pytest.raises(ValueError) as info:
        check_cert_url(url)
    assert "SigningCertURL" in str(info.value)


@pytest.mark.parametrize("url", BAD_URLS + NON_STR_URLS)
def test_bad_cert_url_fails_verify_without_fetch(verifier, identity, no_fetch, url) -> None:
    signed = sign_envelope(notification(), identity)
    signed["SigningCertURL"] = url
    rejected(verifier.verify(signed), "SigningCertURL")
    assert no_fetch.calls == []


@pytest.mark.parametrize(("url", "host"), GOOD_URLS)
def test_check_cert_url_accepts(url: str, host: str) -> None:
    assert check_cert_url(url) == host


def test_check_cert_url_reasons() -> None:
    with pytest.raises(
        ValueError, match="host 'sns.us-east-1.amazonaws.com.evil.net' is not an SNS host"
    ):
        check_cert_url(f"https://sns.us-east-1.amazonaws.com.evil.net{P}")
    with pytest.raises(ValueError, match="scheme 'http' is not https"):
        check_cert_url(f"http://{H}{P}")
    with pytest.raises(ValueError, match="explicit port"):
        check_cert_url(f"https://{H}:443{P}")


def test_cert_cache_path(tmp_path: Path) -> None:
    url = f"https://{H}{P}"
    assert cert_cache_path(tmp_path, url) == tmp_path / H / P[1:]
    with pytest.raises(ValueError):
        cert_cache_path(tmp_path, f"https://{H}/x/..{P}")


def test_missing_cert_url_fails(verifier, identity) -> None:
    signed = sign_envelope(notification(), identity)
    del signed["SigningCertURL"]
    rejected(verifier.verify(signed), "missing field 'SigningCertURL'")


def test_cert_region_must_match_topic_region(verifier, cert_dir) -> None:
    east = make_signing_identity(cert_dir, region="us-east-1")
    assert verifier.verify(sign_envelope(notification(), east)).reason == (
        "SigningCertURL region 'us-east-1' differs from TopicArn region 'us-west-2'"
    )
    envelope = {**notification(), "TopicArn": "arn:aws:sns:us-east-1:123456789012:t"}
    assert verifier.verify(sign_envelope(envelope, east)).ok


def test_cn_region(verifier, cert_dir) -> None:
    cn = make_signing_identity(cert_dir, region="cn-north-1")
    envelope = {**notification(), "TopicArn": "arn:aws-cn:sns:cn-north-1:123456789012:t"}
    signed = sign_envelope(envelope, cn, "1")
    assert signed["SigningCertURL"].startswith("https://sns.cn-north-1.amazonaws.com.cn/")
    assert verifier.verify(signed).ok


def test_topic_arn_without_region_skips_region_gate(verifier, identity) -> None:
    envelope = {**notification(), "TopicArn": "not-an-arn"}
    assert verifier.verify(sign_envelope(envelope, identity)).ok


# --- certificate validity and loading ---------------------------------------------------------

NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("not_before", "not_after", "reason"),
    [
        (NOW - timedelta(days=30), NOW - timedelta(days=1), "certificate expired"),
        (NOW + timedelta(days=1), NOW + timedelta(days=30), "certificate not yet valid"),
    ],
)
def test_certificate_out_of_validity_fails(
    tmp_path, no_fetch, not_before, not_after, reason
) -> None:
    key = make_key()
    ident = make_signing_identity(
        tmp_path, key=key, cert=make_cert(key, not_before=not_before, not_after=not_after)
    )
    verdict = SignatureVerifier(tmp_path, fetch=no_fetch).verify(
        sign_envelope(notification(), ident)
    )
    assert verdict == Verdict(False, reason)
    assert no_fetch.calls == []


def test_validity_checked_against_clock_even_when_cached(cert_dir, identity) -> None:
    now = [datetime.now(UTC)]
    verifier = SignatureVerifier(cert_dir, fetch=FetchRecorder(), clock=lambda: now[0])
    signed = sign_envelope(notification(), identity)
    assert verifier.verify(signed).ok
    now[0] = identity.cert.not_valid_after_utc + timedelta(seconds=1)
    assert verifier.verify(signed) == Verdict(False, "certificate expired")
    now[0] = identity.cert.not_valid_before_utc - timedelta(seconds=1)
    assert verifier.verify(signed) == Verdict(False, "certificate not yet valid")


def test_cached_cert_is_used_without_fetch(verifier, identity, no_fetch) -> None:
    assert identity.cert_path.is_file()
    for _ in range(3):
        assert verifier.verify(sign_envelope(notification(), identity)).ok
    assert no_fetch.calls == []


def test_fetch_called_once_and_cached_on_disk(tmp_path) -> None:
    source = make_signing_identity(tmp_path / "elsewhere")
    cache = tmp_path / "cache"
    fetch = FetchRecorder(body=source.pem)
    verifier = SignatureVerifier(cache, fetch=fetch)
    signed = sign_envelope(notification(), source)
    assert verifier.verify(signed).ok
    assert fetch.calls == [source.cert_url]
    path = cert_cache_path(cache, source.cert_url)
    assert path == cache / H / source.cert_path.name
    assert path.read_bytes() == source.pem
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    assert verifier.verify(signed).ok
    assert verifier.verify(sign_envelope(notification(subject=False), source, "1")).ok
    assert fetch.calls == [source.cert_url]
    fresh = SignatureVerifier(cache, fetch=FetchRecorder())  # new process: disk cache, no fetch
    assert fresh.verify(signed).ok


def test_fetched_cert_still_checked(tmp_path) -> None:
    source = make_signing_identity(tmp_path / "elsewhere")
    other = make_signing_identity(tmp_path / "other")
    verifier = SignatureVerifier(tmp_path / "cache", fetch=FetchRecorder(body=other.pem))
    rejected(verifier.verify(sign_envelope(notification(), source)), "bad signature")


def test_unwritable_cache_still_verifies(tmp_path) -> None:
    source = make_signing_identity(tmp_path / "elsewhere")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache dir should be")
    verifier = SignatureVerifier(blocker, fetch=FetchRecorder(body=source.pem))
    assert verifier.verify(sign_envelope(notification(), source)).ok


@pytest.mark.parametrize(
    "error",
    [
        OSError("connection refused"),
        TimeoutError("timed out"),
        ValueError("too big"),
        RuntimeError("x"),
    ],
)
def test_fetch_error_fails(tmp_path, identity, error) -> None:
    fetch = FetchRecorder(error=error)
    verifier = SignatureVerifier(tmp_path, fetch=fetch)
    verdict = verifier.verify(sign_envelope(notification(), identity))
    rejected(verdict, "certificate fetch failed", str(error))
    assert fetch.calls == [identity.cert_url]
    assert not cert_cache_path(tmp_path, identity.cert_url).exists()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nnotbase64\n-----END CERTIFICATE-----\n",
        b"x" * (64 * 1024 + 1),
        "a str, not bytes",
    ],
)
def test_garbage_fetched_pem_fails_and_is_not_cached(tmp_path, identity, body) -> None:
    fetch = FetchRecorder(body=body)  # type: ignore[arg-type]
    verifier = SignatureVerifier(tmp_path, fetch=fetch)
    signed = sign_envelope(notification(), identity)
    first = verifier.verify(signed)
    rejected(first, "fetched certificate")
    assert not first.retry  # AWS served no certificate: retrying will not help
    assert not cert_cache_path(tmp_path, identity.cert_url).exists()
    again = verifier.verify(signed)
    rejected(again, "fetched certificate", "refused")
    assert not again.retry
    assert len(fetch.calls) == 1  # the failure is remembered: no refetch per message


def test_garbage_cached_pem_fails(tmp_path, no_fetch) -> None:
    ident = make_signing_identity(tmp_path)
    ident.cert_path.write_bytes(
        b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"
    )
    verdict = SignatureVerifier(tmp_path, fetch=no_fetch).verify(
        sign_envelope(notification(), ident)
    )
    rejected(verdict, "cached certificate", "not a PEM X.509 certificate")
    assert no_fetch.calls == []


def test_non_rsa_certificate_fails(tmp_path, no_fetch) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ident = make_signing_identity(tmp_path, cert=make_cert(ec_key))
    verdict = SignatureVerifier(tmp_path, fetch=no_fetch).verify(
        sign_envelope(notification(), ident)
    )
    assert verdict == Verdict(False, "certificate key is not RSA")


def test_unexpected_exception_becomes_verdict(cert_dir, identity) -> None:
    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")

    verifier = SignatureVerifier(cert_dir, fetch=FetchRecorder(), clock=broken_clock)
    verdict = verifier.verify(sign_envelope(notification(), identity))
    rejected(verdict, "RuntimeError", "clock broke")
    # the prefix the properties below take for a crash (assert_no_crash)
    assert verdict.reason.startswith("signature check error:"), verdict.reason


# --- wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", NOTIFICATION_FIELDS + ["Signature", "SignatureVersion", "SigningCertURL"]
)
@pytest.mark.parametrize("value", [None, {"a": 1}, 7, ["x"], b"bytes"])
def test_wrong_type_field_fails(verifier, identity, field, value) -> None:
    signed = sign_envelope(notification(), identity)
    signed[field] = value
    rejected(verifier.verify(signed))


def test_message_as_dict_reason(verifier, identity) -> None:
    signed = sign_envelope(notification(), identity)
    signed["Message"] = json.loads(signed["Message"])
    assert verifier.verify(signed) == Verdict(False, "field 'Message' is not a string")


@pytest.mark.parametrize("envelope", [None, [], "text", 5, {}, {"Type": "Notification"}])
def test_non_envelopes_fail(verifier, envelope) -> None:
    rejected(verifier.verify(envelope))  # type: ignore[arg-type]


# --- property: verify never raises ------------------------------------------------------------

KEYS = (
    NOTIFICATION_FIELDS + CONFIRMATION_FIELDS + ["Signature", "SignatureVersion", "SigningCertURL"]
)
VALUES = st.one_of(
    st.text(),
    st.integers(),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.sampled_from(
        ["1", "2", "Notification", "SubscriptionConfirmation", "", "AAAA", f"https://{H}{P}"]
    ),
)


def assert_no_crash(verdict: Verdict) -> None:
    """A Verdict from the checks themselves: ``verify`` turns any unexpected exception into
    "signature check error: ...", which must never be the answer."""
    assert isinstance(verdict, Verdict)
    assert verdict.reason
    assert not verdict.reason.startswith("signature check error:"), verdict.reason


@pytest.fixture(scope="module")
def prop_verifier(cert_dir) -> SignatureVerifier:
    return SignatureVerifier(cert_dir, fetch=FetchRecorder(error=OSError("no network in tests")))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text()), VALUES))
def test_verify_never_raises_on_arbitrary_dicts(prop_verifier, envelope) -> None:
    verdict = prop_verifier.verify(envelope)
    assert_no_crash(verdict)
    assert not verdict.ok


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    changes=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1),
    drop=st.sets(st.sampled_from(KEYS)),
)
def test_verify_never_raises_on_mutated_envelopes(prop_verifier, identity, changes, drop) -> None:
    signed = sign_envelope(notification(), identity)
    original = dict(signed)
    signed.update(changes)
    for key in drop:
        signed.pop(key, None)
    verdict = prop_verifier.verify(signed)
    assert_no_crash(verdict)
    if verdict.ok:  # only possible when nothing signed actually changed
        assert all(signed.get(k) == original.get(k) for k in NOTIFICATION_FIELDS + ["Signature"])
