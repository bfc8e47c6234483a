"""``aws_ork --check``: what ``nginx -t`` is to nginx, before a start or after a change.

One line per check, printed as soon as it is made (a check that hangs shows where):
``ok  `` it holds, ``WARN`` it works but is unsafe or fragile, ``FAIL`` the daemon would not
work, or would let someone forge a launch. Exit 1 on any FAIL; warnings alone exit 0, so a
deliberate choice (a queue without a dead-letter queue) does not break a deployment script.
A config error never gets here: the CLI exits 2 before any check. A FAIL the start would
refuse as a config error too, but which needs the master's config to be seen (an unsafe
SaltEventKey file), is printed with the other lines and makes the exit status 2, as the
start's would be.

Every check only looks, except the bucket's: it writes one small object under the prefix and
deletes it again, since only a write proves that the mirror can write.

Who may send to the queue is read from its policy by :mod:`aws_ork.preflight.queue_policy`;
the lines are :mod:`aws_ork.preflight.report`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from aws_ork import defaults
from aws_ork.aws import AWS_ERRORS, error_code, make_client
from aws_ork.base import pubkey
from aws_ork.base.errors import ConfigError, MirrorError, QueueError
from aws_ork.base.saltkeys import ACCEPTED, FILE_DRIVER, PENDING, REJECTED, KeyLocation
from aws_ork.config import Config
from aws_ork.defaults import MIN_VISIBILITY_TIMEOUT
from aws_ork.keys import bypass, saltcompat
from aws_ork.keys.eventkey import EventKey, EventKeyError, event_key_path
from aws_ork.keys.manager import load_master_opts
from aws_ork.mirror.bucket import S3Tree, s3_tree
from aws_ork.preflight.queue_policy import policy_lines
from aws_ork.preflight.report import Line, Status, config_fail, fail, ok, warn
from aws_ork.sqs.queue import Queue

#: The object written and deleted to prove the bucket is writable (under the prefix: the
#: mirror's reconciliation removes it should a check die between the put and the delete).
PROBE_OBJECT = ".aws_ork-check"
#: A waiting launch (its key, its lifecycle action) is retried every 2, 4 ... 60 s until its
#: bound: with fewer receives than that it is set aside before aws_ork could finish it.
MIN_MAX_RECEIVE_COUNT = defaults.WAIT_RECEIVES
#: The four settings of a public access block, all needed to keep the pki private.
PUBLIC_ACCESS_SETTINGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)


def run(cfg: Config, warnings: Iterable[str], out: TextIO | None = None) -> int:
    """Make every check, print its lines; 2 if a failure is a config error the start would
    refuse (exit 2), 1 if any other failed, else 0."""
    stream = out or sys.stdout
    failed = config_error = False
    for line in lines(cfg, warnings):
        print(line, file=stream, flush=True)
        failed = failed or line.status is Status.FAIL
        config_error = config_error or line.config_error
    return 2 if config_error else 1 if failed else 0


def lines(cfg: Config, warnings: Iterable[str]) -> Iterator[Line]:
    """Every check's lines, in the order the daemon depends on the parts."""
    yield ok(f"config {cfg.source}")
    for warning in warnings:  # config.require_safe: the explicit unsafe choices
        yield warn(warning)
    checks: list[Callable[[Config], Iterable[Line]]] = [
        check_queue,
        check_bucket,
        check_pki,
        check_event_key,
        check_ec2,
        check_cert_cache,
        check_state_dir,
        check_key_binding,
        check_lifecycle,
    ]
    for check in checks:
        yield from check(cfg)


# --- lifecycle hooks ---


def check_lifecycle(cfg: Config) -> Iterator[Line]:
    """With LifecycleHooks: Auto Scaling is reachable and answers (DescribeAutoScalingInstances,
    one record: what a terminating hook's proof and the completions need)."""
    if not cfg.lifecycle_hooks:
        yield ok("lifecycle hooks: none completed (LifecycleHooks is empty)")
        return
    try:
        client = make_client("autoscaling", cfg.sqs_region, max_attempts=2)
        client.describe_auto_scaling_instances(MaxRecords=1)
    except AWS_ERRORS as exc:
        yield fail(
            f"lifecycle hooks: Auto Scaling DescribeAutoScalingInstances failed: "
            f"{error_code(exc)} (the role needs autoscaling:CompleteLifecycleAction, "
            f"RecordLifecycleActionHeartbeat, DescribeLifecycleHooks and "
            f"DescribeAutoScalingInstances)"
        )
        return
    names = "every hook" if "*" in cfg.lifecycle_hooks else ", ".join(cfg.lifecycle_hooks)
    yield ok(f"lifecycle hooks: Auto Scaling reachable; completing {names}")


# --- key binding ---


def check_key_binding(cfg: Config) -> Iterator[Line]:
    """Key binding's prerequisites (VerifyInstances is enforced by the config already; the
    EC2 line above proves DescribeInstances, which carries the tags). Off is a WARN of the
    config's unsafe choices."""
    if cfg.key_binding == "tag":
        yield ok(
            f"key binding: only the key the instance published is accepted: its whole key "
            f"(tags {pubkey.KEY_TAG_PREFIX}0...: stored as accepted before the minion's "
            f"first contact) or its fingerprint (tag {cfg.key_binding_tag!r}); instances need "
            f"data/instance/aws_ork-bind-minion.sh and the instance role of docs/key-binding.md"
        )


# --- the queue ---


def check_queue(cfg: Config) -> Iterator[Line]:
    """The queue is reachable; its timeouts, its dead-letter queue, who may send to it."""
    try:
        queue = Queue.open(
            make_client("sqs", cfg.sqs_region, max_attempts=2),
            url=cfg.queue_url,
            name=cfg.queue_name,
        )
        attrs = queue.attributes(
            "ApproximateNumberOfMessages",
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "RedrivePolicy",
            "Policy",
        )
    except QueueError as exc:
        yield fail(f"queue: {exc}")
        return
    visibility = _int(attrs.get("VisibilityTimeout"))
    yield ok(
        f"queue {queue.url}: {attrs.get('ApproximateNumberOfMessages', '?')} messages "
        f"waiting, visibility timeout {_seconds(visibility)}, retention "
        f"{_seconds(_int(attrs.get('MessageRetentionPeriod')))}"
    )
    if visibility is not None and visibility < MIN_VISIBILITY_TIMEOUT:
        yield warn(
            f"queue visibility timeout {visibility} s is under "
            f"{MIN_VISIBILITY_TIMEOUT} s: a message still being handled can be "
            f"received again"
        )
    yield redrive_line(attrs.get("RedrivePolicy"))
    yield from policy_lines(attrs.get("Policy"), cfg.allowed_topic_arns, cfg.unsigned_sources)


def redrive_line(text: str | None) -> Line:
    """The dead-letter queue: without one a message that always fails comes back for ever."""
    if not text:
        return warn(
            "queue has no dead-letter queue (RedrivePolicy): a message that always "
            "fails is received again until its retention period ends"
        )
    try:
        redrive = json.loads(text)
    except ValueError:
        return warn(f"queue RedrivePolicy is not JSON: {text[:80]!r}")
    if not isinstance(redrive, dict):
        return warn(f"queue RedrivePolicy is not a JSON object: {text[:80]!r}")
    target = redrive.get("deadLetterTargetArn", "?")
    count = _int(redrive.get("maxReceiveCount"))
    if count is not None and count < MIN_MAX_RECEIVE_COUNT:
        return warn(
            f"queue dead-letter queue {target} after {count} receives: under "
            f"{MIN_MAX_RECEIVE_COUNT}, a launch waiting for its key or lifecycle action "
            f"may be set aside before its bound (50 leaves room)"
        )
    return ok(f"queue dead-letter queue {target} after {count} receives")


# --- the bucket ---


def check_bucket(cfg: Config) -> Iterator[Line]:
    """Reachable, writable, encrypted by default, not public."""
    if cfg.bucket_url is None:
        yield ok("bucket: mirror off (no BucketUrl)")
        return
    tree = s3_tree(cfg)
    try:
        tree.check()
        probe = f"aws_ork --check {os.getpid()}\n".encode()
        tree.put(PROBE_OBJECT, probe, 0o600, hashlib.md5(probe, usedforsecurity=False).hexdigest())
        tree.delete([PROBE_OBJECT])
    except MirrorError as exc:
        yield fail(f"bucket: {exc}")
        return
    yield ok(
        f"bucket {cfg.bucket_url}: reachable, writable ({tree.key(PROBE_OBJECT)} put and deleted)"
    )
    try:
        algorithms = tree.default_encryption()
    except MirrorError as exc:
        yield warn(f"bucket encryption: cannot read it: {exc}")
    else:
        if algorithms:
            yield ok(f"bucket encryption: default {' '.join(algorithms)}")
        else:
            written = (
                f"; BucketSSE = {cfg.bucket_sse} encrypts what aws_ork writes"
                if cfg.bucket_sse
                else ""
            )
            yield warn(f"bucket encryption: the bucket has no default encryption{written}")
    yield public_access_line(tree)
    if not os.access(cfg.pki_dir, os.R_OK | os.X_OK):
        yield fail(f"PkiDir {cfg.pki_dir}: not readable, nothing can be mirrored")


def public_access_line(tree: S3Tree) -> Line:
    """The bucket's own public access block (the account's is not read): all four on."""
    try:
        block = tree.public_access_block()
    except MirrorError as exc:
        return warn(f"bucket public access block: cannot read it: {exc}")
    missing = [name for name in PUBLIC_ACCESS_SETTINGS if not block.get(name)]
    if not block:
        return warn(
            "bucket public access block: none: a policy or ACL can make the pki "
            "(master.pem included) public"
        )
    if missing:
        return warn(f"bucket public access block: {', '.join(missing)} not on")
    return ok("bucket public access block: all four settings on")


# --- the Salt master ---


def check_pki(cfg: Config) -> Iterator[Line]:
    """The master's key directory (cluster_pki_dir on a clustered master) and the state
    directories aws_ork writes: accepted, pending, rejected, autosign."""
    refusal = saltcompat.release_refusal(saltcompat.salt_release())
    if refusal:
        yield config_fail(f"salt release: {refusal}: the start refuses it (exit 2)")
        return
    try:
        opts = load_master_opts(cfg.salt_master_config)
        location = KeyLocation.from_opts(opts)
    except ConfigError as exc:
        yield fail(f"salt master config: {exc}")
        return
    yield from master_option_lines(opts, cfg.salt_master_config)
    yield from salt_release_lines(opts)
    missing = _dir_problem(location.key_dir, create=False)
    if missing:
        yield fail(
            f"salt pki {location.key_dir}: {missing} (the master's pki_dir in "
            f"{cfg.salt_master_config})"
        )
        return
    # with another keys.cache_driver the keys are not files: only the autosign stubs are
    files = location.driver == FILE_DRIVER
    directories = (
        [location.key_dir / state for state in (ACCEPTED, PENDING, REJECTED)] if files else []
    )
    problems = [
        problem
        for problem in (
            *(_dir_problem(directory, create=False) for directory in directories),
            _dir_problem(location.autosign_dir, create=True),
        )
        if problem
    ]
    if problems:
        yield fail(f"salt pki {location.key_dir}: {'; '.join(problems)}")
    elif files:
        yield ok(f"salt pki {location.key_dir}")
    else:
        yield ok(
            f"salt pki {location.key_dir} (keys in the master's {location.driver!r} cache driver)"
        )
    if not files and cfg.verify_instances:
        yield fail(
            f"salt keys.cache_driver {location.driver!r} keeps no key files: no "
            f"pending key's age can be read, so with VerifyInstances no key is ever "
            f"accepted (freshness fails closed)"
        )


def salt_release_lines(opts: Mapping[str, Any]) -> Iterator[Line]:
    """The installed Salt's release: ok when tested, a WARN for what the start warns about
    (keys/saltcompat.py; a release too old already FAILed as the master config's error)."""
    release = saltcompat.salt_release()
    found = saltcompat.release_warnings(release, opts)
    for warning in found:
        yield warn(f"salt release: {warning}")
    if not found:
        oldest = ".".join(map(str, saltcompat.OLDEST))
        yield ok(
            f"salt release {release[0]}.{release[1]} (aws_ork is tested with {oldest} to "
            f"{saltcompat.NEWEST_LINE}.x)"
        )


def master_option_lines(opts: Mapping[str, Any], path: Path) -> Iterator[Line]:
    """A FAIL for each master option that accepts keys without aws_ork (keys/bypass.py)."""
    found = bypass.accepting_options(opts)
    for _option, why in found:
        yield fail(
            f"salt master {why}: aws_ork's checks decide nothing for those keys "
            f"(in {path} or its includes)"
        )
    if not found:
        yield ok(
            "salt master: no auto_accept, open_mode, autosign_file or "
            "autosign_grains_dir (only aws_ork accepts keys)"
        )


def check_event_key(cfg: Config) -> Iterator[Line]:
    """SaltEvents: the secret that signs the reactor events (keys/eventkey.py) is safe, or can
    be made at the first start. It is read with the start's own rules, never created here.
    An unsafe file is a FAIL that exits 2, as the start refuses it with exit 2."""
    if not cfg.salt_events:
        return
    try:
        opts = load_master_opts(cfg.salt_master_config)
    except ConfigError:
        return  # the salt master config line has FAILed already
    try:
        path = event_key_path(cfg, opts)
    except ConfigError as exc:
        yield config_fail(f"SaltEventKey {exc.problem}: the start refuses it (exit 2)")
        return
    if not os.path.lexists(path):
        problem = _dir_problem(path.parent, create=False)
        if problem:
            yield fail(f"SaltEventKey {path}: cannot be created at the first start: {problem}")
        else:
            yield ok(f"SaltEventKey {path}: absent, made at the first start (mode 0600)")
        return
    try:
        EventKey.load_or_create(path, opts, create=False)
    except EventKeyError as exc:
        yield config_fail(f"SaltEventKey {exc}: the start refuses it (exit 2)")
        return
    yield ok(f"SaltEventKey {path}: a regular file, no group write, nothing for others")


# --- EC2 ---


def check_ec2(cfg: Config) -> Iterator[Line]:
    """VerifyInstances: DescribeInstances must be permitted (asked with DryRun)."""
    if not cfg.verify_instances:
        yield ok("EC2: not asked (VerifyInstances is off)")
        return
    try:
        ec2 = make_client("ec2", cfg.sqs_region, max_attempts=2)
        ec2.describe_instances(DryRun=True)
    except AWS_ERRORS as exc:
        code = error_code(exc)
        if code == "DryRunOperation":
            yield ok(f"EC2 DescribeInstances permitted in {cfg.sqs_region}")
        elif code == "UnauthorizedOperation":
            yield fail(
                f"EC2 DescribeInstances not permitted in {cfg.sqs_region}: every "
                f"launch and terminate would be retried, nothing accepted"
            )
        else:
            yield fail(f"EC2 DescribeInstances in {cfg.sqs_region}: {code}: {exc}")
        return
    yield ok(f"EC2 DescribeInstances answered in {cfg.sqs_region} (the endpoint ignored DryRun)")


# --- local directories ---


def check_cert_cache(cfg: Config) -> Iterator[Line]:
    """VerifySignatures: the signing-certificate cache can be written."""
    if not cfg.verify_signatures:
        return
    directory = cfg.effective_cert_cache_dir
    problem = _dir_problem(directory, create=True)
    yield (
        fail(f"CertCacheDir {directory}: {problem}") if problem else ok(f"CertCacheDir {directory}")
    )


def check_state_dir(cfg: Config) -> Iterator[Line]:
    """StateDir holds the mirror journal and the replay memories: it must be writable."""
    problem = _dir_problem(cfg.state_dir, create=True)
    yield (
        fail(f"StateDir {cfg.state_dir}: {problem}") if problem else ok(f"StateDir {cfg.state_dir}")
    )


def _dir_problem(directory: Path, *, create: bool) -> str | None:
    """None when ``directory`` is a directory we can write (or, with ``create``, one that can
    be created: its nearest existing ancestor is a writable directory); else what is wrong.
    Nothing is created: --check only looks."""
    if directory.is_dir():
        if os.access(directory, os.R_OK | os.W_OK | os.X_OK):
            return None
        return f"{directory.name} not writable"
    if directory.exists() or directory.is_symlink():
        return f"{directory} is not a directory"
    if not create:
        return f"{directory.name} missing"
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} not writable"
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _seconds(value: int | None) -> str:
    """A duration for people: ``30 s``, ``4 days``."""
    if value is None:
        return "?"
    if value >= 86400 and value % 86400 == 0:
        return f"{value // 86400} days"
    return f"{value} s"
