"""Read and validate ``/etc/aws_ork.conf``.

The file is INI with one section, ``[aws_ork]``. A 0.4.5 file (``Key: value`` lines and no
section header) is read as if it were all in that section (since 3.0.0 it needs the
KeyBinding line, which has no default, like any other config).
Every value is checked here, once, at start-up: a bad value is a :class:`ConfigError` naming
the file, the option and the value, which the CLI prints as one line before exiting 2.
"""

from __future__ import annotations

import configparser
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from aws_ork.base.errors import ConfigError
from aws_ork.base.naming import IDENTITY
from aws_ork.base.trusted import untrusted_dir_problem
from aws_ork.options import ALL, BY_FIELD, Option
from aws_ork.values import ANY_HOOK as ANY_HOOK
from aws_ork.values import ANY_TOPIC as ANY_TOPIC
from aws_ork.values import LOG_FORMATS as LOG_FORMATS
from aws_ork.values import UNSIGNED_SOURCES as UNSIGNED_SOURCES
from aws_ork.values import BucketUrl as BucketUrl

log = logging.getLogger(__name__)

SECTION = "aws_ork"
DEFAULT_PATH = "/etc/aws_ork.conf"
ENV_PATH = "AWS_ORK_CONFIG"


def _default(name: str) -> Any:
    """The default of the option that sets the Config attribute ``name``."""
    return BY_FIELD[name].default


@dataclass(frozen=True)
class Config:
    """Validated settings, one attribute per option of aws_ork/options.py (its ``field``), with
    that option's default; ``source`` names the file they were read from."""

    source: str = "(defaults)"
    sqs_region: str = _default("sqs_region")
    queue_name: str = _default("queue_name")
    queue_url: str | None = _default("queue_url")
    poll_pause: float = _default("poll_pause")
    bucket_url: BucketUrl | None = _default("bucket_url")
    bucket_region: str | None = _default("bucket_region")
    bucket_sse: str | None = _default("bucket_sse")
    bucket_kms_key_id: str | None = _default("bucket_kms_key_id")
    bucket_acl: str | None = _default("bucket_acl")
    reconcile_minutes: float = _default("reconcile_minutes")
    sweep_minutes: float = _default("sweep_minutes")
    delete_unknown_messages: bool = _default("delete_unknown_messages")
    salt_master_config: Path = _default("salt_master_config")
    pki_dir: Path = _default("pki_dir")
    log_file: Path = _default("log_file")
    pid_file: Path = _default("pid_file")
    log_format: str = _default("log_format")
    state_dir: Path = _default("state_dir")
    verify_signatures: bool = _default("verify_signatures")
    allowed_topic_arns: tuple[str, ...] = _default("allowed_topic_arns")
    cert_cache_dir: Path | None = _default("cert_cache_dir")
    unsigned_sources: tuple[str, ...] = _default("unsigned_sources")
    verify_instances: bool = _default("verify_instances")
    auto_scaling_groups: tuple[str, ...] = _default("auto_scaling_groups")
    instance_tags: tuple[tuple[str, str], ...] = _default("instance_tags")
    minion_id_template: str = _default("minion_id_template")
    archive_dir: Path | None = _default("archive_dir")
    archive_max_mb: int = _default("archive_max_mb")
    metrics_address: tuple[str, int] | None = _default("metrics_address")
    health_mirror_seconds: float = _default("health_mirror_seconds")
    key_binding: str | None = _default("key_binding")  # None: not set (a config error)
    key_binding_tag: str = _default("key_binding_tag")
    salt_events: bool = _default("salt_events")
    salt_event_key: Path | None = _default("salt_event_key")
    lifecycle_hooks: tuple[str, ...] = _default("lifecycle_hooks")

    def completes_hook(self, name: str | None) -> bool:
        """Does aws_ork complete the lifecycle actions of the hook ``name``?"""
        return name is not None and (
            ANY_HOOK in self.lifecycle_hooks or name in self.lifecycle_hooks
        )

    @property
    def effective_bucket_region(self) -> str:
        """BucketRegion defaults to SQS_Region."""
        return self.bucket_region or self.sqs_region

    @property
    def effective_cert_cache_dir(self) -> Path:
        """CertCacheDir defaults to StateDir/certs."""
        return self.cert_cache_dir or self.state_dir / "certs"


if {f.name for f in fields(Config)} != {"source", *BY_FIELD}:
    raise TypeError("Config's attributes are not the fields of aws_ork/options.py")

#: lower-case option name (as configparser stores it) -> (dataclass field, canonical name)
OPTIONS: dict[str, tuple[str, str]] = {
    option.name.lower(): (option.field, option.name) for option in ALL
}
#: lower-case option name -> its declaration
_BY_LOWER: dict[str, Option] = {option.name.lower(): option for option in ALL}


def from_mapping(values: Mapping[str, str], source: str) -> Config:
    """Build a Config from raw option strings (keys case-insensitive); validate every value."""
    kwargs: dict[str, Any] = {"source": source}
    for raw_name, raw_value in values.items():
        option = _BY_LOWER.get(raw_name.lower())
        if option is None:
            log.warning("%s: unknown option %r ignored", source, raw_name)
            continue
        value = raw_value.strip()
        try:
            kwargs[option.field] = option.parse(value)
        except ValueError as exc:
            raise ConfigError(source, option.name, f"{value!r} {exc}") from None
    if kwargs.get("bucket_kms_key_id") and kwargs.get("bucket_sse") != "aws:kms":
        raise ConfigError(source, "BucketKmsKeyId", "is set but BucketSSE is not aws:kms")
    return Config(**kwargs)


#: A rule of :func:`require_safe`: the reason a setting cannot be safe, or None if it can.
_Rule = Callable[[Config], str | None]


def _when(test: Callable[[Config], bool], reason: str) -> _Rule:
    """A rule whose reason is fixed text, given when ``test`` holds."""
    return lambda cfg: reason if test(cfg) else None


def _filtered(cfg: Config) -> bool:
    """Are the instances narrowed to some groups or tags (AutoScalingGroups, InstanceTags)?"""
    return bool(cfg.auto_scaling_groups or cfg.instance_tags)


def _unfiltered_unsigned(cfg: Config) -> str | None:
    unfiltered = [name for name in ("raw", "hook") if name in cfg.unsigned_sources]
    if not unfiltered or _filtered(cfg):
        return None
    return (
        f"names {' and '.join(unfiltered)} but neither AutoScalingGroups nor InstanceTags "
        f"is set: an unsigned launch may name any running instance of the region (a "
        f"bastion, this master), and only the queue policy stands in the way. Set one of "
        f"them (AutoScalingGroups = * for any Auto Scaling group)"
    )


def _untrusted_cert_cache(cfg: Config) -> str | None:
    problem = untrusted_dir_problem(cfg.effective_cert_cache_dir) if cfg.verify_signatures else ""
    if not problem:
        return None
    return (
        f"{problem}. The certificates cached there are believed without a fetch: "
        f"whoever can put one there can sign any message (chmod go-w, chown to "
        f"aws_ork's user)"
    )


#: (option named in the error, rule), in the order they are checked: the first that gives a
#: reason is the config error
_RULES: tuple[tuple[str, _Rule], ...] = (
    (
        "AllowedTopicArns",
        _when(
            lambda cfg: cfg.verify_signatures and not cfg.allowed_topic_arns,
            "not set while VerifySignatures is on: a valid signature only proves that some "
            "SNS topic sent the message, and any AWS account can publish to a topic of its "
            "own. Set AllowedTopicArns = arn:aws:sns:REGION:ACCOUNT:TOPIC (the topic of your "
            "Auto Scaling notifications), or * to accept any topic (unsafe)",
        ),
    ),
    (
        "KeyBinding",
        _when(
            lambda cfg: cfg.key_binding is None,
            "not set: it has no default. Set KeyBinding = tag (only the key whose fingerprint "
            "the instance published on its EC2 tag is accepted; see docs/key-binding.md), "
            "or off (the first key presented under a new instance's id is accepted; a WARNING "
            "at every start)",
        ),
    ),
    (
        "UnsignedSources",
        _when(
            lambda cfg: "eventbridge" in cfg.unsigned_sources and not _filtered(cfg),
            "names eventbridge but neither AutoScalingGroups nor InstanceTags is set: EC2 "
            "state-change events come from every instance in the account. Set one of them "
            "(AutoScalingGroups = * for any Auto Scaling group)",
        ),
    ),
    ("UnsignedSources", _unfiltered_unsigned),
    ("CertCacheDir", _untrusted_cert_cache),
    (
        "SweepMinutes",
        _when(
            lambda cfg: bool(cfg.sweep_minutes) and not cfg.verify_instances,
            "is set but VerifyInstances is off: the sweep asks EC2 about every key",
        ),
    ),
    (
        "SweepMinutes",
        _when(
            lambda cfg: bool(cfg.sweep_minutes) and not _filtered(cfg),
            "is set but neither AutoScalingGroups nor InstanceTags is set: the sweep would "
            "judge every instance of the region (bastions, this master). Set one of them "
            "(AutoScalingGroups = * for any Auto Scaling group)",
        ),
    ),
    (
        "KeyBinding",
        _when(
            lambda cfg: cfg.key_binding == "tag" and not cfg.verify_instances,
            "tag needs VerifyInstances: the tag is read from the instance's DescribeInstances",
        ),
    ),
    (
        "MinionIdTemplate",
        _when(
            lambda cfg: cfg.minion_id_template != IDENTITY and not cfg.verify_instances,
            "is not {instance_id} but VerifyInstances is off: tags and names are read from EC2",
        ),
    ),
    (
        "AutoScalingGroups",
        _when(
            lambda cfg: bool(cfg.auto_scaling_groups) and not cfg.verify_instances,
            "is set but VerifyInstances is off: groups and tags are read from EC2",
        ),
    ),
    (
        "InstanceTags",
        _when(
            lambda cfg: bool(cfg.instance_tags) and not cfg.verify_instances,
            "is set but VerifyInstances is off: groups and tags are read from EC2",
        ),
    ),
)


#: The WARNING of ``KeyBinding = off``, at every start and in --check.
KEY_BINDING_OFF = (
    "KeyBinding = off: the first key presented under a new instance's id is accepted; "
    "set KeyBinding = tag (see docs/key-binding.md)"
)


def _unsafe_choices(cfg: Config) -> list[str]:
    """The WARNING lines of the explicit unsafe choices in ``cfg``."""
    warnings = []
    if not cfg.verify_signatures:
        warnings.append("VerifySignatures is off: any message in the queue is believed")
    elif cfg.allowed_topic_arns == (ANY_TOPIC,):
        warnings.append(
            "AllowedTopicArns = *: signed envelopes from ANY SNS topic are "
            "believed, including topics of other AWS accounts"
        )
    if cfg.verify_signatures and cfg.unsigned_sources:
        warnings.append(
            f"UnsignedSources = {' '.join(cfg.unsigned_sources)}: those messages "
            f"carry no signature; the queue policy is their only gate"
        )
    if not cfg.verify_instances:
        warnings.append(
            "VerifyInstances is off: launches and terminates are not checked "
            "against EC2 (a terminate deletes a key on the message's word)"
        )
    if cfg.key_binding == "off":
        warnings.append(KEY_BINDING_OFF)
    if cfg.metrics_address is not None and not is_loopback(cfg.metrics_address[0]):
        host, port = cfg.metrics_address
        warnings.append(
            f"MetricsAddress = {host}:{port} is not a loopback address: /metrics "
            f"and /healthz (plain HTTP, no authentication) answer whoever reaches "
            f"it; keep it on 127.0.0.1 and scrape through a proxy you secure"
        )
    return warnings


def require_safe(cfg: Config) -> list[str]:
    """Refuse settings that cannot be safe without another one; return the WARNING lines the
    explicit unsafe choices deserve at every start.

    Raises ConfigError naming the option (the CLI exits 2). Parsing stays separate, so a
    config can be read (and tested) option by option.
    """
    for option, rule in _RULES:
        reason = rule(cfg)
        if reason is not None:
            raise ConfigError(cfg.source, option, reason)
    return _unsafe_choices(cfg)


def is_loopback(host: str) -> bool:
    """Is ``host`` an address in 127.0.0.0/8 or ::1 (IPv4-mapped too)? A name is not: it may
    resolve to any address, and 0.0.0.0 and :: are every address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def read_file(path: str | os.PathLike[str]) -> Config:
    """Parse one config file; old section-less files are read as ``[aws_ork]``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM would hide the first option
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, None, f"cannot read: {exc}") from None
    parser = configparser.ConfigParser(interpolation=None, default_section="__no_defaults__")
    try:
        try:
            parser.read_string(text, source=source)
        except configparser.MissingSectionHeaderError:
            parser = configparser.ConfigParser(
                interpolation=None, default_section="__no_defaults__"
            )
            parser.read_string(f"[{SECTION}]\n{text}", source=source)
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(source, None, f"not a valid INI file: {first_line}") from None
    for other in parser.sections():
        if other != SECTION:
            log.warning("%s: section [%s] ignored (options belong in [%s])", source, other, SECTION)
    values = dict(parser.items(SECTION)) if parser.has_section(SECTION) else {}
    return from_mapping(values, source)


def load(path: str | None) -> Config:
    """The config for this run.

    ``path`` is the ``-c`` argument: a file named there must exist. Without it the file is
    ``$AWS_ORK_CONFIG`` or ``/etc/aws_ork.conf``, and a missing default file means defaults.
    """
    if path is not None:
        if not Path(path).exists():
            raise ConfigError(path, None, "no such file (named with -c)")
        return read_file(path)
    default = os.environ.get(ENV_PATH) or DEFAULT_PATH
    if not Path(default).exists():
        if os.environ.get(ENV_PATH):
            raise ConfigError(default, None, f"no such file (named by ${ENV_PATH})")
        return Config()
    return read_file(default)
