"""Wiring, in one place: build every part from the config, run the loop, reload on SIGHUP.

The parts never reach into each other: :class:`App` makes them in the order data flows
(queue -> checks -> key manager -> decide -> loop, with the mirror worker and the key
directory watcher beside the loop), hands each what it needs, and on SIGHUP asks each part
that depends on the Salt master's config to :meth:`reload` itself.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_ork import __version__, defaults
from aws_ork.aws import make_client
from aws_ork.base.awserrors import aws_errors
from aws_ork.base.errors import AwsOrkError, ConfigError, MirrorError, QueueError, StateError
from aws_ork.base.files import lock_directory
from aws_ork.base.naming import Template
from aws_ork.base.saltkeys import KeyLocation
from aws_ork.checks import build_checks
from aws_ork.checks.keytags import KeyTagWatcher
from aws_ork.checks.terminations import Terminations
from aws_ork.config import ANY_TOPIC, Config, require_safe
from aws_ork.decide import Handler
from aws_ork.effects.announce import Announcer
from aws_ork.effects.followups import KeyFollowups
from aws_ork.effects.hooks import Hooks
from aws_ork.keys import bypass
from aws_ork.keys.arrivals import KeyArrivals
from aws_ork.keys.backend import preload_event_transport
from aws_ork.keys.eventkey import EventKey, EventKeyError, event_key_path
from aws_ork.keys.impostors import DeniedWatcher
from aws_ork.keys.manager import KeyManager, load_master_opts
from aws_ork.keys.reactor import SaltEvents
from aws_ork.keys.stage import KeyStage
from aws_ork.keys.watcher import KeyDirWatcher
from aws_ork.lifecycle import Completer, HookClient
from aws_ork.lifecycle.waits import LIFECYCLE_WAITS_FILE
from aws_ork.loop import Loop
from aws_ork.memory import (
    ENROLLED_FILE,
    FINISHED_FILE,
    NAMES_FILE,
    PREAUTHORISED_FILE,
    IdMemory,
    MinionNames,
)
from aws_ork.mirror.bucket import s3_tree
from aws_ork.mirror.journal import Journal
from aws_ork.mirror.manifest import FILE_NAME as MANIFEST_FILE
from aws_ork.mirror.memories import OWN_ROOT, memory_mirror
from aws_ork.mirror.planner import S3Mirror
from aws_ork.mirror.worker import MirrorWorker, unmirrored_dirs
from aws_ork.runtime import systemd
from aws_ork.runtime.metrics import AwsOrkCollector, MetricsServer, health
from aws_ork.runtime.stats import KeyStats, MirrorStats, QueueStats, Stats
from aws_ork.runtime.stopper import Stopper
from aws_ork.sqs.archive import Archive
from aws_ork.sqs.queue import Queue
from aws_ork.sweep import Sweep

log = logging.getLogger("aws_ork")


@dataclass(frozen=True)
class RunOptions:
    """The command-line flags that change how the daemon runs."""

    dry_run: bool = False
    once: bool = False
    purge: bool = False


def mirrored_key_dir(cfg: Config, location: KeyLocation) -> str | None:
    """The master's key directory relative to PkiDir; None (with a warning) when outside it."""
    key_dir = os.path.realpath(location.key_dir)
    root = os.path.realpath(cfg.pki_dir)
    if os.path.commonpath([key_dir, root]) != root:
        log.warning(
            "the master's key directory %s is not under PkiDir %s: minion keys are "
            "not mirrored to S3",
            key_dir,
            root,
        )
        return None
    rel = os.path.relpath(key_dir, root)
    return "" if rel == "." else rel


def event_key(cfg: Config, master_opts: Mapping[str, Any]) -> EventKey:
    """The secret that signs the reactor events (:func:`event_key_path`), made at the first
    start; ConfigError (exit 2) when it is unsafe."""
    path = event_key_path(cfg, master_opts)
    try:
        return EventKey.load_or_create(path, master_opts)
    except EventKeyError as exc:
        raise ConfigError(cfg.source, "SaltEventKey", str(exc)) from None


class PartsStats:
    """The metrics' :class:`~aws_ork.runtime.stats.StatsSource`: the running parts' tallies,
    copied into one :class:`~aws_ork.runtime.stats.Stats` at each scrape or health probe
    (from the metrics thread; memory only, and the mirror journal's length).

    The one place that knows where each tally lives, so the metrics know none of the parts:
    when a tally moves to another part, this copy changes, not the metrics."""

    def __init__(
        self,
        loop: Loop,
        handler: Handler,
        completer: Completer | None,
        salt_events: SaltEvents | None,
        mirror: MirrorWorker | None,
    ) -> None:
        self.loop = loop
        self.handler = handler
        self.completer = completer
        self.salt_events = salt_events
        self.mirror = mirror

    def stats(self) -> Stats:
        loop, counters = self.loop, self.loop.counters
        keys = dict(self.handler.key_counts)
        events = self.salt_events
        return Stats(
            queue=QueueStats(
                url=loop.queue.url,
                received=counters.received,
                finished=dict(counters.finished),
                retries=dict(counters.retries),
                rejections=dict(counters.rejections),
                oldest_message_age=loop.oldest_message_age,
                last_receive=loop.last_receive,
                health_seconds=loop.health_seconds,
                receive_failures=loop.outage.failures,
            ),
            keys=KeyStats(
                accepted=keys.get("accepted", 0),
                deleted=keys.get("deleted", 0),
                preauthorised=keys.get("preauthorised", 0),
                rejected=keys.get("rejected", 0),
                impostors=keys.get("impostor", 0),
            ),
            lifecycle_completed=self.completer.completed if self.completer is not None else 0,
            salt_events_fired=events.fired if events is not None else 0,
            salt_events_dropped=events.dropped if events is not None else 0,
            aws_errors=aws_errors(),
            mirror=self._mirror(),
        )

    def _mirror(self) -> MirrorStats | None:
        if self.mirror is None:
            return None
        status = self.mirror.status()
        return MirrorStats(
            pending=status.pending,
            behind_seconds=status.behind_seconds,
            failures=status.failures,
            last_success=status.last_success,
            failing_since=status.failing_since,
            repaired=status.repaired,
        )


class App:
    """The daemon's parts, built from the config (after daemonizing: sockets do not survive
    it). Raises QueueError when the queue cannot be reached (a start-up failure, exit 1)."""

    def __init__(
        self, cfg: Config, run: RunOptions, master_opts: Mapping[str, Any], stopper: Stopper
    ) -> None:
        self.cfg = cfg
        self.run_options = run
        for warning in require_safe(cfg):  # the explicit unsafe choices, at every start
            log.warning("%s", warning)
        for warning in bypass.warnings(master_opts):  # the master's own auto-acceptance
            log.warning("%s", warning)
        location = KeyLocation.from_opts(master_opts)
        self.queue = Queue.open(
            make_client("sqs", cfg.sqs_region), url=cfg.queue_url, name=cfg.queue_name
        )
        self.queue.check()  # an unreachable queue is a start-up failure, not a silent retry
        # EC2 is asked in SQS_Region: the instances a master manages live in the queue's region.
        ec2 = make_client("ec2", cfg.sqs_region, max_attempts=3) if cfg.verify_instances else None
        self._state_lock = self._lock_state_dir(cfg, run.dry_run)
        terminations = (
            None
            if cfg.verify_instances
            else Terminations(cfg.state_dir / "terminated", dry_run=run.dry_run)
        )
        finished, enrolled, preauthorised, names = self._memories(cfg, run.dry_run)
        max_age = self.queue.retention_seconds + defaults.SNS_TIMESTAMP_SKEW_SECONDS
        # Lifecycle actions are answered in SQS_Region too: the groups live there.
        hooks = (
            HookClient(make_client("autoscaling", cfg.sqs_region, max_attempts=3))
            if cfg.lifecycle_hooks
            else None
        )
        try:  # the waits of the last run (StateDir/lifecycle-waits) are taken up
            self.completer = (
                Completer(hooks, dry_run=run.dry_run, path=cfg.state_dir / LIFECYCLE_WAITS_FILE)
                if hooks is not None
                else None
            )
        except OSError as exc:
            raise StateError(f"StateDir {cfg.state_dir}: {exc}") from exc
        checks = build_checks(
            cfg,
            location=location,
            ec2=ec2,
            terminations=terminations,
            finished=finished,
            max_age_seconds=max_age,
            autoscaling=hooks,
            names=names,
        )
        self.arrivals = KeyArrivals(location, master_opts) if cfg.key_binding == "tag" else None
        # --dry-run changes nothing, and tells no reactor about changes it did not make
        self.salt_events = (
            SaltEvents(master_opts, key=event_key(cfg, master_opts))
            if cfg.salt_events and not run.dry_run
            else None
        )
        stage = KeyStage(
            KeyManager(master_opts, dry_run=run.dry_run),
            terminations=terminations,
            enrolled=enrolled,
            arrivals=self.arrivals,
            names=names,
            preauthorised=preauthorised,
        )
        announcer = Announcer(self.salt_events)
        actions = Hooks(self.completer, cfg.completes_hook)
        #: what the arrivals and key directory watchers report: the key stage, then the effects
        self.followups = KeyFollowups(stage, announcer, actions)
        #: key binding by key: the key tags looked for while launches wait (a batched
        #: DescribeInstances a second), and the keys Salt denies under bound ids reported
        self.key_tags: KeyTagWatcher | None = None
        self.denied: DeniedWatcher | None = None
        if cfg.key_binding == "tag" and checks.instance is not None:
            instance_check = checks.instance
            self.key_tags = KeyTagWatcher(
                instance_check.lookup.get_many,
                instance_check.judge_launch,
            )
            self.denied = DeniedWatcher(master_opts)
        self.handler = Handler(
            stage,
            delete_unknown=cfg.delete_unknown_messages,
            checks=checks.all,
            terminations=terminations,
            finished=finished,
            announcer=announcer,
            hooks=actions,
            key_tags=self.key_tags,
        )
        self.mirror: MirrorWorker | None = None
        if cfg.bucket_url is not None and not run.dry_run:
            key_dir = mirrored_key_dir(cfg, location)
            tree = s3_tree(cfg)
            self.mirror = MirrorWorker(
                S3Mirror(
                    tree,
                    cfg.pki_dir,
                    cfg.state_dir / MANIFEST_FILE,
                    unmirrored=unmirrored_dirs(key_dir),
                    foreign=(OWN_ROOT,),
                ),
                Journal(cfg.state_dir),
                key_dir=key_dir,
                reconcile_seconds=cfg.reconcile_minutes * 60,
                memories=memory_mirror(tree, cfg.state_dir),
            )
        if self.mirror is not None:
            self.followups.changed = self._mirror_key
        self.watcher = KeyDirWatcher(location)
        sweep = None
        if cfg.sweep_minutes and ec2 is not None:
            assert checks.instance is not None  # VerifyInstances: the EC2 check is built
            sweep = Sweep(
                stage,
                checks.instance.lookup,
                checks.instance,
                every_seconds=cfg.sweep_minutes * 60,
            )
        self.archive = self._archive(cfg)
        self.loop = Loop(
            self.queue,
            self.handler,
            stopper,
            mirror=self.mirror,
            poll_pause=cfg.poll_pause,
            once=run.once,
            dry_run=run.dry_run,
            on_reload=self.reload,
            watcher=self.watcher,
            stubs_used=self.followups,
            sweep=sweep,
            watchdog=systemd.Watchdog.from_environment(),
            archive=self.archive,
        )
        self.metrics = self._metrics_server(cfg, run)
        log.info(
            "aws_ork %s: queue %s, keys %s, mirror %s%s",
            __version__,
            self.queue.url,
            location.key_dir,
            cfg.bucket_url or "off",
            " (dry run: nothing will be changed)" if run.dry_run else "",
        )

    def _metrics_server(self, cfg: Config, run: RunOptions) -> MetricsServer | None:
        """/metrics and /healthz on MetricsAddress, bound now so that an address in use stops
        the start (exit 2, naming the option). Not for ``--once``: a run that ends at the
        first empty receive has nothing to scrape, and would take the daemon's port."""
        if cfg.metrics_address is None or run.once:
            return None
        source = PartsStats(self.loop, self.handler, self.completer, self.salt_events, self.mirror)
        limit = cfg.health_mirror_seconds
        try:
            return MetricsServer(
                cfg.metrics_address, AwsOrkCollector(source), lambda: health(source, limit)
            )
        except OSError as exc:
            host, port = cfg.metrics_address
            raise ConfigError(
                cfg.source,
                "MetricsAddress",
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            ) from exc

    @staticmethod
    def _lock_state_dir(cfg: Config, dry_run: bool) -> int | None:
        """One daemon per StateDir: its memories, mirror journal and manifest are one
        process's own (two daemons of a Salt cluster on one host each need their own). A
        dry run writes nothing there and takes no lock."""
        if dry_run:
            return None
        try:
            return lock_directory(cfg.state_dir)
        except OSError as exc:
            raise StateError(f"StateDir: {exc}") from exc

    @staticmethod
    def _memories(
        cfg: Config, dry_run: bool
    ) -> tuple[IdMemory, IdMemory, IdMemory, MinionNames | None]:
        """The replay memories in StateDir, the instances given an autosign stub (whose keys
        the sweep may delete), and (MinionIdTemplate other than the instance id) the minion
        id each instance was given; an unreadable one is a start-up failure."""
        try:
            finished = IdMemory(
                cfg.state_dir / FINISHED_FILE,
                keep_seconds=defaults.SQS_MAX_RETENTION_SECONDS,
                limit=defaults.FINISHED_MESSAGES_LIMIT,
                dry_run=dry_run,
            )
            enrolled = IdMemory(
                cfg.state_dir / ENROLLED_FILE,
                keep_seconds=defaults.ENROLLED_KEEP_SECONDS,
                limit=defaults.ENROLLED_LIMIT,
                dry_run=dry_run,
            )
            preauthorised = IdMemory(
                cfg.state_dir / PREAUTHORISED_FILE,
                keep_seconds=defaults.ENROLLED_KEEP_SECONDS,
                limit=defaults.ENROLLED_LIMIT,
                dry_run=dry_run,
            )
            names = (
                None
                if Template(cfg.minion_id_template).identity
                else MinionNames(
                    cfg.state_dir / NAMES_FILE, limit=defaults.MINION_NAMES_LIMIT, dry_run=dry_run
                )
            )
        except OSError as exc:
            raise StateError(f"StateDir {cfg.state_dir}: {exc}") from exc
        return finished, enrolled, preauthorised, names

    @staticmethod
    def _archive(cfg: Config) -> Archive | None:
        """ArchiveDir (with --dry-run too: it changes no key); one that cannot be made or
        opened is a start-up failure: an archive asked for must not be silently missing."""
        if cfg.archive_dir is None:
            return None
        try:
            # a folder per topic only for the topics named: a made-up one shares other-topics
            named = () if cfg.allowed_topic_arns == (ANY_TOPIC,) else cfg.allowed_topic_arns
            archive = Archive(cfg.archive_dir, cfg.archive_max_mb * 1024 * 1024, named)
        except OSError as exc:
            raise StateError(f"ArchiveDir {cfg.archive_dir}: {exc}") from exc
        log.info(
            "archiving every received message in %s (%d MB on disk so far, cap %s)",
            cfg.archive_dir,
            archive.total // (1024 * 1024),
            f"{cfg.archive_max_mb} MB, {archive.max_files} files" if cfg.archive_max_mb else "none",
        )
        return archive

    def reload(self) -> None:
        """SIGHUP: re-read the Salt master's config; each part that depends on it reloads."""
        opts = load_master_opts(self.cfg.salt_master_config)
        for warning in bypass.warnings(opts):  # an option added since the start counts too
            log.warning("%s", warning)
        self.handler.reload(opts)
        self.watcher.reload(opts)
        if self.arrivals is not None:
            self.arrivals.reload(opts)
        if self.denied is not None:
            self.denied.reload(opts)

    def run(self) -> int:
        """Serve the metrics, run; stop serving on the way out, however it ends."""
        if self.metrics is not None:
            self.metrics.start()
        try:
            return self._run()
        finally:
            if self.metrics is not None:
                self.metrics.stop()

    def _run(self) -> int:
        """Purge if asked, start the mirror, loop until stopped; return the exit status."""
        if self.run_options.purge:
            self._purge()
        if self.mirror is not None:
            self.mirror.start()  # replays the journal, then reconciles with the bucket
        self._start_key_watchers()
        if self.completer is not None:
            self.completer.start()
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.loop.request_reload())
        if self.loop.watchdog.enabled:
            log.info("systemd watchdog: %.0f s", self.loop.watchdog.period)
        systemd.notify("READY=1")  # the queue was reached in __init__
        threading.Thread(target=preload_event_transport, name="preload", daemon=True).start()
        try:
            status = self.loop.run()
        finally:
            self._stop_key_watchers()
            if self.completer is not None:
                self.completer.stop()
        systemd.notify("STOPPING=1")
        self.handler.keys.close()
        if self.salt_events is not None:
            self.salt_events.close()
        if self.mirror is not None and not self.mirror.stop(defaults.FINAL_MIRROR_SECONDS):
            log.error(
                "S3 mirror is behind the key store; it will be brought up to date at the next start"
            )
            status = status or 1
        return status

    def _mirror_key(self, minion_id: str) -> None:
        """A key a watcher thread changed goes to the S3 mirror (the periodic reconciliation
        catches it should the journal not be writable now)."""
        assert self.mirror is not None
        try:
            self.mirror.request([minion_id])
        except MirrorError as exc:
            log.error("%s: could not record the key change for the mirror: %s", minion_id, exc)

    def _start_key_watchers(self) -> None:
        """Key binding's threads: the arrivals watcher, the key tag watcher, the denied-key
        watcher (each only under KeyBinding = tag)."""
        if self.arrivals is not None:
            self.arrivals.start(self.followups.on_key_presented, self.handler.stage.on_key_lost)
        if self.key_tags is not None:
            self.key_tags.start(self.followups.on_key_published)
        if self.denied is not None:
            self.denied.start(self.followups.on_key_denied)

    def _stop_key_watchers(self) -> None:
        for watcher in (self.arrivals, self.key_tags, self.denied):
            if watcher is not None:
                watcher.stop()

    def _purge(self) -> None:
        if self.run_options.dry_run:
            log.info("dry run: queue would be purged")
            return
        try:
            self.queue.purge()
            log.info("queue purged")
        except QueueError as exc:  # e.g. PurgeQueueInProgress: once a minute at most
            log.warning("queue not purged: %s", exc)


def run(cfg: Config, options: RunOptions, master_opts: Mapping[str, Any]) -> int:
    """Build the app and run it; the exit status (1 when it cannot start)."""
    stopper = Stopper()
    _install_signals(stopper)
    try:
        app = App(cfg, options, master_opts, stopper)
    except AwsOrkError as exc:
        log.error("cannot start: %s", exc)
        return 2 if isinstance(exc, ConfigError) else 1
    return app.run()


def _install_signals(stopper: Stopper) -> None:
    def handler(signum: int, _frame: object) -> None:
        stopper.stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
