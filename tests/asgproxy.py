"""An Auto Scaling endpoint on 127.0.0.1 for the lifecycle tests, in front of the moto server.

moto answers ``CompleteLifecycleAction`` and ``RecordLifecycleActionHeartbeat`` with HTTP 500,
so this server speaks the Auto Scaling Query API for those two itself: it parses the
form-encoded POST body, records the call and answers as the API reference documents them.
``AutoScalingGroupName`` and ``LifecycleHookName`` (and for a completion
``LifecycleActionResult``, ``CONTINUE`` or ``ABANDON``) are required, and the action is named
by ``LifecycleActionToken`` or by ``InstanceId``: a call missing them is a ``ValidationError``.
The actions Auto Scaling holds are those a test registered with :meth:`AsgProxy.hold`; a call
that names none of them, a token named in :attr:`AsgProxy.gone`, or an action already
completed is answered like AWS answers an action that no longer waits (HTTP 400
``ValidationError``, "No active Lifecycle Action found"). Each recorded call says under
``_instance`` whose action it named (by its token, or by the instance id it carried).
``DescribeAutoScalingInstances`` for an instance in :attr:`AsgProxy.terminating` says
``Terminating:Wait`` (moto never holds an instance there). Everything else is relayed to
moto byte for byte.

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
    #: the waiting actions: token -> (group, hook, instance id)
    actions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
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

    def hold(self, inner: dict[str, Any]) -> dict[str, Any]:
        """Auto Scaling holds the action of this hook message (tests/test_lifecycle.py's
        ``hook_message``) until it is completed; the message, for chaining."""
        with self.lock:
            self.actions[inner["LifecycleActionToken"]] = (
                inner["AutoScalingGroupName"],
                inner["LifecycleHookName"],
                inner["EC2InstanceId"],
            )
        return inner

    def recorded(self, action: str, instance_id: str | None = None) -> list[dict[str, str]]:
        """The calls of ``action`` recorded so far (naming one instance's action, if given)."""
        with self.lock:
            return [
                dict(c)
                for c in self.calls
                if c["Action"] == action
                and (instance_id is None or c.get("_instance") == instance_id)
            ]

    def _resolve(self, params: dict[str, str]) -> tuple[str, str | None, str | None]:
        """(whose action the call names, its token, the error it gets or None); the caller
        holds the lock."""
        group, hook = params.get("AutoScalingGroupName"), params.get("LifecycleHookName")
        token, instance = params.get("LifecycleActionToken"), params.get("InstanceId")
        if token is not None:
            held = self.actions.get(token)
        else:  # by instance: whatever action that instance has for this hook
            held = next((a for a in self.actions.values() if a[2] == instance), None)
            token = next((t for t, a in self.actions.items() if a == held), None)
        named = held[2] if held is not None else instance or ""
        if held is None or token in self.gone or held[:2] != (group, hook):
            return named, token, f"No active Lifecycle Action found with instance ID {instance}"
        return named, token, None

    @staticmethod
    def _invalid(params: dict[str, str]) -> str | None:
        """What the API reference's request parameters rule out, as AWS words it."""
        required = ["AutoScalingGroupName", "LifecycleHookName"]
        if params.get("Action") == "CompleteLifecycleAction":
            required.append("LifecycleActionResult")
        for name in required:
            if not params.get(name):
                member = name[0].lower() + name[1:]
                return (
                    f"1 validation error detected: Value null at '{member}' failed to "
                    f"satisfy constraint: Member must not be null"
                )
        if params.get("Action") == "CompleteLifecycleAction" and params[
            "LifecycleActionResult"
        ] not in ("CONTINUE", "ABANDON"):
            return "LifecycleActionResult must be CONTINUE or ABANDON"
        if not params.get("LifecycleActionToken") and not params.get("InstanceId"):
            return "Either a lifecycle action token or an instance id must be specified"
        return None

    def answer(self, params: dict[str, str]) -> tuple[int, bytes] | None:
        """The reply for a call answered here; None to relay it to moto."""
        action = params.get("Action", "")
        request_id = str(uuid.uuid4())
        if action in ANSWERED:
            with self.lock:
                error = self._invalid(params)
                named, token, gone = self._resolve(params)
                self.calls.append({**params, "_instance": named})
                if error is None and gone is None and action == "CompleteLifecycleAction":
                    assert token is not None
                    self.gone.add(token)  # answered: it waits no more
            if error is not None or gone is not None:
                return 400, (
                    f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type>'
                    f"<Code>ValidationError</Code><Message>{error or gone}</Message></Error>"
                    f"<RequestId>{request_id}</RequestId></ErrorResponse>"
                ).encode()
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
                f"</DescribeAutoScalingInstancesResponse>"
            ).encode()
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
                params = (
                    {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
                    if self.command == "POST"
                    else {}
                )
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
