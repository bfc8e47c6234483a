"""The ``aws_ork`` command: parse flags, load the config, build the parts, run the loop.

Exit status: 0 ok, 1 runtime failure (queue unreachable at start-up, ...), 2 usage or
config error. Errors are one line on stderr naming the file, the option and the problem.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from aws_ork import app, config, preflight
from aws_ork.app import RunOptions
from aws_ork.base.errors import AwsOrkError, ConfigError
from aws_ork.config import Config
from aws_ork.flags import build_parser
from aws_ork.keys.manager import load_master_opts
from aws_ork.mirror.bucket import s3_tree
from aws_ork.mirror.memories import restore_memories
from aws_ork.mirror.restore import RestoreRefused, restore
from aws_ork.runtime import logsetup
from aws_ork.runtime.daemonize import daemonize

log = logging.getLogger("aws_ork")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.force and not args.restore:
        parser.error("--force goes with --restore")
    try:
        cfg = config.load(args.config)
        if args.restore:
            return run_restore(cfg, force=args.force)
        warnings = config.require_safe(cfg)  # settings unsafe without another: exit 2
        if args.check:
            return preflight.run(cfg, warnings)
        master_opts = load_master_opts(cfg.salt_master_config)
    except ConfigError as exc:
        print(f"aws_ork: {exc}", file=sys.stderr)
        return 2
    options = RunOptions(dry_run=args.dry_run, once=args.once, purge=args.purge)
    if args.daemon:
        return daemonize(
            cfg,
            verbose=args.verbose,
            syslog=args.syslog,
            run=lambda: app.run(cfg, options, master_opts),
        )
    logsetup.setup(verbose=args.verbose, syslog=args.syslog, log_format=cfg.log_format)
    return app.run(cfg, options, master_opts)


def run_restore(cfg: Config, *, force: bool) -> int:
    """``--restore``: copy the mirror into PkiDir; print a summary. 0 ok, 1 S3 or disk
    failure or an object refused as unsafe, 2 no BucketUrl or a non-empty PkiDir without
    --force."""
    if cfg.bucket_url is None:
        raise ConfigError(cfg.source, "BucketUrl", "not set: --restore needs the mirror's URL")
    logsetup.setup(verbose=False, log_format=cfg.log_format)
    tree = s3_tree(cfg)
    try:
        result = restore(tree, cfg.pki_dir, force=force)
        memories = restore_memories(tree, cfg.state_dir)
    except RestoreRefused as exc:
        raise ConfigError(cfg.source, "PkiDir", str(exc)) from None
    except AwsOrkError as exc:
        print(f"aws_ork: restore failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {result.files} files ({result.bytes} bytes) from {cfg.bucket_url} "
        f"into {cfg.pki_dir}"
    )
    if result.left_in_place:
        print(
            f"{result.left_in_place} local files not overwritten by the mirror were left in place"
        )
    if result.stubs_dropped:
        print(
            f"{result.stubs_dropped} autosign stubs not restored (pre-authorisations of "
            f"the old master; send the launch again for an instance still booting)"
        )
    if result.keys_dropped:
        print(
            f"{result.keys_dropped} pending or denied keys not restored (each minion "
            f"presents its key again; a restored copy would look fresh)"
        )
    if result.clamped:
        print(
            f"{result.clamped} file modes clamped (no setuid/setgid/sticky, no group or "
            f"world write; *.pem 0400 or 0600)"
        )
    print(
        f"restored {memories.files} replay and enrolment memories ({memories.entries} "
        f"entries) into {cfg.state_dir}"
    )
    if memories.refused:
        print(
            f"{len(memories.refused)} memories refused (too large): not restored, see the warnings"
        )
    if result.refused:
        print(
            f"{len(result.refused)} objects refused (unsafe path or link): not restored, "
            f"see the warnings"
        )
    return 1 if result.refused or memories.refused else 0
