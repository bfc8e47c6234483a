"""Where log lines go: stderr, LogFile (-d), or syslog facility daemon (--syslog)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import socket
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from aws_ork.runtime import logsetup
from tests.daemon import command, run_aws_ork, write_config


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_syslog_sends_to_facility_daemon(monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        monkeypatch.setattr(logsetup, "SYSLOG_ADDRESSES", [server.getsockname()])
        logsetup.setup(verbose=False, syslog=True)
        logging.getLogger("aws_ork.test").warning("key accepted for %s", "i-0123abcd")
        packet = server.recv(4096).decode()
    priority = int(packet[1 : packet.index(">")])
    assert priority >> 3 == logging.handlers.SysLogHandler.LOG_DAEMON
    assert "aws_ork[" in packet and "key accepted for i-0123abcd" in packet


def test_log_file_gets_the_lines_and_verbose_only_widens_our_own(tmp_path):
    log_file = tmp_path / "aws_ork.log"
    logsetup.setup(verbose=True, log_file=log_file)
    logging.getLogger("aws_ork.loop").debug("long poll")
    logging.getLogger("botocore.endpoint").info("chatter")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    assert "long poll" in text and "chatter" not in text


# --- LogFormat = json, and the journal ---


def log_some_lines() -> None:
    """A line per level, one with arguments, one with a traceback."""
    log = logging.getLogger("aws_ork.test")
    log.debug("long poll")
    log.info("key accepted for %s", "i-0123abcd")
    log.warning("two\nlines")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("handler failed")
    for handler in logging.getLogger().handlers:
        handler.flush()


def test_json_is_one_object_per_line_with_time_level_logger_message(tmp_path):
    log_file = tmp_path / "aws_ork.log"
    logsetup.setup(verbose=True, log_file=log_file, log_format="json")
    log_some_lines()

    entries = [json.loads(line) for line in log_file.read_text().splitlines()]

    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("DEBUG", "aws_ork.test", "long poll"),
        ("INFO", "aws_ork.test", "key accepted for i-0123abcd"),
        ("WARNING", "aws_ork.test", "two\nlines"),
        ("ERROR", "aws_ork.test", "handler failed"),
    ]
    for entry in entries:
        stamp = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        assert stamp.utcoffset() == timedelta(0)
    assert "RuntimeError: boom" in entries[3]["exception"]
    assert "exception" not in entries[0]


@pytest.fixture
def journal_stderr(tmp_path, monkeypatch):
    """A function making stderr a file whose device and inode $JOURNAL_STREAM names, as
    systemd sets it for a service's stream; it returns a function reading what was written.
    (Called from the test itself: pytest's capture puts its own stderr back after fixtures.)"""
    path = tmp_path / "journal-stream"
    stream = open(path, "w")  # noqa: SIM115 - closed below

    def attach():
        info = os.fstat(stream.fileno())
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        return lambda: (stream.flush(), path.read_text())[1]

    yield attach
    stream.close()


def test_under_the_journal_text_lines_carry_priorities_and_no_time(journal_stderr):
    written = journal_stderr()
    logsetup.setup(verbose=True)
    log_some_lines()

    lines = written().splitlines()

    assert lines[:4] == [
        "<7>DEBUG aws_ork.test: long poll",
        "<6>INFO aws_ork.test: key accepted for i-0123abcd",
        "<4>WARNING aws_ork.test: two",
        "<4>lines",
    ]
    assert lines[4] == "<3>ERROR aws_ork.test: handler failed"
    # every line of the traceback is an entry of the same priority
    assert len(lines) > 6 and all(line.startswith("<3>") for line in lines[4:])
    assert lines[-1] == "<3>RuntimeError: boom"


def test_under_the_journal_json_lines_carry_priorities_and_no_time(journal_stderr):
    written = journal_stderr()
    logsetup.setup(verbose=True, log_format="json")
    log_some_lines()

    lines = written().splitlines()

    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    entries = [json.loads(line[3:]) for line in lines]
    assert all("time" not in entry for entry in entries)
    assert entries[2]["message"] == "two\nlines"


def test_a_journal_stream_that_is_not_stderr_changes_nothing(journal_stderr, monkeypatch):
    # a child of the service whose stderr was redirected: $JOURNAL_STREAM names another file
    written = journal_stderr()
    info = os.stat(os.devnull)
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    logsetup.setup(verbose=False)
    logging.getLogger("aws_ork.test").warning("plain")

    [line] = written().splitlines()

    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING aws_ork.test: plain", line)


@pytest.mark.parametrize(
    ("levelno", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (logging.INFO + 5, 6),
        (logging.DEBUG - 5, 7),
    ],
)
def test_journal_priorities_are_sd_daemons(levelno, priority):
    assert logsetup.journal_priority(levelno) == priority


# --- through the daemon ---


def test_the_daemon_logs_json_and_under_systemd_with_priorities(master, tmp_path, queue_url):
    conf = write_config(tmp_path / "c.conf", queue_url=queue_url, master=master, LogFormat="json")
    result = run_aws_ork(conf, "--once")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(e["message"].startswith("aws_ork ") and e["level"] == "INFO" for e in entries)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)

    # stderr is the journal's stream: systemd passes its device:inode in $JOURNAL_STREAM
    stream = tmp_path / "journal-stream"
    with open(stream, "w") as err:
        info = os.fstat(err.fileno())
        journal = subprocess.run(
            command(conf, "--once"),
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=120,
            env={**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"},
        )
    lines = stream.read_text().splitlines()
    assert journal.returncode == 0, lines
    assert lines and all(line.startswith(("<3>", "<4>", "<6>", "<7>")) for line in lines)
    assert all("time" not in json.loads(line[3:]) for line in lines)


def test_syslog_json_is_tagged_and_leaves_the_time_to_syslog(monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        monkeypatch.setattr(logsetup, "SYSLOG_ADDRESSES", [server.getsockname()])
        logsetup.setup(verbose=False, syslog=True, log_format="json")
        logging.getLogger("aws_ork.test").error("key store error for %s", "i-0123abcd")
        packet = server.recv(4096).decode().rstrip("\0")
    tag, _, text = packet.partition(": ")
    assert re.fullmatch(r"<\d+>aws_ork\[\d+\]", tag)
    assert json.loads(text) == {
        "level": "ERROR",
        "logger": "aws_ork.test",
        "message": "key store error for i-0123abcd",
    }
