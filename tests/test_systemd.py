"""systemd integration: the unit file verifies clean, and the real daemon speaks sd_notify
(READY=1, WATCHDOG=1 while it idles, STOPPING=1) over a datagram socket as systemd would."""

from __future__ import annotations

import configparser
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aws_ork import defaults
from aws_ork.runtime.systemd import Watchdog
from tests.daemon import start_aws_ork, wait_for

UNIT = Path(__file__).resolve().parent.parent / "data" / "aws_ork.service"
INSTALL_HINT = (
    "systemd-analyze not found: install it with `apt-get install systemd` (Debian/"
    "Ubuntu; it works without systemd running) or `dnf install systemd`; .ci/run "
    "installs it when it runs as root"
)


def unit_values() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(UNIT)
    return parser


def verify(unit_text: str, tmp_path: Path) -> tuple[int, list[str]]:
    """``systemd-analyze verify`` on a copy of the unit whose ExecStart runs this Python's
    aws_ork (verify checks that the command exists); (exit status, lines naming our unit)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(INSTALL_HINT)
    lines = unit_text.splitlines()
    exec_start = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    assert len(exec_start) == 1, "the unit has one ExecStart"
    args = lines[exec_start[0]].split(None, 1)[1] if " " in lines[exec_start[0]] else ""
    lines[exec_start[0]] = f"ExecStart={sys.executable} -m aws_ork {args}"
    copy = tmp_path / "aws_ork.service"  # verify wants the unit's real name
    copy.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    output = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in output if "aws_ork" in line]


def test_the_unit_file_verifies_without_a_warning(tmp_path):
    status, about_us = verify(UNIT.read_text(), tmp_path)
    assert status == 0 and about_us == [], about_us


def test_verify_does_report_a_broken_unit(tmp_path):
    """The filter above sees systemd's warnings: a misspelt key is reported against us."""
    broken = UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs=")
    _, about_us = verify(broken, tmp_path)
    assert any("WatchdogSecs" in line for line in about_us), about_us


def test_the_unit_is_notify_with_a_watchdog_above_the_long_poll():
    service = unit_values()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    watchdog = int(service["WatchdogSec"])
    # half of it must stay above the long poll, or every idle cycle would be shortened
    assert watchdog / 2 > defaults.WAIT_TIME_SECONDS
    # A ping can be a quarter period old when a receive starts; the slowest receive that
    # still ends (every botocore attempt reaching its read timeout, plus standard mode's
    # jittered waits of up to 1, 2, 4, 8 s) must not get a live daemon restarted.
    slowest_receive = defaults.MAX_ATTEMPTS * defaults.READ_TIMEOUT_SECONDS + sum(
        2**i for i in range(defaults.MAX_ATTEMPTS - 1)
    )
    assert watchdog * 3 / 4 > slowest_receive
    assert service["ProtectSystem"] == "strict"
    assert "/etc/salt/pki" in service["ReadWritePaths"].split()


def test_the_unit_bounds_descriptors_and_tasks_above_what_the_daemon_may_need():
    service = unit_values()["Service"]
    nofile, tasks = int(service["LimitNOFILE"]), int(service["TasksMax"])
    # MetricsAddress holds at most twice its limit for a moment (an accept batch beyond it)
    assert (
        2 * defaults.METRICS_MAX_CONNECTIONS + defaults.MIRROR_UPLOAD_THREADS + 100
        < nofile
        <= 65536
    )
    assert defaults.MIRROR_UPLOAD_THREADS + 20 < tasks <= 1024


# --- the watchdog, in-process ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def recording() -> tuple[list[str], Callable[[str], bool]]:
    sent: list[str] = []

    def send(state: str) -> bool:
        sent.append(state)
        return True

    return sent, send


@pytest.mark.parametrize(
    ("environ", "period"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "90000000"}, 90.0),
        ({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "4242"}, 90.0),  # for us (pid 4242)
        ({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "4243"}, None),  # for another process
        ({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
)
def test_watchdog_from_the_environment(environ, period):
    watchdog = Watchdog.from_environment(environ, pid=4242)
    assert watchdog.period == period
    assert watchdog.enabled is (period is not None)


def test_watchdog_pings_at_most_every_quarter_period():
    clock = Clock()
    sent, send = recording()
    watchdog = Watchdog(8.0, clock=clock, send=send)
    assert watchdog.ping()  # the first at once
    clock.now += 1.9
    assert not watchdog.ping()
    clock.now += 0.1  # 2 s = 8 / 4 since the last one
    assert watchdog.ping()
    assert sent == ["WATCHDOG=1", "WATCHDOG=1"]


def test_watchdog_caps_the_long_poll_at_half_the_period():
    assert Watchdog(None).longest_wait(20) == 20
    assert Watchdog(180.0).longest_wait(20) == 20
    assert Watchdog(10.0).longest_wait(20) == 5
    assert Watchdog(1.0).longest_wait(20) == 1  # SQS counts whole seconds; 0 would spin


def test_disabled_watchdog_sends_nothing():
    sent, send = recording()
    watchdog = Watchdog(None, send=send)
    assert not watchdog.ping()
    assert sent == [] and watchdog.interval == float("inf")


# --- the real daemon over a notify socket ------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path):
    """An AF_UNIX datagram socket, as systemd's $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    if len(str(path)) >= 100:  # sun_path is 108 bytes
        pytest.fail(f"{path} is too long for an AF_UNIX socket; set a shorter --basetemp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield sock, path
    sock.close()


def collect(
    sock: socket.socket,
    got: list[str],
    until: Callable[[list[str]], bool],
    timeout: float,
    what: str,
) -> None:
    """Receive datagrams into ``got`` until ``until(got)``, failing after ``timeout``."""

    def step() -> bool:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        return until(got)

    wait_for(step, timeout, what)


def test_ready_then_watchdog_while_idle_then_stopping(conf, tmp_path, notify_socket, monkeypatch):
    sock, path = notify_socket
    monkeypatch.delenv("WATCHDOG_PID", raising=False)  # set when the tests run under systemd
    log = tmp_path / "daemon.log"
    # a 2 s watchdog: the 20 s long poll is cut to 1 s, so an idle daemon pings every cycle
    proc = start_aws_ork(
        conf, log, "-v", env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
    )
    got: list[str] = []
    try:
        collect(
            sock,
            got,
            lambda g: "READY=1" in g and g.count("WATCHDOG=1") >= 3,
            90,
            f"READY=1 and three WATCHDOG=1 (got {got}; log: {log})",
        )
        proc.send_signal(signal.SIGTERM)
        collect(sock, got, lambda g: "STOPPING=1" in g, 30, f"STOPPING=1 (got {got})")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert got[0] == "READY=1", got
    assert got[-1] == "STOPPING=1", got
    assert set(got[1:-1]) == {"WATCHDOG=1"} and len(got) >= 5, got
    text = log.read_text()
    assert "systemd watchdog: 2 s" in text
    assert "long poll (up to 1s)" in text and "long poll (up to 20s)" not in text
