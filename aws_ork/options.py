"""Every config option, declared once.

An :class:`Option` holds all there is to say about one option: the name operators write, the
:class:`~aws_ork.config.Config` attribute it sets, its default and the parser of its value
(aws_ork/values.py), and the text people read. ``config.py`` builds ``Config``'s defaults and
its parser from these records, and ``aws_ork/docgen.py`` writes ``data/aws_ork.conf``, the
configuration reference ``docs/configuration.md`` and the ``aws_ork.conf(5)`` man page from
them, so the four can no longer disagree (tests/test_generated_docs.py fails when a generated
file is stale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_ork.values import (
    _acl,
    _address,
    _bool,
    _bucket_url,
    _health_seconds,
    _hook_names,
    _key_binding,
    _kms_key_id,
    _log_format,
    _megabytes,
    _minutes,
    _optional,
    _path,
    _queue_name,
    _queue_url,
    _region,
    _seconds,
    _sse,
    _tag_key,
    _tags,
    _template,
    _topic_arns,
    _unsigned_sources,
    _words,
)


@dataclass(frozen=True)
class Option:
    """One option of ``[aws_ork]``.

    ``help`` is the option's line in docs/configuration.md (Markdown); ``text`` is the longer operator
    text, the comment above the option in ``data/aws_ork.conf`` and its paragraph in the man
    page (plain text, its line breaks kept in the file). ``shown_default`` is the default as
    people read it (``(none)``, ``StateDir/certs``); ``example`` the value on the option's
    commented-out line in ``data/aws_ork.conf`` (the default, or an example where the default
    is unset or off). ``preset``: ``data/aws_ork.conf`` sets the option to ``example`` (the line
    not commented out): a required option with a value right for most (KeyBinding = tag).
    """

    name: str
    field: str
    kind: str
    default: Any
    parse: Callable[[str], Any]
    shown_default: str
    example: str
    help: str
    text: str
    preset: bool = False


@dataclass(frozen=True)
class Group:
    """A section of ``data/aws_ork.conf`` (and of the man page's OPTIONS): a title, its options
    in the order operators read them, and a closing remark (``footer``) if any."""

    title: str
    options: tuple[Option, ...]
    footer: str = ""


#: the opening comment of data/aws_ork.conf, before its [aws_ork] line
CONF_HEADER = (
    "/etc/aws_ork.conf: configuration of aws_ork.\n"
    "\n"
    "INI format, one section [aws_ork]. Option names are case-insensitive. Booleans accept\n"
    "true/false, yes/no, on/off, 1/0. Every option below is shown with its default,\n"
    "commented out: uncomment and change only what you need. KeyBinding has no default:\n"
    'the shipped file sets it to tag. A 0.4.5 file (the same "Key: value" lines with no\n'
    "[aws_ork] header) is still read; since 3.0.0 it needs a KeyBinding line (UPGRADING.md).\n"
    "Check a config with:  aws_ork -c /etc/aws_ork.conf --check"
)

#: the options, by section, in the order of data/aws_ork.conf
GROUPS: tuple[Group, ...] = (
    Group(
        "The queue",
        (
            Option(
                name="SQS_Region",
                field="sqs_region",
                kind="region",
                default="us-west-2",
                parse=_region,
                shown_default="us-west-2",
                example="us-west-2",
                help="region of the queue",
                text="Region of the SQS queue.",
            ),
            Option(
                name="QueueName",
                field="queue_name",
                kind="queue name",
                default="SaltMasterTestQueue",
                parse=_queue_name,
                shown_default="SaltMasterTestQueue",
                example="SaltMasterTestQueue",
                help="queue, by name",
                text="The queue, by name (looked up in SQS_Region)...",
            ),
            Option(
                name="QueueUrl",
                field="queue_url",
                kind="URL",
                default=None,
                parse=_optional(_queue_url),
                shown_default="(none)",
                example="https://sqs.us-west-2.amazonaws.com/123456789012/SaltMasterTestQueue",
                help="queue, by URL; wins over QueueName",
                text="...or by URL, which wins over QueueName (e.g. a queue in another account).",
            ),
            Option(
                name="PollPause",
                field="poll_pause",
                kind="seconds",
                default=0.0,
                parse=_seconds,
                shown_default="0",
                example="0",
                help="seconds between receive calls",
                text="Seconds to sleep between receive calls (each receive already waits up to 20 s).",
            ),
            Option(
                name="DeleteUnknownMessages",
                field="delete_unknown_messages",
                kind="boolean",
                default=True,
                parse=_bool,
                shown_default="true",
                example="true",
                help="delete messages that are no instance event",
                text="Delete messages that are no instance event (test notifications are always deleted).",
            ),
        ),
    ),
    Group(
        "Salt",
        (
            Option(
                name="SaltMasterConfig",
                field="salt_master_config",
                kind="path",
                default=Path("/etc/salt/master"),
                parse=_path,
                shown_default="/etc/salt/master",
                example="/etc/salt/master",
                help="the Salt master's config file (its pki_dir is where keys live)",
                text="The Salt master's config; its pki_dir is where the minion keys live.",
            ),
            Option(
                name="SaltEvents",
                field="salt_events",
                kind="boolean",
                default=True,
                parse=_bool,
                shown_default="true",
                example="true",
                help="fire `aws_ork/<kind>/<minion id>` on the master's event bus after each decision, for Salt's reactor (see [Salt reactor events](#salt-reactor-events)); `--dry-run` fires nothing",
                text=(
                    "Fire aws_ork/<launch|accepted|terminate|rejected>/<minion id> on the master's event bus\n"
                    'after each decision, for Salt\'s reactor (docs/salt.md, "Salt reactor events"); best effort.'
                ),
            ),
            Option(
                name="SaltEventKey",
                field="salt_event_key",
                kind="path",
                default=None,
                parse=_optional(_path),
                shown_default="`<master cachedir>/aws_ork-event.key`",
                example="/var/cache/salt/master/aws_ork-event.key",
                help="the secret that signs each reactor event (HMAC-SHA256, checked by recipes with Salt's `hmac` filter); made at the first start if absent (0600, the master's user); a symlink, a directory, a file others can read, its group or anyone but aws_ork's or the master's user can write, not 64 hex characters, or under PkiDir, is a config error (exit 2, and a FAIL of `--check`); never mirrored to S3 (a restored master makes its own); see [What a recipe may trust](#salt-reactor-events)",
                text=(
                    "The secret that signs each event (HMAC-SHA256; reactor recipes check it with Salt's `hmac`\n"
                    "Jinja filter, see docs/salt.md). Made at the first start if absent: mode 0600, owned by the\n"
                    "master's user. Refused (exit 2) when a symlink or not a regular file, readable by\n"
                    "others, writable by its group or anyone but aws_ork's or the master's user, not 64 hex\n"
                    "characters, or under PkiDir (mirrored to S3; the key never leaves the master: a restored\n"
                    "master makes its own). Default: <master cachedir>/aws_ork-event.key"
                ),
            ),
        ),
    ),
    Group(
        "S3 mirror of the pki (for restoring a replacement master)",
        (
            Option(
                name="BucketUrl",
                field="bucket_url",
                kind="s3://bucket/prefix/",
                default=None,
                parse=_optional(_bucket_url),
                shown_default="(none)",
                example="s3://my-bucket/salt/pki/",
                help="`s3://bucket/prefix/`: mirror PkiDir there",
                text="Mirror PkiDir to this bucket/prefix after every change. Off when unset.",
            ),
            Option(
                name="BucketRegion",
                field="bucket_region",
                kind="region",
                default=None,
                parse=_optional(_region),
                shown_default="SQS_Region",
                example="us-west-2",
                help="region of the bucket",
                text="Region of the bucket (default: SQS_Region).",
            ),
            Option(
                name="PkiDir",
                field="pki_dir",
                kind="path",
                default=Path("/etc/salt/pki"),
                parse=_path,
                shown_default="/etc/salt/pki",
                example="/etc/salt/pki",
                help="the tree mirrored to BucketUrl",
                text="The tree that is mirrored.",
            ),
            Option(
                name="BucketSSE",
                field="bucket_sse",
                kind="none|AES256|aws:kms",
                default=None,
                parse=_optional(_sse),
                shown_default="none",
                example="none",
                help="server-side encryption of the mirror: `none`, `AES256` (SSE-S3) or `aws:kms`",
                text="Server-side encryption of the mirrored objects: none, AES256 (SSE-S3) or aws:kms.",
            ),
            Option(
                name="BucketKmsKeyId",
                field="bucket_kms_key_id",
                kind="key",
                default=None,
                parse=_optional(_kms_key_id),
                shown_default="(AWS managed key)",
                example="alias/salt-pki",
                help="with `BucketSSE = aws:kms`: key id, key ARN or `alias/NAME`",
                text="With BucketSSE = aws:kms: the KMS key (id, ARN or alias/NAME); default: the AWS managed key.",
            ),
            Option(
                name="BucketAcl",
                field="bucket_acl",
                kind="ACL",
                default="bucket-owner-full-control",
                parse=_optional(_acl),
                shown_default="bucket-owner-full-control",
                example="bucket-owner-full-control",
                help="canned ACL on every object; `none` for buckets with ACLs disabled",
                text=(
                    "Canned ACL on every object: bucket-owner-full-control, or none for buckets with ACLs\n"
                    'disabled (Object Ownership "bucket owner enforced").'
                ),
            ),
            Option(
                name="ReconcileMinutes",
                field="reconcile_minutes",
                kind="minutes",
                default=10.0,
                parse=_minutes,
                shown_default="10",
                example="10",
                help="full comparison of the tree with the bucket every N minutes; 0 = only at start-up",
                text=(
                    "Compare the whole tree with the bucket (a paginated listing) every N minutes, repairing\n"
                    "drift both ways; 0 = only at start-up. Key changes themselves are mirrored within seconds."
                ),
            ),
            Option(
                name="SweepMinutes",
                field="sweep_minutes",
                kind="minutes",
                default=0.0,
                parse=_minutes,
                shown_default="0 (off)",
                example="60",
                help="the reconcile sweep: every N minutes (and at start-up) look the instance keys up in EC2; delete the keys aws_ork enrolled whose instances are gone on two sweeps in a row; under `KeyBinding = tag`, accept the pending key a running instance published (its launch message was lost); without key binding it accepts nothing; needs VerifyInstances and AutoScalingGroups or InstanceTags (see [Reconcile sweep](#reconcile-sweep))",
                text=(
                    "Reconcile sweep: every N minutes (and at start-up) the instance keys on the master are\n"
                    "looked up in EC2 in batches: keys aws_ork enrolled whose instances are gone on two sweeps\n"
                    "in a row are deleted (a key aws_ork never accepted or pre-authorised is left alone); under\n"
                    "KeyBinding = tag, the pending key a running instance published is accepted (its launch\n"
                    "message was lost); without key binding nothing is accepted. 0 = off (the default). Needs\n"
                    "VerifyInstances, and AutoScalingGroups or InstanceTags."
                ),
            ),
        ),
        footer="Restore a replacement master from the mirror:  aws_ork -c /etc/aws_ork.conf --restore",
    ),
    Group(
        "Files of the daemon",
        (
            Option(
                name="LogFile",
                field="log_file",
                kind="path",
                default=Path("/var/log/aws_ork.log"),
                parse=_path,
                shown_default="/var/log/aws_ork.log",
                example="/var/log/aws_ork.log",
                help="log file with `-d`",
                text="Log file with -d (unless --syslog).",
            ),
            Option(
                name="PidFile",
                field="pid_file",
                kind="path",
                default=Path("/run/aws_ork.pid"),
                parse=_path,
                shown_default="/run/aws_ork.pid",
                example="/run/aws_ork.pid",
                help="pid file with `-d`",
                text="PID file with -d.",
            ),
            Option(
                name="LogFormat",
                field="log_format",
                kind="text|json",
                default="text",
                parse=_log_format,
                shown_default="text",
                example="text",
                help="`text`, or `json`: one object per line with `time`, `level`, `logger`, `message` (and `exception`), for log shippers; under systemd no timestamp of our own and a journal priority prefix (see [Logs](#logs))",
                text=(
                    "Log lines as text (for people) or json (one object per line with time, level, logger and\n"
                    "message, for log shippers). Under systemd, neither carries a timestamp of its own and each\n"
                    "line starts with its journal priority (<3> error ... <7> debug)."
                ),
            ),
            Option(
                name="StateDir",
                field="state_dir",
                kind="path",
                default=Path("/var/lib/aws_ork"),
                parse=_path,
                shown_default="/var/lib/aws_ork",
                example="/var/lib/aws_ork",
                help="the daemon's own durable state; locked (`StateDir/lock`, holding its pid): a second aws_ork on the same StateDir exits 1 (a `--dry-run` writes nothing there and takes no lock)",
                text="The daemon's own durable state (certificate cache, pending mirror work, ...).",
            ),
        ),
    ),
    Group(
        "Trust: who may get a key accepted",
        (
            Option(
                name="VerifySignatures",
                field="verify_signatures",
                kind="boolean",
                default=True,
                parse=_bool,
                shown_default="true",
                example="true",
                help="accept SNS envelopes only with a valid AWS signature",
                text="Accept SNS envelopes only with a valid AWS signature.",
            ),
            Option(
                name="AllowedTopicArns",
                field="allowed_topic_arns",
                kind="topic ARNs",
                default=(),
                parse=_topic_arns,
                shown_default="(none: required while VerifySignatures is on)",
                example="arn:aws:sns:us-west-2:123456789012:salt-master-asg-events",
                help="whitespace/comma separated SNS topic ARNs whose messages are accepted; `*` = any topic (an explicit opt-out, logged as a WARNING at every start)",
                text=(
                    "REQUIRED while VerifySignatures is on: aws_ork (and --check) exits 2 until it is set.\n"
                    "Whitespace/comma separated SNS topic ARNs whose messages are accepted. A signature only\n"
                    "proves that SOME topic sent a message, and any AWS account can publish to a topic of its own.\n"
                    "`*` accepts any topic: an explicit opt-out, logged as a WARNING at every start."
                ),
            ),
            Option(
                name="CertCacheDir",
                field="cert_cache_dir",
                kind="path",
                default=None,
                parse=_optional(_path),
                shown_default="StateDir/certs",
                example="/var/lib/aws_ork/certs",
                help="signing certificates, `<dir>/<host>/<file name of the URL path>`; must be aws_ork's alone (exit 2 otherwise, see [SNS signing certificates](#sns-signing-certificates))",
                text=(
                    "Where SNS signing certificates are cached, <dir>/<host>/<file name> (default: StateDir/certs).\n"
                    "A certificate there is believed without a fetch: the directory must be aws_ork's user's and\n"
                    "writable by no one else, nor may any directory on the way to it be (exit 2 otherwise)."
                ),
            ),
            Option(
                name="UnsignedSources",
                field="unsigned_sources",
                kind="sources",
                default=(),
                parse=_unsigned_sources,
                shown_default="(none)",
                example="",
                help="unsigned bodies accepted while VerifySignatures is on: `raw`, `hook`, `eventbridge` (see [Unsigned sources](#unsigned-sources)); each needs AutoScalingGroups or InstanceTags",
                text=(
                    "Unsigned message sources accepted while VerifySignatures is on, whitespace/comma separated:\n"
                    "raw (SNS raw delivery), hook (lifecycle hook sending to the queue), eventbridge (EventBridge\n"
                    "rule targeting the queue). They carry no signature: the queue policy is then the only gate,\n"
                    "so allow only that source to send to the queue (see docs/aws.md). Default: none.\n"
                    "Each needs AutoScalingGroups or InstanceTags (exit 2 otherwise): an unsigned launch could\n"
                    "name any running instance of the region, and EC2 state-change events come from every\n"
                    "instance of the account (AutoScalingGroups = * for any Auto Scaling group)."
                ),
            ),
            Option(
                name="VerifyInstances",
                field="verify_instances",
                kind="boolean",
                default=True,
                parse=_bool,
                shown_default="true",
                example="true",
                help="look the instance up in EC2 before accepting its key",
                text="Look the instance up in EC2 (it must exist and be pending/running) before accepting its key.",
            ),
            Option(
                name="AutoScalingGroups",
                field="auto_scaling_groups",
                kind="names",
                default=(),
                parse=_words,
                shown_default="(any)",
                example="web-* batch-asg",
                help="whitespace/comma separated names or glob patterns of groups to manage (needs VerifyInstances)",
                text=(
                    "Whitespace/comma separated names or glob patterns of the groups to manage (default: any).\n"
                    "Groups and tags are read from EC2: they need VerifyInstances."
                ),
            ),
            Option(
                name="InstanceTags",
                field="instance_tags",
                kind="Key=Value ...",
                default=(),
                parse=_tags,
                shown_default="(any)",
                example="salt-master=prod",
                help="`Key=Value` pairs the instance must carry (all of them; needs VerifyInstances)",
                text="Key=Value tags the instance must carry, all of them (default: none required).",
            ),
        ),
    ),
    Group(
        "Minion ids, archive, metrics",
        (
            Option(
                name="MinionIdTemplate",
                field="minion_id_template",
                kind="template",
                default="{instance_id}",
                parse=_template,
                shown_default="{instance_id}",
                example="{instance_id}",
                help="how a minion id is made from an instance: `{instance_id}`, `{tag:KEY}`, `{asg_name}`, `{private_dns_name}` and literal `A-Z a-z 0-9 . _ -`; anything but `{instance_id}` needs VerifyInstances (see [Minion ids](#minion-ids))",
                text=(
                    "How a minion id is made from an instance: {instance_id} (default), {tag:KEY},\n"
                    "{asg_name}, {private_dns_name} and literal A-Z a-z 0-9 . _ - (e.g. {tag:Name}-{instance_id}).\n"
                    "Needs a field that tells instances apart, and VerifyInstances; the id each instance is\n"
                    "given is remembered in StateDir/minion-ids, so its terminate deletes the right key."
                ),
            ),
            Option(
                name="ArchiveDir",
                field="archive_dir",
                kind="path",
                default=None,
                parse=_optional(_path),
                shown_default="(off)",
                example="/var/lib/aws_ork/archive",
                help="save every received message body here as it arrived, one file per message (see [Archive](#archive))",
                text=(
                    "Save every received message body here as it arrived, one file per message, under\n"
                    "<topic name>/ (topics of AllowedTopicArns), other-topics/ or direct/ (default: off).\n"
                    "Under systemd it must be inside StateDir or listed in ReadWritePaths=."
                ),
            ),
            Option(
                name="ArchiveMaxMB",
                field="archive_max_mb",
                kind="MB",
                default=1024,
                parse=_megabytes,
                shown_default="1024",
                example="1024",
                help="cap on what the archive costs the disk in MB (blocks of its files and folders, at least 4 KB a file: at most 256 files per MB); past it the oldest files are removed first; 0 = no cap",
                text=(
                    "Cap on what the archive costs the disk in MB (whole number; blocks, at least 4 KB a file,\n"
                    "so at most 256 files per MB): past it the oldest files are removed first. 0 = no cap. The archive holds every message as received: keep the folder private (0700)."
                ),
            ),
            Option(
                name="MetricsAddress",
                field="metrics_address",
                kind="host:port",
                default=None,
                parse=_optional(_address),
                shown_default="(off)",
                example="127.0.0.1:9731",
                help="`host:port` (`:port` = 127.0.0.1) for Prometheus `/metrics` and `/healthz`, plain HTTP (see [Metrics and health](#metrics-and-health)); a host outside 127.0.0.0/8 and ::1 is a WARNING at every start",
                text=(
                    "host:port for Prometheus metrics and /healthz (default: off). Plain HTTP, no authentication:\n"
                    "a host outside 127.0.0.0/8 and ::1 (0.0.0.0 too) is logged as a WARNING at every start."
                ),
            ),
            Option(
                name="HealthMirrorSeconds",
                field="health_mirror_seconds",
                kind="seconds",
                default=900.0,
                parse=_health_seconds,
                shown_default="900",
                example="900",
                help="`/healthz` answers 503 once the S3 mirror has been failing this many seconds",
                text=(
                    "/healthz answers 503 once the S3 mirror has been failing this many seconds (default 900:\n"
                    "longer than the mirror's own retries, 1 s doubling to 30 s, take to ride out an S3 blip)."
                ),
            ),
        ),
    ),
    Group(
        "Key binding",
        (
            Option(
                name="KeyBinding",
                field="key_binding",
                kind="off|tag",
                default=None,
                parse=_key_binding,
                shown_default="(none: required)",
                example="tag",
                help="required, no default (exit 2 until it is set); `off` or `tag`: accept only the minion key the instance published on its own EC2 tags: its whole public key (`salt:minion-key-0`, `-1`, ...: stored as accepted before the minion's first contact, so Salt accepts it at once and denies any other key) or its fingerprint (`KeyBindingTag`); needs VerifyInstances; see [key binding](key-binding.md); `off` (the first key presented under a new instance's id is accepted) is an explicit choice, logged as a WARNING at every start",
                text=(
                    "REQUIRED, no default: aws_ork (and --check) exits 2 until it is set.\n"
                    "off or tag. With tag, a launch accepts exactly the minion key the instance published on\n"
                    "its own EC2 tags (data/instance/aws_ork-bind-minion.sh in user data does it): its whole\n"
                    "public key (tags salt:minion-key-0, -1, ...), stored as accepted before the minion's first\n"
                    "contact, or its fingerprint (KeyBindingTag); whoever connects first; no autosign stub is\n"
                    "written. Needs VerifyInstances. Recommended."
                    "\noff (the first key presented under a new instance's id is accepted) is an explicit choice,\n"
                    "logged as a WARNING at every start."
                ),
                preset=True,
            ),
            Option(
                name="KeyBindingTag",
                field="key_binding_tag",
                kind="tag key",
                default="salt:minion-fingerprint",
                parse=_tag_key,
                shown_default="salt:minion-fingerprint",
                example="salt:minion-fingerprint",
                help="that tag's key; its value is the fingerprint as `salt-key -f <id>` or `salt-call --local key.finger` prints it (sha256)",
                text=(
                    "The tag's key; its value is the key's fingerprint (salt-key -f, or salt-call --local\n"
                    "key.finger on the minion)."
                ),
            ),
        ),
    ),
    Group(
        "Lifecycle hooks",
        (
            Option(
                name="LifecycleHooks",
                field="lifecycle_hooks",
                kind="hook names",
                default=("*",),
                parse=_hook_names,
                shown_default="*",
                example="*",
                help="whitespace/comma separated names of the lifecycle hooks whose actions aws_ork completes; `*` = every hook whose messages reach it; empty = none (see [Lifecycle hooks](#lifecycle-hooks))",
                text=(
                    "Names of the lifecycle hooks whose actions aws_ork completes (whitespace/comma separated):\n"
                    "CONTINUE once a launching instance's key is accepted (heartbeats meanwhile, for at most 30\n"
                    "minutes), CONTINUE once a terminating instance's key is deleted. * = every hook whose\n"
                    "messages reach the queue; empty = none. Needs the autoscaling: actions of the IAM policy\n"
                    "(docs/aws.md)."
                ),
            ),
        ),
    ),
)


#: every option, in the order of data/aws_ork.conf
ALL: tuple[Option, ...] = tuple(option for group in GROUPS for option in group.options)
#: Config attribute -> its option
BY_FIELD: dict[str, Option] = {option.field: option for option in ALL}
