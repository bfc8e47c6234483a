"""MetricsAddress: /metrics and /healthz of the real daemon (moto server + a real salt-master).

The daemon runs as a subprocess; the test scrapes it over HTTP on 127.0.0.1 and parses the
answer with prometheus_client's own parser, so a metric that is misnamed or malformed fails.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from aws_ork import __version__, defaults
from aws_ork.base import awserrors
from aws_ork.loop import oldest_age
from aws_ork.runtime import metrics
from aws_ork.runtime.stats import KeyStats, MirrorStats, QueueStats, Stats
from aws_ork.sqs.queue import Queue
from tests.daemon import run_aws_ork, send, start_aws_ork, states, wait_for, write_config
from tests.messages import new_id, sns_launch, sns_terminate
from tests.metricsenv import get, scrape, total, try_get, value
from tests.saltenv import SaltMaster, free_port
from tests.slowclients import SlowFlood

#: A 4 s systemd watchdog cuts the long poll to 2 s (runtime/systemd.py Watchdog.longest_wait),
#: and /healthz allows 3 poll intervals without a completed receive: 6 s instead of 60 s.
SHORT_POLLS = {"WATCHDOG_USEC": "4000000"}


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def metrics_conf(tmp_path: Path, queue_url: str, master: SaltMaster) -> tuple[Path, int]:
    """The ``conf`` fixture's config plus MetricsAddress on a free port; (path, port)."""
    port = free_port()
    path = write_config(
        tmp_path / "aws_ork.conf",
        queue_url=queue_url,
        master=master,
        MetricsAddress=f"127.0.0.1:{port}",
    )
    return path, port


def test_metrics_count_exactly_what_the_daemon_did(
    master, tmp_path, sqs, queue_url, bucket, monkeypatch
):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    port = free_port()
    conf = write_config(
        tmp_path / "aws_ork.conf",
        queue_url=queue_url,
        master=master,
        bucket=bucket,
        MetricsAddress=f"127.0.0.1:{port}",
    )
    first, second, gone = new_id(), new_id(), new_id()
    master.add_pending_key(first)
    master.add_pending_key(second)
    master.add_pending_key(gone)
    proc = start_aws_ork(conf, tmp_path / "daemon.log", "-v", env=SHORT_POLLS)
    try:
        assert wait_for(lambda: try_get(port, "/healthz"), 60, "/healthz to answer") == (
            200,
            "ok\n",
        )
        send(
            sqs,
            queue_url,
            sns_launch(first),
            sns_launch(second),
            "not an event at all",
            sns_terminate(gone),
        )
        wait_for(
            lambda: total(scrape(port), "aws_ork_messages_finished_total") == 4,
            60,
            "4 messages finished",
        )
        # the terminate is remembered: a launch of that instance afterwards is rejected
        send(sqs, queue_url, sns_launch(gone))
        wait_for(
            lambda: total(scrape(port), "aws_ork_messages_finished_total") == 5,
            60,
            "the late launch finished",
        )
        samples = wait_for(
            lambda: (
                (got := scrape(port))[("aws_ork_mirror_pending_changes", frozenset())] == 0
                and value(got, "aws_ork_salt_events_fired_total") == 4
                and got
            ),
            60,
            "the mirror caught up and the reactor events fired",
        )
        assert states(master, first, second, gone) == {
            first: "minions",
            second: "minions",
            gone: None,
        }
    finally:
        status = stop(proc)
        master.clear_keys()
    assert status == 0

    assert value(samples, "aws_ork_build_info", version=__version__) == 1
    assert value(samples, "aws_ork_messages_received_total") == 5
    finished = {
        dict(labels)["kind"] + "/" + dict(labels)["reason"]: v
        for (name, labels), v in samples.items()
        if name == "aws_ork_messages_finished_total"
    }
    assert finished == {
        "launch/accepted": 2,
        "unknown/unknown": 1,
        "terminate/deleted": 1,
        "launch/terminated": 1,
    }
    assert (
        value(samples, "aws_ork_messages_rejected_total", kind="launch", reason="terminated") == 1
    )
    assert total(samples, "aws_ork_messages_rejected_total") == 1
    assert total(samples, "aws_ork_messages_retried_total") == 0
    assert value(samples, "aws_ork_keys_accepted_total") == 2
    assert value(samples, "aws_ork_keys_deleted_total") == 1
    assert value(samples, "aws_ork_keys_preauthorised_total") == 0
    assert value(samples, "aws_ork_keys_impostors_deleted_total") == 0
    assert value(samples, "aws_ork_lifecycle_actions_completed_total") == 0
    # one aws_ork/... event per decision about an instance (the unknown body names none)
    assert value(samples, "aws_ork_salt_events_dropped_total") == 0
    assert total(samples, "aws_ork_aws_errors_total") == 0  # the mirror's HEAD 404s included
    age = value(samples, "aws_ork_oldest_message_age_seconds")
    assert age is not None and age >= 0
    assert value(samples, "aws_ork_mirror_behind_seconds") == 0
    assert value(samples, "aws_ork_mirror_failures") == 0
    last = value(samples, "aws_ork_mirror_last_success_age_seconds")
    assert last is not None and last >= 0


def test_without_a_bucket_no_mirror_metrics_and_other_paths_are_404(metrics_conf, tmp_path):
    conf, port = metrics_conf
    proc = start_aws_ork(conf, tmp_path / "daemon.log")
    try:
        wait_for(lambda: try_get(port, "/healthz"), 60, "/healthz to answer")
        samples = scrape(port)
        assert get(port, "/")[0] == 404
        assert get(port, "/metrics/../etc/passwd")[0] == 404
        assert get(port, "/healthz?verbose=1") == (200, "ok\n")
    finally:
        assert stop(proc) == 0
    assert value(samples, "aws_ork_messages_received_total") == 0
    assert not [name for name, _ in samples if name.startswith("aws_ork_mirror_")]


def test_the_request_log_escapes_control_characters(metrics_conf, tmp_path):
    """A request line is the client's text: an escape sequence or a backspace in it (which
    would rewrite the log line on a terminal) is logged escaped."""
    conf, port = metrics_conf
    log = tmp_path / "daemon.log"
    proc = start_aws_ork(conf, log, "-v")
    try:
        wait_for(lambda: try_get(port, "/healthz"), 60, "/healthz to answer")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /\x1b[2Kok-forged\x08 HTTP/1.0\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.0 404")
        wait_for(
            lambda: "ok-forged" in log.read_text(errors="replace"), 30, "the request's log line"
        )
    finally:
        assert stop(proc) == 0
    data = log.read_bytes()
    assert b"\x1b" not in data and b"\x08" not in data
    [line] = [t for t in data.decode().splitlines() if "ok-forged" in t]
    assert "GET /\\x1b[2Kok-forged\\x08 HTTP/1.0" in line


def test_healthz_turns_503_naming_the_queue_while_it_is_cut_and_200_after(
    master, metrics_conf, tmp_path, queue_url, sqs_proxy, monkeypatch
):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    conf, port = metrics_conf
    log = tmp_path / "daemon.log"
    proc = start_aws_ork(
        conf, log, "-v", env={**SHORT_POLLS, "AWS_ENDPOINT_URL_SQS": sqs_proxy.url}
    )
    try:
        assert wait_for(lambda: try_get(port, "/healthz"), 60, "/healthz to answer") == (
            200,
            "ok\n",
        )
        wait_for(
            lambda: log.read_text().count("long poll (up to 2s)") >= 2,
            60,
            "a completed 2 s long poll",
        )
        assert get(port, "/healthz") == (200, "ok\n")

        sqs_proxy.stop()  # the daemon's SQS is unreachable from here on
        status, reason = wait_for(
            lambda: (r := get(port, "/healthz"))[0] == 503 and r,
            120,
            "/healthz to report the queue",
        )
        assert reason.startswith(f"queue {queue_url}: no receive completed for "), reason
        assert reason.count("\n") == 1, reason
        assert get(port, "/metrics")[0] == 200  # a scrape never waits on AWS

        sqs_proxy.start()
        wait_for(lambda: get(port, "/healthz") == (200, "ok\n"), 120, "/healthz back to ok")
        samples = scrape(port)
        assert total(samples, "aws_ork_aws_errors_total") >= 1
        assert {
            dict(labels)["service"]
            for (name, labels) in samples
            if name == "aws_ork_aws_errors_total"
        } == {"sqs"}
    finally:
        status = stop(proc)
    assert status == 0


def test_an_address_in_use_stops_the_start_naming_the_option(master, tmp_path, queue_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        conf = write_config(
            tmp_path / "aws_ork.conf",
            queue_url=queue_url,
            master=master,
            MetricsAddress=f"127.0.0.1:{port}",
        )
        result = run_aws_ork(conf, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"MetricsAddress: cannot listen on 127.0.0.1:{port}" in result.stderr


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


#: The daemon's descriptor limit in the flood test: as low as a small unit's LimitNOFILE, and
#: below what the flood alone would take if every slow client kept a descriptor.
FLOOD_NOFILE = 128
FLOOD_CLIENTS = 200


def test_a_flood_of_slow_clients_neither_exhausts_the_daemon_nor_stops_health_or_keys(
    master, metrics_conf, tmp_path, sqs, queue_url
):
    """200 slow clients (a byte every 2 s, reconnecting when closed) against MetricsAddress:
    /healthz still answers within the client's timeout, a launch sent meanwhile is accepted,
    and the daemon's descriptors stay bounded by the connection limit."""
    conf, port = metrics_conf
    launched = new_id()
    proc = start_aws_ork(conf, tmp_path / "daemon.log", "-v")
    try:
        assert wait_for(lambda: try_get(port, "/healthz"), 60, "/healthz to answer") == (
            200,
            "ok\n",
        )
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (FLOOD_NOFILE, FLOOD_NOFILE))
        before = open_fds(proc.pid)
        most = before
        with SlowFlood(port, FLOOD_CLIENTS) as flood:
            wait_for(lambda: flood.connects >= FLOOD_CLIENTS, 60, "every slow client connected")
            full = before + defaults.METRICS_MAX_CONNECTIONS
            wait_for(lambda: open_fds(proc.pid) >= full, 60, "the flood to fill the server")
            for _ in range(5):  # urllib's 10 s timeout is the bound: a hang fails
                most = max(most, open_fds(proc.pid))
                assert get(port, "/healthz") == (200, "ok\n")
            master.add_pending_key(launched)
            send(sqs, queue_url, sns_launch(launched))

            def accepted() -> bool:
                nonlocal most
                most = max(most, open_fds(proc.pid))
                return states(master, launched)[launched] == "minions"

            wait_for(accepted, 120, "the launch sent during the flood to be accepted")
            assert get(port, "/healthz") == (200, "ok\n")
            most = max(most, open_fds(proc.pid))
            assert flood.closed_by_server > 0  # the flood did run into the limits
        # a connection's descriptor, for at most twice the limit (one accept batch beyond
        # it before the oldest are closed), and a few for the launch (EC2, the event bus)
        assert most <= before + 2 * defaults.METRICS_MAX_CONNECTIONS + 16, (before, most)
        assert get(port, "/healthz") == (200, "ok\n")
    finally:
        status = stop(proc)
        master.clear_keys()
    assert status == 0


# --- the parts, without a daemon ---


class FakeParts:
    """A StatsSource: the loop last received ``quiet`` seconds ago (limit 6 s); with
    ``mirror``, the mirror failing for ``failing_for`` seconds (None: not failing)."""

    def __init__(self, quiet: float, mirror: bool = False, failing_for: float | None = None):
        self.last_receive = time.monotonic() - quiet
        self.mirror = mirror
        self.failing_for = failing_for

    def stats(self) -> Stats:
        since = None if self.failing_for is None else time.time() - self.failing_for
        queue = QueueStats("https://sqs.example/1/q", 0, {}, {}, {}, 0.0, self.last_receive, 6.0, 2)
        mirror = MirrorStats(3, 40.0, 7, None, since, 0) if self.mirror else None
        return Stats(queue, KeyStats(), 0, 0, 0, {}, mirror)


def test_health_names_what_is_wrong_first_the_queue_then_the_mirror():
    assert metrics.health(FakeParts(0), 900) is None
    assert metrics.health(FakeParts(0, mirror=True), 900) is None
    assert metrics.health(FakeParts(0, True, 100), 900) is None  # failing, not for long
    reason = metrics.health(FakeParts(0, True, 2000), 900)
    assert reason is not None and reason.startswith(
        "S3 mirror failing for 2000 s (HealthMirrorSeconds 900; 7 failed runs"
    )
    reason = metrics.health(FakeParts(60, True, 2000), 900)
    assert reason is not None and reason.startswith(
        "queue https://sqs.example/1/q: no receive completed for 60 s (limit 6 s; "
        "2 failed receives in a row)"
    )


def test_aws_error_labels_stay_bounded(monkeypatch):
    monkeypatch.setattr(awserrors, "_aws_errors", Counter())
    awserrors.count_aws_error("sqs", "AccessDenied")
    awserrors.count_aws_error("sqs", "AccessDenied")
    awserrors.count_aws_error("s3", "a code with spaces {and braces}")
    for n in range(500):
        awserrors.count_aws_error("ec2", f"Made.Up{n}")
    errors = awserrors.aws_errors()
    assert errors[("sqs", "AccessDenied")] == 2
    assert errors[("s3", "other")] == 1
    assert len(errors) == awserrors._AWS_ERROR_SERIES + 1  # the last distinct codes: "other"
    assert errors[("ec2", "other")] == 500 - (awserrors._AWS_ERROR_SERIES - 2)


def test_messages_carry_their_sent_timestamp_for_the_backlog_age(sqs, queue_url):
    send(sqs, queue_url, "one", "two")
    queue = Queue(sqs, queue_url)
    got = wait_for(lambda: queue.receive(1), 30, "the messages")
    sent = [m.sent_timestamp for m in got]
    assert all(isinstance(t, float) for t in sent), sent
    oldest = min(t for t in sent if t is not None)
    assert oldest_age(got, now=lambda: oldest + 5) == 5
    assert oldest_age([], now=lambda: oldest + 5) == 0
