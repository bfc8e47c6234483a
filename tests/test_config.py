"""Unit tests for aws_ork.config: defaults, both file formats, validation, the CLI's errors."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aws_ork import __version__, config
from aws_ork.base.errors import ConfigError
from aws_ork.config import BucketUrl, Config

REPO = Path(__file__).resolve().parents[1]

#: The contract's table (docs: /work/shared/spec/contract.md), as typed values.
CONTRACT_DEFAULTS: dict[str, Any] = {
    "SQS_Region": "us-west-2",
    "QueueName": "SaltMasterTestQueue",
    "QueueUrl": None,
    "PollPause": 0,
    "BucketUrl": None,
    "BucketRegion": None,  # effective value: SQS_Region (tested below)
    "DeleteUnknownMessages": True,
    "SaltMasterConfig": Path("/etc/salt/master"),
    "PkiDir": Path("/etc/salt/pki"),
    "LogFile": Path("/var/log/aws_ork.log"),
    "PidFile": Path("/run/aws_ork.pid"),
    "StateDir": Path("/var/lib/aws_ork"),
    "VerifySignatures": True,
    "AllowedTopicArns": (),
    "CertCacheDir": None,  # effective value: StateDir/certs (tested below)
    "VerifyInstances": True,
    "AutoScalingGroups": (),
    "InstanceTags": (),
    "MinionIdTemplate": "{instance_id}",
    "ArchiveDir": None,
    "MetricsAddress": None,
    "KeyBinding": None,  # no default since 3.0.0: not set is a config error
    "SweepMinutes": 0.0,
    "KeyBindingTag": "salt:minion-fingerprint",
}

#: Options this project added beyond the contract (the contract allows new names).
ADDED_DEFAULTS: dict[str, Any] = {
    "UnsignedSources": (),
    "BucketSSE": None,
    "BucketKmsKeyId": None,
    "BucketAcl": "bucket-owner-full-control",
    "ReconcileMinutes": 10,
    "LogFormat": "text",
    "ArchiveMaxMB": 1024,
    "HealthMirrorSeconds": 900,
    "SaltEvents": True,
    "SaltEventKey": None,
    "LifecycleHooks": ("*",),
}

ALL_DEFAULTS = {**CONTRACT_DEFAULTS, **ADDED_DEFAULTS}

BOOL_OPTIONS = ("DeleteUnknownMessages", "VerifySignatures", "VerifyInstances", "SaltEvents")

LEGACY_FILE = """\
SQS_Region: us-east-1
QueueName: foo
PollPause: 5
BucketUrl: s3://salt-pki-backup/master1/
BucketRegion: eu-west-1
DeleteUnknownMessages: False
"""


def value(cfg: Config, option: str) -> Any:
    """The value of an option by the name operators write in the file."""
    return getattr(cfg, config.OPTIONS[option.lower()][0])


def write(tmp_path: Path, text: str, name: str = "aws_ork.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $AWS_ORK_CONFIG and a default path that does not exist; returns that path."""
    absent = tmp_path / "etc" / "aws_ork.conf"
    monkeypatch.delenv(config.ENV_PATH, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(absent))
    return absent


# --- defaults ---


def test_contract_table_covers_every_option() -> None:
    assert {canonical for _, canonical in config.OPTIONS.values()} == set(ALL_DEFAULTS)


@pytest.mark.parametrize(("option", "expected"), ALL_DEFAULTS.items())
def test_default_matches_contract(option: str, expected: Any, no_config: Path) -> None:
    assert value(Config(), option) == expected
    assert value(config.load(None), option) == expected


def test_derived_defaults_follow_other_options(no_config: Path) -> None:
    cfg = config.load(None)
    assert cfg.effective_bucket_region == "us-west-2"
    assert cfg.effective_cert_cache_dir == Path("/var/lib/aws_ork/certs")
    cfg = config.from_mapping({"SQS_Region": "eu-central-1", "StateDir": "/srv/ork"}, "f")
    assert cfg.effective_bucket_region == "eu-central-1"
    assert cfg.effective_cert_cache_dir == Path("/srv/ork/certs")
    cfg = config.from_mapping({"BucketRegion": "ap-south-1", "CertCacheDir": "/c"}, "f")
    assert cfg.effective_bucket_region == "ap-south-1"
    assert cfg.effective_cert_cache_dir == Path("/c")


# --- which file is read ---


def test_missing_default_file_means_defaults(no_config: Path) -> None:
    assert not no_config.exists()
    assert config.load(None) == Config()


def test_existing_default_file_is_read(no_config: Path) -> None:
    no_config.parent.mkdir()
    no_config.write_text("[aws_ork]\nQueueName = from-default\n")
    cfg = config.load(None)
    assert cfg.queue_name == "from-default"
    assert cfg.source == str(no_config)


def test_env_variable_names_the_file(
    tmp_path: Path, no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[aws_ork]\nQueueName = from-env\n", "env.conf")
    monkeypatch.setenv(config.ENV_PATH, str(path))
    assert config.load(None).queue_name == "from-env"


def test_empty_env_variable_means_default_path(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.ENV_PATH, "")
    assert config.load(None) == Config()


def test_missing_file_named_by_env_variable_is_an_error(
    tmp_path: Path, no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "typo.conf"
    monkeypatch.setenv(config.ENV_PATH, str(missing))
    with pytest.raises(ConfigError, match=config.ENV_PATH) as err:
        config.load(None)
    assert str(missing) in str(err.value)


def test_missing_file_named_with_c_is_an_error(tmp_path: Path, no_config: Path) -> None:
    missing = tmp_path / "typo.conf"
    with pytest.raises(ConfigError) as err:
        config.load(str(missing))
    assert str(missing) in str(err.value)


def test_c_wins_over_env_variable(
    tmp_path: Path, no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.ENV_PATH, str(write(tmp_path, "QueueName: env\n", "env.conf")))
    assert config.load(str(write(tmp_path, "QueueName: cli\n", "c.conf"))).queue_name == "cli"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(str(tmp_path))  # a directory


def test_broken_ini_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[aws_ork]\nthis line has no delimiter\n")
    with pytest.raises(ConfigError, match="not a valid INI") as err:
        config.load(str(path))
    assert str(path) in str(err.value)


# --- file formats ---


def test_new_style_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
# aws_ork settings
[aws_ork]
SQS_Region = eu-west-1
QueueUrl = https://sqs.eu-west-1.amazonaws.com/123456789012/salt-events
PollPause = 2.5
BucketUrl = s3://salt-pki-backup/prod/master1
DeleteUnknownMessages = no
PkiDir = /srv/salt/pki
AllowedTopicArns = arn:aws:sns:eu-west-1:123456789012:a, arn:aws:sns:eu-west-1:123456789012:b
AutoScalingGroups = web-asg
    worker-*
InstanceTags = Role=salt-minion Env=prod
MinionIdTemplate = {asg_name}-{instance_id}
MetricsAddress = 127.0.0.1:9100
""",
    )
    cfg = config.load(str(path))
    assert cfg.source == str(path)
    assert cfg.sqs_region == "eu-west-1"
    assert cfg.queue_url == "https://sqs.eu-west-1.amazonaws.com/123456789012/salt-events"
    assert cfg.poll_pause == 2.5
    assert cfg.bucket_url == BucketUrl("salt-pki-backup", "prod/master1/")
    assert str(cfg.bucket_url) == "s3://salt-pki-backup/prod/master1/"
    assert cfg.effective_bucket_region == "eu-west-1"
    assert cfg.delete_unknown_messages is False
    assert cfg.pki_dir == Path("/srv/salt/pki")
    assert cfg.allowed_topic_arns == (
        "arn:aws:sns:eu-west-1:123456789012:a",
        "arn:aws:sns:eu-west-1:123456789012:b",
    )
    assert cfg.auto_scaling_groups == ("web-asg", "worker-*")
    assert cfg.instance_tags == (("Role", "salt-minion"), ("Env", "prod"))
    assert cfg.minion_id_template == "{asg_name}-{instance_id}"
    assert cfg.metrics_address == ("127.0.0.1", 9100)
    # what the file does not set keeps its default
    assert cfg.queue_name == "SaltMasterTestQueue"
    assert cfg.verify_signatures is True


def test_legacy_0_4_5_file_is_read_unchanged(tmp_path: Path) -> None:
    cfg = config.load(str(write(tmp_path, LEGACY_FILE)))
    assert cfg.sqs_region == "us-east-1"
    assert cfg.queue_name == "foo"
    assert cfg.poll_pause == 5
    assert cfg.bucket_url == BucketUrl("salt-pki-backup", "master1/")
    assert cfg.bucket_region == "eu-west-1"
    assert cfg.effective_bucket_region == "eu-west-1"
    assert cfg.delete_unknown_messages is False
    assert cfg.pki_dir == Path("/etc/salt/pki")


def test_legacy_file_with_comments_and_none_values(tmp_path: Path) -> None:
    cfg = config.load(
        str(
            write(
                tmp_path,
                """\
# written for aws_ork 0.4.5

SQS_Region: ap-southeast-2
BucketUrl: None
BucketRegion: None
""",
            )
        )
    )
    assert cfg.sqs_region == "ap-southeast-2"
    assert cfg.bucket_url is None
    assert cfg.effective_bucket_region == "ap-southeast-2"


def test_legacy_file_with_byte_order_mark(tmp_path: Path) -> None:
    """A BOM must not turn the first option into an unknown one (and so silently a default)."""
    path = tmp_path / "aws_ork.conf"
    path.write_text(LEGACY_FILE, encoding="utf-8-sig")
    assert config.load(str(path)).sqs_region == "us-east-1"


def test_options_outside_the_section_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "[aws_ork]\nQueueName = mine\n[other]\nPollPause = 9\n")
    with caplog.at_level(logging.WARNING, logger="aws_ork.config"):
        cfg = config.load(str(path))
    assert (cfg.queue_name, cfg.poll_pause) == ("mine", 0)
    assert "[other]" in caplog.text


@pytest.mark.parametrize("spelling", ["PollPause", "pollpause", "POLLPAUSE", "pollPause"])
@pytest.mark.parametrize("header", ["[aws_ork]\n", ""])
def test_option_names_are_case_insensitive(tmp_path: Path, spelling: str, header: str) -> None:
    path = write(tmp_path, f"{header}{spelling} = 7\nsqs_REGION = eu-north-1\n")
    cfg = config.load(str(path))
    assert (cfg.poll_pause, cfg.sqs_region) == (7, "eu-north-1")


@pytest.mark.parametrize("option", BOOL_OPTIONS)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("yes", True),
        ("Yes", True),
        ("1", True),
        ("on", True),
        ("On", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("NO", False),
        ("0", False),
        ("off", False),
        ("Off", False),
    ],
)
def test_booleans(tmp_path: Path, option: str, raw: str, expected: bool) -> None:
    cfg = config.load(str(write(tmp_path, f"[aws_ork]\n{option} = {raw}\n")))
    assert value(cfg, option) is expected


def test_unknown_option_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "[aws_ork]\nQueueName = mine\nPolPause = 3\n")
    with caplog.at_level(logging.WARNING, logger="aws_ork.config"):
        cfg = config.load(str(path))
    assert cfg.queue_name == "mine"
    assert cfg.poll_pause == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "polpause" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


# --- validation ---

BAD_VALUES = [
    ("PollPause", "x"),
    ("PollPause", "-1"),
    ("PollPause", "3601"),
    ("PollPause", "nan"),
    ("SQS_Region", "Oregon"),
    ("SQS_Region", ""),
    ("BucketRegion", "eu west 1"),
    ("QueueName", "my queue"),
    ("BucketUrl", "http://x"),
    ("BucketUrl", "s3://bucket/a//b/"),
    ("QueueUrl", "foo"),
    ("InstanceTags", "novalue"),
    ("InstanceTags", "Role=web =x"),
    ("AllowedTopicArns", "nope"),
    ("KeyBinding", "yes"),
    ("KeyBindingTag", "aws:autoscaling:groupName"),
    ("KeyBindingTag", "x" * 129),
    ("MetricsAddress", "x"),
    ("MetricsAddress", "127.0.0.1:70000"),
    ("MinionIdTemplate", "{asg_name}"),
    ("MinionIdTemplate", "{instance_id}{hostname}"),
    ("PkiDir", ""),
    ("LogFile", "~no-such-user-aws-ork/aws_ork.log"),
    ("LogFormat", "syslog"),
    ("LogFormat", ""),
    ("ArchiveMaxMB", "-1"),
    ("ArchiveMaxMB", "1.5"),
    ("ArchiveMaxMB", "1048577"),
    ("ArchiveMaxMB", "²"),
    *((option, "maybe") for option in BOOL_OPTIONS),
]


@pytest.mark.parametrize(("option", "raw"), BAD_VALUES)
def test_bad_value_names_file_option_and_value(tmp_path: Path, option: str, raw: str) -> None:
    path = write(tmp_path, f"[aws_ork]\n{option} = {raw}\n")
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    message = str(err.value)
    assert str(path) in message
    assert err.value.option == option
    assert f": {option}: " in message
    assert repr(raw) in message
    assert "\n" not in message


def test_bad_value_is_reported_by_canonical_name(tmp_path: Path) -> None:
    path = write(tmp_path, "pollpause: soon\n")
    with pytest.raises(ConfigError, match=r": PollPause: 'soon' ") as err:
        config.load(str(path))
    assert err.value.option == "PollPause"


@pytest.mark.parametrize(
    "region",
    [
        "us-west-2",
        "us-gov-west-1",
        "cn-north-1",
        "us-isob-east-1",
        "eu-isoe-west-1",
        "eusc-de-east-1",
        "il-central-1",
    ],
)
def test_every_aws_partition_region_is_accepted(region: str) -> None:
    assert config.from_mapping({"SQS_Region": region}, "f").sqs_region == region


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("s3://bucket", BucketUrl("bucket", "")),
        ("s3://bucket/", BucketUrl("bucket", "")),
        ("s3://bucket/p", BucketUrl("bucket", "p/")),
        ("s3://my.bucket-1/a/b/", BucketUrl("my.bucket-1", "a/b/")),
    ],
)
def test_bucket_url_prefix_always_ends_in_slash(raw: str, expected: BucketUrl) -> None:
    assert config.from_mapping({"BucketUrl": raw}, "f").bucket_url == expected


def test_values_are_stripped_and_empty_optional_means_unset() -> None:
    cfg = config.from_mapping(
        {"QueueName": "  q  ", "QueueUrl": "", "MetricsAddress": ":9100"}, "f"
    )
    assert cfg.queue_name == "q"
    assert cfg.queue_url is None
    assert cfg.metrics_address == ("127.0.0.1", 9100)


def test_log_format_is_text_or_json_in_any_case() -> None:
    assert config.from_mapping({"LogFormat": " JSON "}, "f").log_format == "json"
    assert config.from_mapping({"LogFormat": "Text"}, "f").log_format == "text"


# --- through the command line ---


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != config.ENV_PATH}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "aws_ork", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "option", "raw"),
    [
        ("[aws_ork]\nPollPause = x\n", "PollPause", "x"),
        (LEGACY_FILE.replace("False", "maybe"), "DeleteUnknownMessages", "maybe"),
    ],
)
def test_cli_bad_value_exits_2_with_one_line(
    tmp_path: Path, text: str, option: str, raw: str
) -> None:
    path = write(tmp_path, text)
    result = run_cli("-c", str(path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert option in lines[0]
    assert repr(raw) in lines[0]
    assert result.stdout == ""


def test_cli_missing_c_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    result = run_cli("-c", str(missing), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(missing) in lines[0]


def test_cli_missing_env_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    result = run_cli(cwd=tmp_path, env={config.ENV_PATH: str(missing)})
    assert result.returncode == 2
    assert str(missing) in result.stderr


def test_cli_version(tmp_path: Path) -> None:
    result = run_cli("-V", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"aws_ork {__version__}"


def test_cli_force_without_restore_exits_2(tmp_path: Path) -> None:
    # -c names a missing file, so were --force let through the run would still stop at once
    result = run_cli("--force", "-c", str(tmp_path / "nope.conf"), cwd=tmp_path)
    assert result.returncode == 2
    assert "--force" in result.stderr.splitlines()[-1]


def test_example_config_lists_every_option_and_reads_back_as_the_defaults(tmp_path) -> None:
    example = Path(__file__).parent.parent / "data" / "aws_ork.conf"
    text = example.read_text()
    listed = {m.group(1).lower() for m in re.finditer(r"^#?(\w+) =", text, re.M)}
    assert listed == set(config.OPTIONS)
    # the shipped file, as is, is valid and changes nothing but KeyBinding (no default: it is
    # set to tag); until its topic is filled in it refuses to run (the safe default: no
    # topic, no key)
    assert re.findall(r"^(\w+) = (.*)$", text, re.M) == [("KeyBinding", "tag")]
    assert config.read_file(example) == Config(source=str(example), key_binding="tag")
    with pytest.raises(ConfigError, match="AllowedTopicArns"):
        config.require_safe(config.read_file(example))
    # every commented example value is itself valid (with what it needs beside it)
    needs = {"bucketkmskeyid": "BucketSSE = aws:kms\n"}
    for line in re.findall(r"^#(\w+ =.*)$", text, re.M):
        name = line.split()[0].lower()
        config.read_file(write(tmp_path, f"[aws_ork]\n{needs.get(name, '')}{line}\n"))


def test_the_reference_documents_every_option() -> None:
    reference = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for _, canonical in config.OPTIONS.values():
        assert f"\n### {canonical}\n" in reference, canonical


# --- settings that cannot be safe without another one ---


def test_signatures_without_a_topic_allow_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"f: AllowedTopicArns: not set while VerifySignatures"):
        config.require_safe(config.from_mapping({}, "f"))
    named = config.from_mapping(
        {"AllowedTopicArns": "arn:aws:sns:us-west-2:123456789012:t", "KeyBinding": "tag"}, "f"
    )
    assert config.require_safe(named) == []


def test_any_topic_is_an_explicit_opt_out_warned_at_every_start() -> None:
    anything = config.from_mapping({"AllowedTopicArns": "*", "KeyBinding": "tag"}, "f")
    assert any("ANY SNS topic" in w for w in config.require_safe(anything))
    with pytest.raises(ConfigError, match="AllowedTopicArns: .* mixes \\*"):
        config.from_mapping({"AllowedTopicArns": "* arn:aws:sns:us-west-2:123456789012:t"}, "f")


def test_unsigned_eventbridge_needs_a_group_or_tag_filter() -> None:
    topic = {"AllowedTopicArns": "arn:aws:sns:us-west-2:123456789012:t", "KeyBinding": "tag"}
    with pytest.raises(ConfigError, match="f: UnsignedSources: names eventbridge"):
        config.require_safe(config.from_mapping({**topic, "UnsignedSources": "eventbridge"}, "f"))
    for filters in ({"AutoScalingGroups": "*"}, {"InstanceTags": "role=minion"}):
        cfg = config.from_mapping({**topic, "UnsignedSources": "eventbridge", **filters}, "f")
        assert any("UnsignedSources" in w for w in config.require_safe(cfg))


def test_the_sweep_needs_a_group_or_tag_filter() -> None:
    """Without one the sweep would judge every instance of the region (bastions, the
    master itself)."""
    topic = {"AllowedTopicArns": "arn:aws:sns:us-west-2:123456789012:t", "KeyBinding": "tag"}
    with pytest.raises(
        ConfigError, match="f: SweepMinutes: is set but neither AutoScalingGroups nor InstanceTags"
    ):
        config.require_safe(config.from_mapping({**topic, "SweepMinutes": "5"}, "f"))
    for filters in ({"AutoScalingGroups": "*"}, {"InstanceTags": "role=minion"}):
        cfg = config.from_mapping({**topic, "SweepMinutes": "5", **filters}, "f")
        assert config.require_safe(cfg) == []


@pytest.mark.parametrize("option", ["AutoScalingGroups", "InstanceTags"])
def test_filters_without_verify_instances_are_a_config_error(option: str) -> None:
    cfg = config.from_mapping(
        {
            "VerifySignatures": "no",
            "VerifyInstances": "no",
            "KeyBinding": "off",
            option: "web-*" if option == "AutoScalingGroups" else "a=b",
        },
        "f",
    )
    with pytest.raises(ConfigError, match=f"f: {option}: is set but VerifyInstances is off"):
        config.require_safe(cfg)


def test_the_cli_refuses_to_start_or_check_without_topics(tmp_path: Path) -> None:
    conf = write(tmp_path, "[aws_ork]\nQueueUrl = http://127.0.0.1:1/123456789012/q\n")
    for flags in ((), ("--check",), ("--once",)):
        result = subprocess.run(
            [sys.executable, "-m", "aws_ork", "-c", str(conf), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "AllowedTopicArns" in result.stderr


def test_key_binding_has_no_default_and_not_set_is_a_config_error() -> None:
    topic = {"AllowedTopicArns": "arn:aws:sns:us-west-2:123456789012:t"}
    with pytest.raises(ConfigError, match=r"f: KeyBinding: not set: it has no default"):
        config.require_safe(config.from_mapping(topic, "f"))
    for value in ("tag", "off", "TAG", " Off "):
        assert config.from_mapping({**topic, "KeyBinding": value}, "f").key_binding in (
            "tag",
            "off",
        )


def test_the_cli_refuses_to_start_or_check_without_key_binding(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        "[aws_ork]\nQueueUrl = http://127.0.0.1:1/123456789012/q\n"
        "AllowedTopicArns = arn:aws:sns:us-west-2:123456789012:t\n"
        f"StateDir = {tmp_path / 'state'}\n",
    )
    for flags in ((), ("--check",), ("--once",)):
        result = run_conf(conf, *flags)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"{conf}: KeyBinding: not set: it has no default" in result.stderr
        assert "Set KeyBinding = tag" in result.stderr


def test_key_binding_off_is_an_explicit_choice_warned_at_every_start() -> None:
    off = config.from_mapping({**TOPIC, "KeyBinding": "off"}, "f")
    assert config.require_safe(off) == [config.KEY_BINDING_OFF]
    assert config.KEY_BINDING_OFF.startswith("KeyBinding = off: the first key presented under")
    assert "set KeyBinding = tag" in config.KEY_BINDING_OFF
    assert config.require_safe(config.from_mapping({**TOPIC, "KeyBinding": "tag"}, "f")) == []


def test_key_binding_off_is_a_warning_at_start_and_in_check_and_tag_is_not(
    master, tmp_path: Path, queue_url: str
) -> None:
    """Through the command line, against the moto server and a real salt-master: the daemon's
    start logs the WARNING, --check prints it as a WARN line; with tag neither says it."""
    from tests.daemon import run_aws_ork, write_config

    off = write_config(tmp_path / "off.conf", queue_url=queue_url, master=master, KeyBinding="off")
    tag = write_config(
        tmp_path / "tag.conf",
        queue_url=queue_url,
        master=master,
        KeyBinding="tag",
        VerifyInstances="true",
        StateDir=tmp_path / "tag-state",
    )
    warning = f"WARNING aws_ork: {config.KEY_BINDING_OFF}"
    started = run_aws_ork(off, "--once")
    assert started.returncode == 0, started.stderr
    assert (
        [line for line in started.stderr.splitlines() if "KeyBinding = off" in line]
        == [line for line in started.stderr.splitlines() if line.endswith(warning)]
        != []
    )
    checked = run_aws_ork(off, "--check")
    assert f"WARN {config.KEY_BINDING_OFF}" in checked.stdout.splitlines(), checked.stdout
    for flags in (("--once",), ("--check",)):
        result = run_aws_ork(tag, *flags)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "KeyBinding = off" not in result.stdout + result.stderr


# --- settings that make the checks moot (issue 18, item 10) ---

TOPIC = {"AllowedTopicArns": "arn:aws:sns:us-west-2:123456789012:t", "KeyBinding": "tag"}


@pytest.mark.parametrize("sources", ["raw", "hook", "raw hook"])
def test_unsigned_raw_and_hook_need_a_group_or_tag_filter(tmp_path: Path, sources: str) -> None:
    """An unsigned launch may name any running instance of the region: without a group or
    tag filter the queue policy would be its only gate, so it is a config error."""
    base = {**TOPIC, "StateDir": str(tmp_path / "state"), "UnsignedSources": sources}
    with pytest.raises(ConfigError, match="f: UnsignedSources: names (raw|hook)"):
        config.require_safe(config.from_mapping(base, "f"))
    for filters in ({"AutoScalingGroups": "*"}, {"InstanceTags": "role=minion"}):
        cfg = config.from_mapping({**base, **filters}, "f")
        assert any("UnsignedSources" in w for w in config.require_safe(cfg))


def run_conf(conf: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aws_ork", "-c", str(conf), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_config(tmp_path: Path, **options: str) -> Path:
    lines = [
        f"{name} = {value}"
        for name, value in {
            "QueueUrl": "http://127.0.0.1:1/123456789012/q",
            **TOPIC,
            "StateDir": str(tmp_path / "state"),
            **options,
        }.items()
    ]
    return write(tmp_path, "[aws_ork]\n" + "\n".join(lines) + "\n")


@pytest.mark.parametrize("sources", ["raw", "hook"])
def test_the_cli_refuses_unsigned_raw_or_hook_without_a_filter(
    tmp_path: Path, sources: str
) -> None:
    conf = cli_config(tmp_path, UnsignedSources=sources)
    for flags in ((), ("--check",), ("--once",)):
        result = run_conf(conf, *flags)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert (
            f"UnsignedSources: names {sources} but neither AutoScalingGroups nor "
            f"InstanceTags is set" in result.stderr
        )


@pytest.mark.parametrize(
    ("address", "warned"),
    [
        ("0.0.0.0:9731", True),
        ("[::]:9731", True),
        ("10.1.2.3:9731", True),
        ("metrics.example.com:9731", True),
        ("localhost:9731", True),
        ("127.0.0.1:9731", False),
        ("127.9.8.7:9731", False),
        ("[::1]:9731", False),
        ("[::ffff:127.0.0.1]:9731", False),
        (":9731", False),
    ],
)
def test_a_metrics_address_off_loopback_is_warned_about(
    tmp_path: Path, address: str, warned: bool
) -> None:
    cfg = config.from_mapping({**TOPIC, "StateDir": str(tmp_path), "MetricsAddress": address}, "f")
    warnings = [w for w in config.require_safe(cfg) if w.startswith("MetricsAddress")]
    assert bool(warnings) == warned, warnings
    if warned:
        assert "is not a loopback address" in warnings[0]


@pytest.fixture
def anchor(tmp_path: Path) -> Path:
    """A tree as aws_ork leaves it: a 0700 parent, a 0755 cache dir, a host dir, a cert."""
    parent = tmp_path / "state"
    parent.mkdir(mode=0o700)
    certs = parent / "certs"
    (certs / "sns.us-west-2.amazonaws.com").mkdir(mode=0o755, parents=True)
    (certs / "sns.us-west-2.amazonaws.com" / "SimpleNotificationService-x.pem").write_text("")
    return certs


def cert_dir_refusal(directory: Path) -> str | None:
    """The ConfigError require_safe raises for CertCacheDir = directory, or None."""
    cfg = config.from_mapping({**TOPIC, "CertCacheDir": str(directory)}, "f")
    try:
        config.require_safe(cfg)
    except ConfigError as exc:
        assert exc.option == "CertCacheDir", exc
        return str(exc)
    return None


def test_a_cert_cache_dir_only_aws_ork_can_write_is_accepted(anchor: Path, tmp_path: Path):
    assert cert_dir_refusal(anchor) is None
    assert cert_dir_refusal(anchor / "not-yet") is None  # made by aws_ork under a safe parent
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: no one renames what another user made there
    (sticky / "certs").mkdir(mode=0o700)
    assert cert_dir_refusal(sticky / "certs") is None
    link = tmp_path / "link"
    link.symlink_to(anchor)  # a symlink is followed: its target is held to the same rules
    assert cert_dir_refusal(link) is None


@pytest.mark.parametrize("where", ["dir", "host dir", "cert"])
@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_a_cert_cache_dir_others_can_write_is_a_config_error(
    anchor: Path, where: str, mode: int
) -> None:
    host = anchor / "sns.us-west-2.amazonaws.com"
    target = {"dir": anchor, "host dir": host, "cert": next(host.iterdir())}[where]
    target.chmod(mode)
    refusal = cert_dir_refusal(anchor)
    assert refusal is not None and f"{target} is writable by " in refusal, refusal
    assert "whoever can put one there can sign any message" in refusal


def test_a_cert_cache_dir_in_a_directory_others_can_write_is_a_config_error(anchor: Path):
    anchor.parent.chmod(0o777)  # the directory can be renamed away and replaced
    refusal = cert_dir_refusal(anchor)
    assert refusal is not None and f"{anchor.parent} (on the way to {anchor})" in refusal
    refusal = cert_dir_refusal(anchor.parent / "not-yet")  # could be made by someone else
    assert refusal is not None and f"{anchor.parent} (on the way to" in refusal


def test_a_symlinked_cert_cache_dir_is_judged_by_every_directory_on_the_way(
    anchor: Path, tmp_path: Path
):
    shared = tmp_path / "shared"
    shared.mkdir()
    link = shared / "certs"
    link.symlink_to(anchor)
    shared.chmod(0o777)  # the link itself can be swapped for one to another directory
    refusal = cert_dir_refusal(link)
    assert refusal is not None and f"{shared} (on the way to {link})" in refusal, refusal
    shared.chmod(0o755)
    assert cert_dir_refusal(link) is None
    anchor.chmod(0o777)  # the target others can write
    refusal = cert_dir_refusal(link)
    assert refusal is not None and f"{anchor} is writable by others" in refusal, refusal


def test_a_cert_cache_dir_not_owned_by_aws_ork_s_user_is_a_config_error(anchor: Path):
    if os.geteuid() == 0:
        os.chown(anchor, 65534, 65534)  # nobody's
        foreign = anchor
    else:
        foreign = Path("/")  # root's, and so not this user's
    refusal = cert_dir_refusal(foreign)
    assert refusal is not None and "not by aws_ork's user" in refusal, refusal


def test_a_cert_cache_dir_is_not_checked_without_signatures(anchor: Path) -> None:
    anchor.chmod(0o777)
    cfg = config.from_mapping(
        {"VerifySignatures": "no", "KeyBinding": "tag", "CertCacheDir": str(anchor)}, "f"
    )
    assert not any("CertCacheDir" in w for w in config.require_safe(cfg))


def test_the_cli_refuses_to_start_or_check_with_an_unsafe_cert_cache_dir(
    anchor: Path, tmp_path: Path
):
    anchor.chmod(0o777)
    conf = cli_config(tmp_path, CertCacheDir=str(anchor))
    for flags in ((), ("--check",), ("--once",)):
        result = run_conf(conf, *flags)
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"CertCacheDir: {anchor} is writable by others (mode 0777)" in result.stderr
