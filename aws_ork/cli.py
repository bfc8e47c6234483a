"""The ``aws_ork`` command: parse flags, load the config, build the parts, run the loop.

Exit status: 0 ok, 1 runtime failure (queue unreachable at start-up, ...), 2 usage or
config error. Errors are one line on stderr naming the file, the option and the problem.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_ork import __version__, config, defaults
from aws_ork.aws import make_client
from aws_ork.checks import source as trust
from aws_ork.config import Config
from aws_ork.decide import Handler
from aws_ork.errors import AwsOrkError, ConfigError, MirrorError, QueueError
from aws_ork.keys.location import ACCEPTED, PENDING
from aws_ork.keys.manager import KeyManager, load_master_opts
from aws_ork.keys.watcher import KeyDirWatcher
from aws_ork.loop import Loop
from aws_ork.mirror.bucket import ObjectOptions, S3Tree
from aws_ork.mirror.journal import Journal
from aws_ork.mirror.manifest import FILE_NAME as MANIFEST_FILE
from aws_ork.mirror.restore import RestoreRefused, restore
from aws_ork.mirror.worker import MirrorWorker, S3Mirror
from aws_ork.runtime import logsetup, systemd
from aws_ork.runtime.stopper import Stopper
from aws_ork.sqs.queue import Queue

log = logging.getLogger("aws_ork")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aws_ork",
        description="Keep a Salt master's minion keys in step with EC2 Auto Scaling events "
                    "from SQS, and mirror the pki to S3.",
    )
    add = parser.add_argument
    add("-V", "--version", action="version", version=f"aws_ork {__version__}")
    add("-c", "--config", metavar="PATH",
        help=f"config file (default ${config.ENV_PATH} or {config.DEFAULT_PATH})")
    add("-v", "--verbose", action="store_true", help="debug logging")
    add("-d", "--daemon", action="store_true", help="detach, write PidFile, log to LogFile")
    add("--syslog", action="store_true", help="with -d: log to syslog (facility daemon)")
    add("--purge", action="store_true", help="purge the queue once at start-up, then run")
    add("--once", action="store_true",
        help="handle messages until a receive comes back empty, then exit")
    add("--dry-run", action="store_true",
        help="log every decision; change no key, delete no message, write nothing to S3")
    add("--check", action="store_true",
        help="check the config, the queue, the bucket and the Salt pki, then exit")
    add("--restore", action="store_true",
        help="copy the pki mirror from BucketUrl into PkiDir, then exit")
    add("--force", action="store_true", help="with --restore: overwrite a non-empty PkiDir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.force and not args.restore:
        parser.error("--force goes with --restore")
    try:
        cfg = config.load(args.config)
        if args.check:
            return run_check(cfg)
        if args.restore:
            return run_restore(cfg, force=args.force)
        master_opts = load_master_opts(cfg.salt_master_config)
    except ConfigError as exc:
        print(f"aws_ork: {exc}", file=sys.stderr)
        return 2
    if args.daemon:
        return _daemonize(cfg, args, master_opts)
    logsetup.setup(verbose=args.verbose, syslog=args.syslog)
    return run(cfg, args, master_opts)


@dataclass
class Parts:
    """Everything the loop needs, built from the config."""

    queue: Queue
    handler: Handler
    mirror: MirrorWorker | None


def build(cfg: Config, args: argparse.Namespace, master_opts: dict[str, Any]) -> Parts:
    """Make the clients and the key manager (after daemonizing: sockets do not survive it)."""
    sqs = make_client("sqs", cfg.sqs_region)
    queue = Queue.open(sqs, url=cfg.queue_url, name=cfg.queue_name)
    queue.check()  # an unreachable queue is a start-up failure (exit 1), not a silent retry
    keys = KeyManager(master_opts, dry_run=args.dry_run)
    handler = Handler(keys, delete_unknown=cfg.delete_unknown_messages)
    # EC2 is asked in SQS_Region: the instances a master manages live in the queue's region.
    ec2 = make_client("ec2", cfg.sqs_region, max_attempts=3) if cfg.verify_instances else None
    handler.checks = tuple(trust.build_checks(cfg, keys=lambda: handler.keys, ec2=ec2,
                                              dry_run=args.dry_run))
    mirror = None
    if cfg.bucket_url is not None and not args.dry_run:
        mirror = MirrorWorker(
            S3Mirror(s3_tree(cfg), cfg.pki_dir, cfg.state_dir / MANIFEST_FILE),
            Journal(cfg.state_dir), key_dir=_key_dir(cfg, master_opts),
            reconcile_seconds=cfg.reconcile_minutes * 60)
    return Parts(queue, handler, mirror)


def s3_tree(cfg: Config) -> S3Tree:
    """The mirror's objects, written with the configured SSE and ACL."""
    assert cfg.bucket_url is not None
    s3 = make_client("s3", cfg.effective_bucket_region, max_attempts=2)
    return S3Tree(s3, cfg.bucket_url, ObjectOptions(cfg.bucket_sse, cfg.bucket_kms_key_id,
                                                    cfg.bucket_acl))


def _key_dir(cfg: Config, master_opts: dict[str, Any]) -> str | None:
    """The master's pki_dir relative to PkiDir; None (with a warning) when outside it."""
    key_dir = os.path.realpath(master_opts["pki_dir"])
    root = os.path.realpath(cfg.pki_dir)
    if os.path.commonpath([key_dir, root]) != root:
        log.warning("the master's pki_dir %s is not under PkiDir %s: minion keys are not "
                    "mirrored to S3", key_dir, root)
        return None
    rel = os.path.relpath(key_dir, root)
    return "" if rel == "." else rel


def run(cfg: Config, args: argparse.Namespace, master_opts: dict[str, Any]) -> int:
    """Build, purge if asked, loop until stopped; return the exit status."""
    stopper = Stopper()
    _install_signals(stopper)
    try:
        parts = build(cfg, args, master_opts)
    except QueueError as exc:
        log.error("cannot start: %s", exc)
        return 1
    except AwsOrkError as exc:
        log.error("cannot start: %s", exc)
        return 2 if isinstance(exc, ConfigError) else 1
    log.info("aws_ork %s: queue %s, pki %s, mirror %s%s", __version__, parts.queue.url,
             master_opts.get("pki_dir"), cfg.bucket_url or "off",
             " (dry run: nothing will be changed)" if args.dry_run else "")
    if args.purge:
        _purge(parts.queue, args.dry_run)
    if parts.mirror is not None:
        parts.mirror.start()  # replays the journal, then reconciles with the bucket

    def reload() -> None:
        opts = load_master_opts(cfg.salt_master_config)
        parts.handler.keys = KeyManager(opts, dry_run=args.dry_run)
        waiting = loop.watcher.expected if loop.watcher is not None else ()
        loop.watcher = KeyDirWatcher(parts.handler.keys.key_dir, waiting)

    loop = Loop(parts.queue, parts.handler, stopper, mirror=parts.mirror,
                poll_pause=cfg.poll_pause, once=args.once, dry_run=args.dry_run,
                on_reload=reload, watcher=KeyDirWatcher(parts.handler.keys.key_dir))
    signal.signal(signal.SIGHUP, lambda _signum, _frame: loop.request_reload())
    systemd.notify("READY=1")
    status = loop.run()
    systemd.notify("STOPPING=1")
    if parts.mirror is not None and not parts.mirror.stop(defaults.FINAL_MIRROR_SECONDS):
        log.error("S3 mirror is behind the key store; it will be brought up to date at the "
                  "next start")
        status = status or 1
    return status


def run_check(cfg: Config) -> int:
    """``--check``: one line per check; 0 only if all pass."""
    results: list[tuple[bool, str]] = [(True, f"config {cfg.source}")]
    try:
        opts = load_master_opts(cfg.salt_master_config)
        pki = opts["pki_dir"]
        missing = [d for d in (ACCEPTED, PENDING)
                   if not os.access(os.path.join(pki, d), os.R_OK | os.W_OK | os.X_OK)]
        if missing:
            results.append((False, f"salt pki {pki}: cannot write {', '.join(missing)}"))
        else:
            results.append((True, f"salt pki {pki}"))
    except ConfigError as exc:
        results.append((False, f"salt master config: {exc}"))
    try:
        queue = Queue.open(make_client("sqs", cfg.sqs_region, max_attempts=2),
                           url=cfg.queue_url, name=cfg.queue_name)
        results.append((True, f"queue {queue.url} ({queue.check()} messages waiting)"))
    except QueueError as exc:
        results.append((False, f"queue: {exc}"))
    if cfg.bucket_url is None:
        results.append((True, "bucket: mirror off (no BucketUrl)"))
    else:
        try:
            s3_tree(cfg).check()
            results.append((True, f"bucket {cfg.bucket_url}"))
        except MirrorError as exc:
            results.append((False, f"bucket: {exc}"))
        if not os.access(cfg.pki_dir, os.R_OK | os.X_OK):
            results.append((False, f"PkiDir {cfg.pki_dir}: not readable"))
    for ok, text in results:
        print(f"{'ok  ' if ok else 'FAIL'} {text}")
    return 0 if all(ok for ok, _ in results) else 1


def run_restore(cfg: Config, *, force: bool) -> int:
    """``--restore``: copy the mirror into PkiDir; print a summary. 0 ok, 1 S3 or disk
    failure or an object refused as unsafe, 2 no BucketUrl or a non-empty PkiDir without
    --force."""
    if cfg.bucket_url is None:
        raise ConfigError(cfg.source, "BucketUrl", "not set: --restore needs the mirror's URL")
    logsetup.setup(verbose=False)
    try:
        result = restore(s3_tree(cfg), cfg.pki_dir, force=force)
    except RestoreRefused as exc:
        raise ConfigError(cfg.source, "PkiDir", str(exc)) from None
    except AwsOrkError as exc:
        print(f"aws_ork: restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"restored {result.files} files ({result.bytes} bytes) from {cfg.bucket_url} "
          f"into {cfg.pki_dir}")
    if result.left_in_place:
        print(f"{result.left_in_place} local files not overwritten by the mirror were left "
              f"in place")
    if result.stubs_dropped:
        print(f"{result.stubs_dropped} autosign stubs not restored (pre-authorisations of "
              f"the old master; send the launch again for an instance still booting)")
    if result.clamped:
        print(f"{result.clamped} file modes clamped (no setuid/setgid/sticky, no group or "
              f"world write; *.pem 0400 or 0600)")
    if result.refused:
        print(f"{len(result.refused)} objects refused (unsafe path or link): not restored, "
              f"see the warnings")
        return 1
    return 0


def _purge(queue: Queue, dry_run: bool) -> None:
    if dry_run:
        log.info("dry run: queue would be purged")
        return
    try:
        queue.purge()
        log.info("queue purged")
    except QueueError as exc:  # e.g. PurgeQueueInProgress: once a minute at most
        log.warning("queue not purged: %s", exc)


def _install_signals(stopper: Stopper) -> None:
    def handler(signum: int, _frame: object) -> None:
        stopper.stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _daemonize(cfg: Config, args: argparse.Namespace, master_opts: dict[str, Any]) -> int:
    """Detach with python-daemon; the PID file is locked for as long as we run."""
    import daemon
    import daemon.pidfile

    pidfile = daemon.pidfile.TimeoutPIDLockFile(str(cfg.pid_file), acquire_timeout=0)
    if pidfile.is_locked():
        print(f"aws_ork: {cfg.pid_file}: already running (pid {pidfile.read_pid()})",
              file=sys.stderr)
        return 1
    try:
        if not args.syslog:
            cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
            cfg.log_file.touch(exist_ok=True)
    except OSError as exc:
        print(f"aws_ork: {cfg.source}: LogFile: cannot write {cfg.log_file}: {exc}",
              file=sys.stderr)
        return 2
    context = daemon.DaemonContext(pidfile=pidfile, umask=0o022, working_directory="/",
                                   signal_map={})
    with context:
        logsetup.setup(verbose=args.verbose, log_file=None if args.syslog else cfg.log_file,
                       syslog=args.syslog)
        return run(cfg, args, master_opts)
