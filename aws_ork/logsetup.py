"""Logging handlers, set up only by the entry point (modules just use getLogger)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "aws_ork[%(process)d]: %(levelname)s %(name)s: %(message)s"


def setup(*, verbose: bool, log_file: Path | None = None, syslog: bool = False) -> None:
    """One handler on the root logger: stderr, a file, or syslog (facility daemon)."""
    handler: logging.Handler
    if syslog:
        address = "/dev/log" if Path("/dev/log").exists() else ("localhost", 514)
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
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # botocore and Salt are chatty at debug level; keep -v about aws_ork's own decisions
    for noisy in ("botocore", "boto3", "urllib3", "salt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
