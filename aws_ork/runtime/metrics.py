"""Prometheus metrics and ``/healthz`` on MetricsAddress, read at scrape time.

Nothing is copied into metric objects as it happens: the loop's :class:`~aws_ork.loop.Counters`,
the handler's key tallies, :meth:`~aws_ork.mirror.worker.MirrorWorker.status` and the AWS
error tally below are read when Prometheus scrapes, by a custom collector over a private
registry (no process-wide default registry, so tests and a SIGHUP never see stale metrics).
A scrape reads memory and the mirror journal's length only: it never calls AWS or Salt.

Label values are short fixed codes (event kind, reason code, AWS service and error code),
never text from a message, so the number of series stays bounded whatever arrives.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from aws_ork import __version__
from aws_ork.events.fields import clean

if TYPE_CHECKING:  # the loop and the handler import modules that import this one
    from aws_ork.decide import Handler
    from aws_ork.loop import Loop
    from aws_ork.mirror.worker import MirrorWorker

log = logging.getLogger(__name__)

#: AWS error codes come from the endpoint: an odd one is bucketed, and the table is bounded.
_CODE = re.compile(r"[A-Za-z0-9_.]{1,64}")
_AWS_ERROR_SERIES = 100
#: A request's log line (request line, status) is cut to this length.
_LOG_LINE_LIMIT = 300

_aws_errors: Counter[tuple[str, str]] = Counter()
_aws_lock = threading.Lock()


def count_aws_error(service: str, code: str) -> None:
    """Count one failed AWS call (called where botocore errors are translated)."""
    if not _CODE.fullmatch(code):
        code = "other"
    with _aws_lock:
        key = (service, code)
        if key not in _aws_errors and len(_aws_errors) >= _AWS_ERROR_SERIES:
            key = (service, "other")
        _aws_errors[key] += 1


def aws_errors() -> dict[tuple[str, str], int]:
    """A copy of the AWS error tally: {(service, code): count}."""
    with _aws_lock:
        return dict(_aws_errors)


def health(loop: Loop, mirror: MirrorWorker | None, mirror_seconds: float,
           now: Callable[[], float] = time.monotonic) -> str | None:
    """None when healthy, else the one-line reason.

    Unhealthy when the loop has not completed a receive within 3 poll intervals (its long
    poll plus PollPause: a hung loop or an unreachable queue), or the S3 mirror has been
    failing for longer than ``mirror_seconds`` (HealthMirrorSeconds)."""
    limit = loop.health_seconds
    quiet = now() - loop.last_receive
    if quiet > limit:
        failures = loop.outage.failures
        return (f"queue {loop.queue.url}: no receive completed for {quiet:.0f} s (limit "
                f"{limit:.0f} s; {failures} failed receives in a row)")
    if mirror is not None:
        status = mirror.status()
        if status.failing_since is not None:
            failing = time.time() - status.failing_since
            if failing > mirror_seconds:
                return (f"S3 mirror failing for {failing:.0f} s (HealthMirrorSeconds "
                        f"{mirror_seconds:.0f}; {status.failures} failed runs, "
                        f"{status.pending} changes waiting)")
    return None


class AwsOrkCollector(Collector):
    """Every aws_ork metric, read from the daemon's parts at scrape time."""

    def __init__(self, loop: Loop, handler: Handler, mirror: MirrorWorker | None) -> None:
        self.loop = loop
        self.handler = handler
        self.mirror = mirror

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        yield InfoMetricFamily("aws_ork_build", "aws_ork's version",
                               value={"version": __version__})
        counters = self.loop.counters
        received = CounterMetricFamily("aws_ork_messages_received",
                                       "SQS messages received")
        received.add_metric([], counters.received)
        yield received
        for name, text, table in (
                ("finished", "messages handled and deleted from the queue", counters.finished),
                ("retried", "messages given back for a retry after a delay", counters.retries),
                ("rejected", "messages that failed a trust check", counters.rejections)):
            family = CounterMetricFamily(f"aws_ork_messages_{name}", text,
                                         labels=["kind", "reason"])
            for (kind, reason), count in sorted(dict(table).items()):
                family.add_metric([kind, reason], count)
            yield family
        keys = dict(self.handler.key_counts)
        for name, text, outcome in (
                ("accepted", "minion keys accepted", "accepted"),
                ("deleted", "minion keys deleted (terminates)", "deleted"),
                ("preauthorised", "minions pre-authorised (autosign stub written)",
                 "preauthorised"),
                ("rejected", "stale pending keys moved to the rejected keys", "rejected"),
                ("impostors_deleted", "key binding: pending keys with another fingerprint "
                                      "than the instance published, deleted", "impostor")):
            family = CounterMetricFamily(f"aws_ork_keys_{name}", text)
            family.add_metric([], keys.get(outcome, 0))
            yield family
        lifecycle = CounterMetricFamily("aws_ork_lifecycle_actions_completed",
                                        "lifecycle actions completed (CompleteLifecycleAction)")
        completer = self.handler.completer
        lifecycle.add_metric([], completer.completed if completer is not None else 0)
        yield lifecycle
        events = self.handler.salt_events
        for name, text, count in (
                ("fired", "aws_ork/... events fired on the master's event bus (SaltEvents)",
                 events.fired if events is not None else 0),
                ("dropped", "aws_ork/... events dropped: the bus was down, hung or full",
                 events.dropped if events is not None else 0)):
            family = CounterMetricFamily(f"aws_ork_salt_events_{name}", text)
            family.add_metric([], count)
            yield family
        errors = CounterMetricFamily("aws_ork_aws_errors", "failed AWS calls",
                                     labels=["service", "code"])
        for (service, code), count in sorted(aws_errors().items()):
            errors.add_metric([service, code], count)
        yield errors
        yield from self._gauges()

    def _gauges(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "aws_ork_oldest_message_age_seconds",
            "age (from SentTimestamp) of the oldest message in the latest receive, when it "
            "was received; 0 after an empty receive", value=self.loop.oldest_message_age)
        yield GaugeMetricFamily(
            "aws_ork_last_receive_age_seconds", "seconds since a receive last completed",
            value=time.monotonic() - self.loop.last_receive)
        if self.mirror is None:
            return
        status = self.mirror.status()
        yield GaugeMetricFamily("aws_ork_mirror_pending_changes",
                                "key changes not yet confirmed by S3", value=status.pending)
        yield GaugeMetricFamily("aws_ork_mirror_behind_seconds",
                                "age of the oldest change not yet in S3; 0 when caught up",
                                value=status.behind_seconds)
        yield GaugeMetricFamily("aws_ork_mirror_failures",
                                "consecutive failed S3 mirror runs", value=status.failures)
        if status.last_success is not None:
            yield GaugeMetricFamily("aws_ork_mirror_last_success_age_seconds",
                                    "seconds since the last successful S3 mirror run",
                                    value=max(0.0, time.time() - status.last_success))


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one address, served by a daemon thread."""

    def __init__(self, address: tuple[str, int], collector: Collector,
                 healthy: Callable[[], str | None]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        self.registry = registry
        self.healthy = healthy
        #: binds now: an address in use is a start-up failure (OSError), not a silent gap
        self.httpd = _server_class(address[0])(address, _handler_class(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics",
                                        daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", *self.address)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            reason = self.healthy()
            if reason is None:
                return 200, "text/plain; charset=utf-8", b"ok\n"
            return 503, "text/plain; charset=utf-8", f"{reason}\n".encode()
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    """ThreadingHTTPServer listens on IPv4 only; MetricsAddress = [::1]:9731 needs IPv6."""
    if ":" not in host:
        return ThreadingHTTPServer

    class Server6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return Server6


def _handler_class(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "aws_ork"
        sys_version = ""
        timeout = 10  # a client that connects and sends nothing does not keep a thread

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            try:
                status, ctype, body = server.respond(self.path.split("?", 1)[0])
            except Exception:  # a bug in a scrape must not look like a healthy daemon
                log.exception("metrics request %s failed", self.path[:100])
                status, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            # the request line and its parts are the client's text (a newline or an escape
            # sequence in the path would forge or garble a log line): escaped, bounded
            log.debug("metrics: %s %s", self.address_string(),
                      clean(format % args, _LOG_LINE_LIMIT))

    return Handler
