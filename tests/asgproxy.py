"""An Auto Scaling endpoint on 127.0.0.1 for the lifecycle tests, in front of the moto server.

moto answers ``CompleteLifecycleAction`` and ``RecordLifecycleActionHeartbeat`` with HTTP 500,
so this server speaks the Auto Scaling Query API for those two itself: it parses the
form-encoded POST body, records the call and answers with the documented XML. A token named in
:attr:`AsgProxy.gone` is answered like AWS answers a token that no longer waits (HTTP 400
``ValidationError``, "No active Lifecycle Action found"). ``DescribeAutoScalingInstances``
for an instance in :attr:`AsgProxy.terminating` says ``Terminating:Wait`` (moto never holds an
instance there). Everything else is relayed to moto byte for byte.

Point a process's ``AWS_ENDPOINT_URL_AUTO_SCALING`` at :attr:`AsgProxy.url` (:meth:`env`):
botocore names the variable after the service id, "Auto Scaling", so
``AWS_ENDPOINT_URL_AUTOSCALING`` would be ignored and the calls would reach moto.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}
NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
ANSWERED = ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")


@dataclass
class AsgProxy:
    target: str  # moto's URL
    calls: list[dict[str, str]] = field(default_factory=list)  # answered here, in order
    gone: set[str] = field(default_factory=set)  # tokens that no longer wait
    terminating: dict[str, str] = field(default_factory=dict)  # instance id -> group
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The environment that sends a process's Auto Scaling calls here."""
        return {"AWS_ENDPOINT_URL_AUTO_SCALING": self.url}

    def recorded(self, action: str, instance_id: str | None = None) -> list[dict[str, str]]:
        """The calls of ``action`` recorded so far (for one instance, if named)."""
        with self.lock:
            return [dict(c) for c in self.calls if c["Action"] == action
                    and (instance_id is None or c.get("InstanceId") == instance_id)]

    def answer(self, params: dict[str, str]) -> tuple[int, bytes] | None:
        """The reply for a call answered here; None to relay it to moto."""
        action = params.get("Action", "")
        request_id = str(uuid.uuid4())
        if action in ANSWERED:
            with self.lock:
                self.calls.append(params)
                gone = params.get("LifecycleActionToken") in self.gone
            if gone:
                return 400, (
                    f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type>'
                    f"<Code>ValidationError</Code><Message>No active Lifecycle Action found "
                    f"with instance ID {params.get('InstanceId')}</Message></Error>"
                    f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()
            return 200, (
                f'<{action}Response xmlns="{NS}"><{action}Result/><ResponseMetadata>'
                f"<RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
            ).encode()
        instance_id = params.get("InstanceIds.member.1")
        if action == "DescribeAutoScalingInstances" and instance_id in self.terminating:
            return 200, (
                f'<DescribeAutoScalingInstancesResponse xmlns="{NS}">'
                f"<DescribeAutoScalingInstancesResult><AutoScalingInstances><member>"
                f"<InstanceId>{instance_id}</InstanceId>"
                f"<AutoScalingGroupName>{self.terminating[instance_id]}</AutoScalingGroupName>"
                f"<AvailabilityZone>us-west-2a</AvailabilityZone>"
                f"<LifecycleState>Terminating:Wait</LifecycleState>"
                f"<HealthStatus>HEALTHY</HealthStatus>"
                f"<ProtectedFromScaleIn>false</ProtectedFromScaleIn>"
                f"</member></AutoScalingInstances></DescribeAutoScalingInstancesResult>"
                f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
                f"</DescribeAutoScalingInstancesResponse>").encode()
        return None

    def start(self) -> AsgProxy:
        proxy = self
        parsed = urlparse(self.target)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                params = {k: v[0] for k, v in
                          parse_qs(body.decode("utf-8", "replace")).items()} \
                    if self.command == "POST" else {}
                answer = proxy.answer(params)
                if answer is not None:
                    self._reply(answer[0], [("Content-Type", "text/xml")], answer[1])
                    return
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
                self._reply(response.status, response.getheaders(), data)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
