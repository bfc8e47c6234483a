"""An HTTPS proxy that answers for sns.<region>.amazonaws.com with what the moto server holds.

moto's SNS signs each envelope it delivers to a subscribed queue with a key of its own and
names a certificate URL of AWS's form (``https://sns.us-west-2.amazonaws.com/
SimpleNotificationService-<uuid>.pem``), a new one per delivery, that only the moto server
serves. A daemon started with ``https_proxy`` pointing here and ``SSL_CERT_FILE`` naming
:attr:`CertProxy.ca_file` fetches that certificate exactly as it would from AWS (its own
verified TLS, no redirects): the proxy accepts ``CONNECT`` to the SNS host only, completes
TLS with a certificate for that host issued by a CA made at start, and answers each
``GET /SimpleNotificationService-*.pem`` with moto's copy.
"""

from __future__ import annotations

import re
import socket
import socketserver
import ssl
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CERT_PATH = re.compile(r"/SimpleNotificationService-[0-9a-f]{32}\.pem")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _issue(
    subject: str, key: rsa.RSAPrivateKey, issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None = None
) -> x509.Certificate:
    """A CA certificate (no issuer) or a server certificate for host ``subject``."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = issuer or (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
    )
    if issuer is None:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        )
    return builder.sign(signer, hashes.SHA256())


class CertProxy:
    """Serves moto's SNS signing certificates as https://``host``/...; records each path."""

    def __init__(self, directory: Path, moto_url: str, region: str = "us-west-2") -> None:
        self.host = f"sns.{region}.amazonaws.com"
        self.moto_url = moto_url
        self.region = region
        self.fetched: list[str] = []
        self._lock = threading.Lock()
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = _issue("aws_ork test CA", ca_key)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _issue(self.host, key, (ca.subject, ca_key))
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(_pem(ca))
        chain, key_file = directory / "server.pem", directory / "server.key"
        chain.write_bytes(_pem(cert))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(chain, key_file)
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.connection)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """What a daemon needs in its environment to fetch through the proxy."""
        return {
            "https_proxy": self.url,
            "HTTPS_PROXY": self.url,
            "SSL_CERT_FILE": str(self.ca_file),
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        reader = conn.makefile("rb")
        request = reader.readline().decode("latin-1").split()
        while reader.readline() not in (b"\r\n", b"\n", b""):
            pass
        if request[:2] != ["CONNECT", f"{self.host}:443"]:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with self._tls.wrap_socket(conn, server_side=True) as tls:
            reader = tls.makefile("rb")
            request = reader.readline().decode("latin-1").split()
            while reader.readline() not in (b"\r\n", b"\n", b""):
                pass
            path = request[1] if len(request) > 1 and request[0] == "GET" else ""
            if not _CERT_PATH.fullmatch(path):
                tls.sendall(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            body = self._from_moto(path)
            with self._lock:
                self.fetched.append(path)
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-pem-file\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            )

    def _from_moto(self, path: str) -> bytes:
        """moto's single-port server routes a request by the service its signature names."""
        request = urllib.request.Request(
            self.moto_url + path,
            headers={
                "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{self.region}/sns/"
                f"aws4_request, SignedHeaders=host, Signature=0"
            },
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return bytes(reply.read())
