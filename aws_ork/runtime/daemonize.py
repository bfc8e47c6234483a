"""``-d``: detach with python-daemon; the PID file is locked for as long as we run."""

from __future__ import annotations

import sys
from collections.abc import Callable

from aws_ork.config import Config
from aws_ork.runtime import logsetup


def daemonize(cfg: Config, *, verbose: bool, syslog: bool, run: Callable[[], int]) -> int:
    """Detach, set up logging to LogFile (or syslog), then ``run()``; its exit status.

    1 when another instance holds the PID file, 2 when LogFile cannot be written (checked
    before detaching, so the error still reaches the terminal)."""
    import daemon
    import daemon.pidfile

    pidfile = daemon.pidfile.TimeoutPIDLockFile(str(cfg.pid_file), acquire_timeout=0)
    if pidfile.is_locked():
        print(
            f"aws_ork: {cfg.pid_file}: already running (pid {pidfile.read_pid()})", file=sys.stderr
        )
        return 1
    try:
        if not syslog:
            cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
            cfg.log_file.touch(exist_ok=True)
    except OSError as exc:
        print(
            f"aws_ork: {cfg.source}: LogFile: cannot write {cfg.log_file}: {exc}", file=sys.stderr
        )
        return 2
    context = daemon.DaemonContext(
        pidfile=pidfile, umask=0o022, working_directory="/", signal_map={}
    )
    with context:
        logsetup.setup(
            verbose=verbose,
            log_file=None if syslog else cfg.log_file,
            syslog=syslog,
            log_format=cfg.log_format,
        )
        return run()
