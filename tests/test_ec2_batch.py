"""One DescribeInstances per receive batch, not per message: counted by a relay in front of
moto, with the shipped trust defaults (signed envelopes, the EC2 check) and a real
salt-master."""

from __future__ import annotations

import pytest

from tests.countproxy import CountingProxy
from tests.daemon import queue_counts, run_aws_ork, send, wait_for
from tests.trustenv import LAUNCH, group_instance, signed, trust_config


@pytest.fixture
def proxy(moto):
    relay = CountingProxy(moto.url).start()
    yield relay
    relay.stop()


def test_a_batch_of_ten_launches_costs_one_ec2_call(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet, proxy
):
    instances = [group_instance(fleet) for _ in range(10)]
    for instance in instances:
        master.add_pending_key(instance)
    send(sqs, queue_url, *(signed(identity, LAUNCH, i, fleet["group"]) for i in instances))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])

    result = run_aws_ork(conf, "--once", env={"AWS_ENDPOINT_URL_EC2": proxy.url})

    assert result.returncode == 0, result.stderr
    assert [master.key_state_of(i) for i in instances] == ["minions"] * 10
    assert queue_counts(sqs, queue_url) == (0, 0)
    calls = [r for r in proxy.snapshot() if r.operation == "DescribeInstances"]
    # one per receive batch: 10 messages come in one batch, or two if SQS splits them
    # (per message, as before, this was 10)
    assert 1 <= len(calls) <= 2, [r.operation for r in proxy.snapshot()]


def test_a_backlog_looked_up_ahead_costs_one_ec2_call_per_batch(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet, proxy
):
    """Each prefetched batch is looked up in EC2 by the loop's look-ahead step while the
    batch before it is handled; that answer is the one used (not asked again)."""
    instances = [group_instance(fleet) for _ in range(30)]
    for instance in instances:
        master.add_pending_key(instance)
    send(sqs, queue_url, *(signed(identity, LAUNCH, i, fleet["group"]) for i in instances))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])

    result = run_aws_ork(
        conf, "--once", env={"AWS_ENDPOINT_URL_EC2": proxy.url, "AWS_ENDPOINT_URL_SQS": proxy.url}
    )

    assert result.returncode == 0, result.stderr
    assert [master.key_state_of(i) for i in instances] == ["minions"] * 30
    assert queue_counts(sqs, queue_url) == (0, 0)
    operations = [r.operation for r in proxy.snapshot()]
    batches = operations.count("DeleteMessageBatch")  # one per batch handled
    assert batches >= 3
    assert operations.count("DescribeInstances") == batches, operations


THROTTLED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    b"</Error></Errors><RequestID>aws-ork-test</RequestID></Response>"
)


def test_a_throttled_describe_instances_is_retried_never_accepted(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet, proxy
):
    instance = group_instance(fleet)
    master.add_pending_key(instance)
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    proxy.answer = lambda r: (503, THROTTLED) if r.operation == "DescribeInstances" else None

    throttled = run_aws_ork(conf, "--once", env={"AWS_ENDPOINT_URL_EC2": proxy.url})

    assert throttled.returncode == 0, throttled.stderr
    assert master.key_state_of(instance) == "minions_pre"
    assert "EC2 DescribeInstances failed: RequestLimitExceeded" in throttled.stderr
    assert sum(queue_counts(sqs, queue_url)) == 1  # kept for a retry
    attempts = [r for r in proxy.snapshot() if r.operation == "DescribeInstances"]
    assert len(attempts) > 1  # botocore backed off and asked again before giving up

    proxy.answer = None  # the throttling is over: the retried launch is accepted
    wait_for(lambda: queue_counts(sqs, queue_url)[0] == 1, 60, "the retried launch")
    again = run_aws_ork(conf, "--once", env={"AWS_ENDPOINT_URL_EC2": proxy.url})
    assert again.returncode == 0, again.stderr
    assert master.key_state_of(instance) == "minions"
