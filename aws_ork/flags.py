"""The command line's flags: one :class:`argparse.ArgumentParser`, and the exit status.

Apart from ``cli.py`` so that ``aws_ork/docgen.py`` can write the aws_ork(8) man page from the
same parser without importing the daemon (boto3, Salt): this module needs the standard library
and the config's file names only.
"""

from __future__ import annotations

import argparse

from aws_ork import __version__, config

#: exit status -> what it means (cli.main returns these; aws_ork(8) and the README say them)
EXIT_STATUS: tuple[tuple[int, str], ...] = (
    (0, "ok (and for --check: no FAIL line; warnings alone pass)"),
    (
        1,
        "runtime failure: the queue unreachable at start-up, another aws_ork holding StateDir, "
        "the mirror left behind by --once, a FAIL line of --check, a failed or partly refused "
        "--restore",
    ),
    (
        2,
        "usage or config error, one line on stderr naming the file and the option (for --check "
        "also an unsafe SaltEventKey; for --restore a non-empty PkiDir without --force)",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The flags, each with the text ``--help``, aws_ork(8) and docs/operations.md show."""
    parser = argparse.ArgumentParser(
        prog="aws_ork",
        description="Keep a Salt master's minion keys in step with EC2 Auto Scaling events "
        "from SQS, and mirror the pki to S3.",
    )
    add = parser.add_argument
    add(
        "-V",
        "--version",
        action="version",
        version=f"aws_ork {__version__}",
        help="print the version and exit",
    )
    add(
        "-c",
        "--config",
        metavar="PATH",
        help=f"config file; default {config.DEFAULT_PATH}, or ${config.ENV_PATH} when set. A "
        "missing default file means all defaults; a missing file named with -c is an error",
    )
    add(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging (aws_ork's own decisions; libraries stay quiet)",
    )
    add(
        "-d",
        "--daemon",
        action="store_true",
        help="detach (python-daemon), write PidFile, log to LogFile",
    )
    add(
        "--syslog",
        action="store_true",
        help="log to syslog (facility daemon) instead of LogFile or stderr",
    )
    add(
        "--purge",
        action="store_true",
        help="purge the queue once at start-up, then run (SQS allows one purge a minute; a "
        "refused purge is a warning)",
    )
    add(
        "--once",
        action="store_true",
        help="handle messages until a receive comes back empty, then exit (cron, tests, "
        "debugging); exit 1 if the queue could not be read or the S3 mirror could not be "
        "brought up to date",
    )
    add(
        "--dry-run",
        action="store_true",
        help="log every decision; change no key, delete or delay no message, write nothing to S3",
    )
    add(
        "--check",
        action="store_true",
        help="validate the config, then check each part the daemon needs (the master's own "
        "accept settings, the queue and its policy, the bucket, the Salt pki, SaltEventKey, "
        "EC2, CertCacheDir, StateDir), one line each: ok, WARN (works, but unsafe or "
        "fragile) or FAIL; exit 1 on any FAIL, 0 otherwise, 2 on a config error",
    )
    add(
        "--restore",
        action="store_true",
        help="copy the pki mirror from BucketUrl back into PkiDir, and the replay and "
        "enrolment memories into StateDir, then exit; a non-empty PkiDir is refused (exit 2) "
        "unless --force",
    )
    add(
        "--force",
        action="store_true",
        help="with --restore: overwrite the files of a non-empty PkiDir (local files the "
        "mirror lacks are left in place)",
    )
    return parser
