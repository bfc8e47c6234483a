"""Test helper: sign SNS envelopes the way AWS does, with a key and certificate made at test time.

The string to sign is built here independently of ``aws_ork.signature`` so tests do not check the
verifier against itself. The certificate is written where the verifier looks for it
(``<cert_dir>/<host>/<file name>``), so verifying never fetches anything.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


@dataclass(frozen=True)
class SigningIdentity:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    cert_url: str
    cert_path: Path

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def sns_host(region: str) -> str:
    return f"sns.{region}.amazonaws.com" + (".cn" if region.startswith("cn-") else "")


def make_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(
    key: object,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    common_name: str = "sns.amazonaws.com",
) -> x509.Certificate:
    """A self-signed certificate for key (any key type cryptography can sign with)."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )


def make_signing_identity(
    cert_dir: Path,
    region: str = "us-west-2",
    *,
    key: rsa.RSAPrivateKey | None = None,
    cert: x509.Certificate | None = None,
    write: bool = True,
) -> SigningIdentity:
    """A key and self-signed cert; the cert is written (unless write=False) where the verifier
    looks: <cert_dir>/<sns host>/SimpleNotificationService-<id>.pem."""
    key = key or make_key()
    cert = cert or make_cert(key)
    host = sns_host(region)
    name = f"SimpleNotificationService-{uuid.uuid4().hex}.pem"
    path = Path(cert_dir) / host / name
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return SigningIdentity(key=key, cert=cert, cert_url=f"https://{host}/{name}", cert_path=path)


def canonical_string(envelope: dict) -> bytes:
    fields = _NOTIFICATION if envelope["Type"] == "Notification" else _CONFIRMATION
    return "".join(f"{name}\n{envelope[name]}\n" for name in fields if name in envelope).encode(
        "utf-8"
    )


def sign_envelope(envelope: dict, identity: SigningIdentity, version: str = "2") -> dict:
    """A copy of envelope with SignatureVersion, Signature and SigningCertURL set."""
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}[version]
    signed = dict(envelope)
    signature = identity.key.sign(canonical_string(signed), padding.PKCS1v15(), algorithm)
    signed["SignatureVersion"] = version
    signed["Signature"] = base64.b64encode(signature).decode("ascii")
    signed["SigningCertURL"] = identity.cert_url
    return signed
