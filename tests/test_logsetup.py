"""Where log lines go: stderr, LogFile (-d), or syslog facility daemon (--syslog)."""

from __future__ import annotations

import logging
import logging.handlers
import socket

import pytest

from aws_ork.runtime import logsetup


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
    priority = int(packet[1:packet.index(">")])
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
