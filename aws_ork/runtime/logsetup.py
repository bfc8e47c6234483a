"""Logging handlers, set up only by the entry point (modules just use getLogger)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "aws_ork[%(process)d]: %(levelname)s %(name)s: %(message)s"
#: Where syslog is reached: the local socket when there is one, else UDP on localhost.
SYSLOG_ADDRESSES: list[str | tuple[str, int]] = ["/dev/log", ("localhost", 514)]


def setup(*, verbose: bool, log_file: Path | None = None, syslog: bool = False) -> None:
    """One handler on the root logger: stderr, a file, or syslog (facility daemon)."""
    handler: logging.Handler
    if syslog:
        address = next((a for a in SYSLOG_ADDRESSES if not isinstance(a, str) or Path(a).exists()),
                       ("localhost", 514))
        handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    elif log_file is not None:
        handler = logging.handlers.WatchedFileHandler(log_file)  # survives logrotate
        handler.setFormatter(logging.Formatter(FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
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
