"""``aws_ork --check`` through the real CLI, the moto server and a real salt-master; the queue
policy reader on AWS's JSON (and on any JSON at all)."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aws_ork.preflight import PROBE_OBJECT
from aws_ork.preflight.queue_policy import policy_lines
from aws_ork.preflight.report import Status
from tests.daemon import accepting_value, bucket_objects, run_aws_ork, salt_config, write_config

TOPIC = "arn:aws:sns:us-west-2:123456789012:aws-ork-test-topic"
LINE = re.compile(r"(ok  |WARN|FAIL) .+")

ONLY_THE_TOPIC = {
    "Sid": "topic",
    "Effect": "Allow",
    "Principal": {"Service": "sns.amazonaws.com"},
    "Action": "sqs:SendMessage",
    "Resource": "*",
    "Condition": {"ArnEquals": {"aws:SourceArn": TOPIC}},
}
EVERYONE = {
    "Sid": "open",
    "Effect": "Allow",
    "Principal": "*",
    "Action": "sqs:SendMessage",
    "Resource": "*",
}


def set_policy(sqs: Any, queue_url: str, *statements: dict[str, Any]) -> None:
    policy = {"Version": "2012-10-17", "Statement": list(statements)}
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})


def add_dead_letter_queue(sqs: Any, queue_url: str, max_receive_count: int = 50) -> None:
    dlq = sqs.create_queue(QueueName=f"aws-ork-dlq-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count}
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"RedrivePolicy": json.dumps(redrive)})


def lock_down(s3: Any, bucket: str) -> None:
    """Default encryption and all four public access block settings."""
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


@pytest.fixture
def healthy(tmp_path: Path, sqs: Any, s3: Any, queue_url: str, bucket: str, master: Any):
    """A setup with nothing to warn about: DLQ, a policy naming only the topic, a locked-down
    bucket, both trust checks on, KeyBinding = tag (off is a WARNING). Returns a function
    writing its config (options override)."""
    add_dead_letter_queue(sqs, queue_url)
    set_policy(sqs, queue_url, ONLY_THE_TOPIC)
    lock_down(s3, bucket)

    def conf(**options: Any) -> Path:
        values = {
            "VerifySignatures": "true",
            "AllowedTopicArns": TOPIC,
            "VerifyInstances": "true",
            "KeyBinding": "tag",
            "CertCacheDir": tmp_path / "certs",
            **options,
        }
        return write_config(
            tmp_path / "aws_ork.conf", queue_url=queue_url, master=master, bucket=bucket, **values
        )

    return conf


def check(config: Path) -> tuple[int, list[str]]:
    """Run ``--check``; its exit status and output lines, each of the ok/WARN/FAIL form."""
    result = run_aws_ork(config, "--check")
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    for line in lines:
        assert LINE.fullmatch(line), f"{line!r} in\n{result.stdout}{result.stderr}"
    return result.returncode, lines


def starting(lines: list[str], prefix: str) -> list[str]:
    return [line for line in lines if line.startswith(prefix)]


def test_a_healthy_setup_passes_every_check_without_a_warning(healthy, s3, bucket):
    status, lines = check(healthy())

    assert status == 0, lines
    assert starting(lines, "FAIL") == [] and starting(lines, "WARN") == []
    for part in (
        "config",
        "queue",
        "queue dead-letter queue",
        "queue policy",
        "bucket",
        "bucket encryption",
        "bucket public access block",
        "salt pki",
        "EC2 DescribeInstances permitted",
        "CertCacheDir",
        "StateDir",
        "salt master: no auto_accept",
    ):
        assert starting(lines, f"ok   {part}"), (part, lines)
    # the write probe was deleted: the mirror prefix holds nothing of --check's
    assert f"pki/{PROBE_OBJECT}" in "\n".join(lines)
    assert bucket_objects(s3, bucket) == {}


def test_an_open_policy_with_unsigned_sources_fails(healthy, sqs, queue_url):
    set_policy(sqs, queue_url, ONLY_THE_TOPIC, EVERYONE)

    status, lines = check(healthy(UnsignedSources="raw", AutoScalingGroups="*"))

    assert status == 1
    [failed] = starting(lines, "FAIL")
    assert failed.startswith("FAIL queue policy lets everyone send") and "open" in failed


def test_an_open_policy_without_unsigned_sources_only_warns(healthy, sqs, queue_url):
    set_policy(sqs, queue_url, ONLY_THE_TOPIC, EVERYONE)

    status, lines = check(healthy())

    assert status == 0, lines
    assert starting(lines, "FAIL") == []
    assert starting(lines, "WARN") == [
        line for line in lines if line.startswith("WARN queue policy lets others")
    ]
    assert len(starting(lines, "WARN")) == 1


def test_a_dead_letter_queue_sooner_than_a_waiting_launch_takes_warns(
    tmp_path, sqs, queue_url, master
):
    """A launch waiting for its key or lifecycle action is received 35 times before aws_ork
    gives up (the template's old maxReceiveCount of 20 set it aside after ten minutes)."""
    add_dead_letter_queue(sqs, queue_url, max_receive_count=20)
    conf = write_config(tmp_path / "c.conf", queue_url=queue_url, master=master)

    status, lines = check(conf)

    assert status == 0, lines
    [line] = starting(lines, "WARN queue dead-letter queue")
    assert "after 20 receives: under 35" in line


def test_a_queue_without_dead_letter_queue_and_a_bare_bucket_warn(
    tmp_path, sqs, queue_url, master, bucket
):
    conf = write_config(tmp_path / "c.conf", queue_url=queue_url, master=master, bucket=bucket)

    status, lines = check(conf)

    assert status == 0, lines
    assert starting(lines, "WARN queue has no dead-letter queue")
    assert starting(lines, "ok   queue policy: none")
    assert starting(lines, "WARN bucket encryption: the bucket has no default encryption")
    assert starting(lines, "WARN bucket public access block: none")


def test_a_partial_public_access_block_warns_naming_what_is_off(healthy, s3, bucket):
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False,
        },
    )

    status, lines = check(healthy())

    assert status == 0, lines
    assert starting(lines, "WARN") == [
        "WARN bucket public access block: BlockPublicPolicy, RestrictPublicBuckets not on"
    ]


class Unauthorized(http.server.BaseHTTPRequestHandler):
    """An EC2 endpoint that refuses every call, as for a role without ec2:DescribeInstances."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = (
            b"<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You "
            b"are not authorized to perform this operation.</Message></Error></Errors>"
            b"<RequestID>preflight-test</RequestID></Response>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_ec2_describe_instances_not_permitted_fails(healthy):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_aws_ork(healthy(), "--check", env={"AWS_ENDPOINT_URL_EC2": endpoint})
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("FAIL")] == [
        "FAIL EC2 DescribeInstances not permitted in us-west-2: every launch and terminate "
        "would be retried, nothing accepted"
    ]


def test_an_unwritable_pki_fails(healthy, tmp_path, master):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    salt_config = tmp_path / "master"
    salt_config.write_text(json.dumps({**master.config, "pki_dir": str(blocker / "pki")}))

    status, lines = check(healthy(SaltMasterConfig=salt_config))

    assert status == 1
    [failed] = starting(lines, "FAIL")
    assert failed.startswith(f"FAIL salt pki {blocker / 'pki'}"), failed


def test_a_key_cache_without_files_fails_with_verify_instances(healthy, tmp_path, master):
    salt_config = tmp_path / "master"
    salt_config.write_text(json.dumps({**master.config, "keys.cache_driver": "mysql"}))

    status, lines = check(healthy(SaltMasterConfig=salt_config))

    assert status == 1
    assert [line[:35] for line in starting(lines, "FAIL")] == [
        "FAIL salt keys.cache_driver 'mysql'"
    ]


@pytest.mark.parametrize(
    ("option", "included"),
    [
        ("auto_accept", False),
        ("open_mode", False),
        ("autosign_file", False),
        ("autosign_grains_dir", False),
        ("auto_accept", True),
        ("autosign_file", True),
    ],
)
def test_a_master_that_accepts_keys_by_itself_fails(healthy, tmp_path, master, option, included):
    value = {option: accepting_value(tmp_path, option)}
    config = salt_config(tmp_path, master, {} if included else value, value if included else None)

    status, lines = check(healthy(SaltMasterConfig=config))

    assert status == 1, lines
    [failed] = starting(lines, "FAIL")
    assert failed.startswith(f"FAIL salt master {option} is "), failed
    assert "aws_ork's checks decide nothing for those keys" in failed
    assert starting(lines, "ok   salt pki")  # the other checks still ran
    assert not starting(lines, "ok   salt master:")


def test_an_autosign_file_that_exists_fails_naming_it(healthy, tmp_path, master):
    autosign = tmp_path / "autosign.conf"
    autosign.write_text("i-*\n")
    config = salt_config(tmp_path, master, {"autosign_file": str(autosign)})

    status, lines = check(healthy(SaltMasterConfig=config))

    assert status == 1
    assert [
        line[: len(f"FAIL salt master autosign_file is {autosign}:")]
        for line in starting(lines, "FAIL")
    ] == [f"FAIL salt master autosign_file is {autosign}:"]


def test_a_metrics_address_off_loopback_warns(healthy, tmp_path):
    status, lines = check(healthy(MetricsAddress="0.0.0.0:9731"))

    assert status == 0, lines
    assert starting(lines, "WARN") == [
        "WARN MetricsAddress = 0.0.0.0:9731 is not a loopback address: /metrics and /healthz "
        "(plain HTTP, no authentication) answer whoever reaches it; keep it on 127.0.0.1 "
        "and scrape through a proxy you secure"
    ]


def test_an_unwritable_state_dir_fails(healthy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    status, lines = check(healthy(StateDir=blocker / "state"))

    assert status == 1
    assert [line.split(" ")[1] for line in starting(lines, "FAIL")] == ["StateDir"]


def test_a_missing_bucket_fails(tmp_path, queue_url, master):
    conf = write_config(
        tmp_path / "c.conf",
        queue_url=queue_url,
        master=master,
        bucket=f"aws-ork-none-{uuid.uuid4().hex[:12]}",
    )
    status, lines = check(conf)
    assert status == 1
    assert [line.split(":")[0] for line in starting(lines, "FAIL")] == ["FAIL bucket"]


def test_a_config_error_exits_2_before_any_check(tmp_path, queue_url, master):
    conf = write_config(
        tmp_path / "c.conf", queue_url=queue_url, master=master, VerifySignatures="true"
    )  # without AllowedTopicArns
    result = run_aws_ork(conf, "--check")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "AllowedTopicArns" in result.stderr


# --- the policy reader alone: AWS's many spellings ---


def statuses(
    policy: Any, allowed: tuple[str, ...] = (TOPIC,), unsigned: tuple[str, ...] = ()
) -> list[Status]:
    text = policy if isinstance(policy, str) else json.dumps(policy)
    return [line.status for line in policy_lines(text, allowed, unsigned)]


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sqs:*"},
        {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::1:root", "*"]}, "Action": ["*"]},
        {
            "Effect": "Allow",
            "NotPrincipal": {"AWS": "arn:aws:iam::1:root"},
            "Action": "SQS:SendMessage",
        },
        {"Effect": "Allow", "Principal": "*", "NotAction": "sqs:DeleteMessage"},
        {"Effect": "Allow", "Principal": "*", "Action": "sqs:Send*"},
    ],
)
def test_every_spelling_of_everyone_fails_with_unsigned_sources(statement):
    policy = {"Statement": [statement]}
    assert statuses(policy, unsigned=("hook",)) == [Status.FAIL]
    assert statuses(policy) == [Status.WARN]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        # a service principal restricted to another topic, or to nothing: others can send
        (
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:*",
                "Condition": {"ArnLike": {"aws:SourceArn": [TOPIC, "arn:aws:sns:*:*:*"]}},
            },
            Status.WARN,
        ),
        (
            {
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com"]},
                "Action": "sqs:SendMessage",
            },
            Status.WARN,
        ),
        # a condition that admits everything but the topic, or any request without a source
        (
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Condition": {"ArnNotEquals": {"aws:SourceArn": TOPIC}},
            },
            Status.WARN,
        ),
        (
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Condition": {"ArnEqualsIfExists": {"aws:SourceArn": TOPIC}},
            },
            Status.WARN,
        ),
        # everyone, but only through the allowed topic (condition keys are case-insensitive)
        (
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Condition": {"StringEquals": {"AWS:SourceArn": [TOPIC]}},
            },
            Status.OK,
        ),
        # IAM principals of an account, a Deny, another action: no one else sends
        (
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:role/hook"},
                "Action": "sqs:SendMessage",
            },
            Status.OK,
        ),
        ({"Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage"}, Status.OK),
        ({"Effect": "Allow", "Principal": "*", "Action": "sqs:ReceiveMessage"}, Status.OK),
    ],
)
def test_who_may_send(statement, expected):
    assert statuses({"Statement": statement}) == [expected]  # a lone dict, not a list


def test_an_eventbridge_rule_is_expected_only_with_that_unsigned_source():
    rule = "arn:aws:events:us-west-2:123456789012:rule/asg-launches"
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Condition": {"ArnEquals": {"aws:SourceArn": rule}},
            }
        ]
    }
    assert statuses(policy, unsigned=("eventbridge",)) == [Status.OK]
    assert statuses(policy) == [Status.WARN]


def test_no_policy_is_ok_and_an_unreadable_one_warns():
    assert [line.status for line in policy_lines(None, (TOPIC,), ("raw",))] == [Status.OK]
    assert statuses("{not json", unsigned=("raw",)) == [Status.WARN]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(["*", "Allow", "sqs:SendMessage", TOPIC, "aws:SourceArn"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Statement",
                    "Effect",
                    "Principal",
                    "AWS",
                    "Service",
                    "Action",
                    "NotAction",
                    "NotPrincipal",
                    "Condition",
                    "ArnEquals",
                    "aws:SourceArn",
                    "Sid",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_policy_gives_exactly_one_line(policy):
    assert len(statuses(policy, unsigned=("raw",))) == 1


def test_check_does_not_import_the_daemon() -> None:
    """``--check`` builds nothing of the daemon: importing it loads none of the daemon's
    wiring (app, decide, loop), so a check cannot start or depend on what it checks."""
    wiring = ("aws_ork.app", "aws_ork.decide", "aws_ork.loop")
    code = f"import sys, aws_ork.preflight; print([m for m in {wiring!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout
