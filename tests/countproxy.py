"""A recording HTTP relay on 127.0.0.1 in front of the moto server, to count AWS requests.

Point a process's ``AWS_ENDPOINT_URL`` at :attr:`CountingProxy.url`: every request is relayed
to moto unchanged and recorded (operation, parameters, start and end times).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass
class Request:
    """One relayed request: SQS JSON operation (``ReceiveMessage``...) or ``S3 GET /path``."""

    operation: str
    params: dict[str, Any]
    started: float
    ended: float | None = None


#: answers a request itself instead of relaying it: (HTTP status, body), or None to relay
Answer = Callable[[Request], "tuple[int, bytes] | None"]


@dataclass
class CountingProxy:
    target: str
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    answer: Answer | None = None  # e.g. throttle EC2: see tests/test_ec2_batch.py

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def start(self) -> CountingProxy:
        proxy = self
        parsed = urlparse(self.target)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = Request(
                    _operation(self.command, self.path, self.headers, body),
                    _params(body),
                    time.monotonic(),
                )
                with proxy.lock:
                    proxy.requests.append(record)
                canned = proxy.answer(record) if proxy.answer is not None else None
                if canned is not None:
                    status, data = canned
                    record.ended = time.monotonic()
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                record.ended = time.monotonic()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _operation(method: str, path: str, headers: Any, body: bytes) -> str:
    target = headers.get("X-Amz-Target")
    if target:  # SQS JSON protocol: AmazonSQS.ReceiveMessage
        return target.rsplit(".", 1)[-1]
    if body.startswith(b"Action="):  # SQS query protocol
        return body.split(b"&", 1)[0][len(b"Action=") :].decode()
    return f"S3 {method} {path.split('?', 1)[0]}"


def _params(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
