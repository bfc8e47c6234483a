"""Logging handlers, set up only by the entry point (modules just use getLogger).

Two formats (LogFormat): ``text`` for people and ``json``, one object per line (time,
level, logger, message) that a log shipper reads without a grok pattern. Under systemd
(stderr is the journal's stream, see :func:`stderr_is_journal`) a line carries no timestamp
of our own (the journal stamps every entry) and starts with its priority, ``<3>`` ... ``<7>``
as sd-daemon(3) describes, so ``journalctl -p warning`` shows our warnings and errors.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "aws_ork[%(process)d]: %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Where syslog is reached: the local socket when there is one, else UDP on localhost.
SYSLOG_ADDRESSES: list[str | tuple[str, int]] = ["/dev/log", ("localhost", 514)]
#: sd-daemon(3) priority prefixes (syslog's levels) for Python's levels; a level between two
#: takes the priority of the lower one (CRITICAL and above is <2>, SD_CRIT).
JOURNAL_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
DEBUG_PRIORITY = 7


def journal_priority(levelno: int) -> int:
    """The syslog priority of a Python level: <3> error, <4> warning, <6> info, <7> debug."""
    for level, priority in JOURNAL_PRIORITIES:
        if levelno >= level:
            return priority
    return DEBUG_PRIORITY


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """True when stderr is connected to the journal: ``$JOURNAL_STREAM`` (``DEVICE:INODE``,
    set by systemd) names stderr's device and inode. A stderr redirected elsewhere by a child
    of the service does not match, so it keeps the ordinary format."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # no stderr, or one without a descriptor
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601, ms), level, logger, message, and the
    traceback as ``exception`` when there is one. Without ``with_time`` (the journal stamps
    its entries) the time is left out."""

    def __init__(self, *, with_time: bool = True) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {}
        if self.with_time:
            stamp = datetime.fromtimestamp(record.created, UTC)
            entry["time"] = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        entry.update(level=record.levelname, logger=record.name, message=record.getMessage())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class JournalFormatter(logging.Formatter):
    """Prefix every line of a record with its priority: the journal makes an entry of each
    line, and a traceback's lines belong to the same priority as its first."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def formatter(
    log_format: str, *, journal: bool = False, text_format: str = FORMAT
) -> logging.Formatter:
    """The formatter for ``log_format`` (``text`` or ``json``); for the journal, without
    timestamps and with priority prefixes."""
    if log_format == "json":
        return JournalFormatter(JsonFormatter(with_time=False)) if journal else JsonFormatter()
    if journal:
        return JournalFormatter(logging.Formatter(JOURNAL_FORMAT))
    return logging.Formatter(text_format)


def setup(
    *,
    verbose: bool,
    log_file: Path | None = None,
    syslog: bool = False,
    log_format: str = "text",
    journal: bool | None = None,
) -> None:
    """One handler on the root logger: stderr, a file, or syslog (facility daemon).

    ``journal`` (stderr only) defaults to :func:`stderr_is_journal`."""
    handler: logging.Handler
    if syslog:
        address = next(
            (a for a in SYSLOG_ADDRESSES if not isinstance(a, str) or Path(a).exists()),
            ("localhost", 514),
        )
        handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        if log_format == "json":  # syslog stamps its lines; the tag keeps the program name
            handler.setFormatter(_Tagged(JsonFormatter(with_time=False)))
        else:
            handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    elif log_file is not None:
        handler = logging.handlers.WatchedFileHandler(log_file)  # survives logrotate
        handler.setFormatter(formatter(log_format))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            formatter(log_format, journal=stderr_is_journal() if journal is None else journal)
        )
    root = logging.getLogger()
    for old in list(root.handlers):  # Salt's import installs temporary handlers of its own
        root.removeHandler(old)
    root.addHandler(handler)
    # -v is about aws_ork's own decisions: the libraries (botocore, Salt, asyncio, git...)
    # stay at INFO, and Salt, which logs its internals at INFO, at WARNING
    root.setLevel(logging.INFO)
    logging.getLogger("aws_ork").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("salt", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _Tagged(logging.Formatter):
    """``aws_ork[PID]: `` before another formatter's line: syslog's program tag."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return f"aws_ork[{record.process}]: {self.inner.format(record)}"
