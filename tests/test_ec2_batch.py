"""One DescribeInstances per receive batch, not per message: counted by a relay in front of
moto, with the shipped trust defaults (signed envelopes, the EC2 check) and a real
salt-master."""

from __future__ import annotations

import pytest

from tests.countproxy import CountingProxy
from tests.daemon import queue_counts, run_aws_ork, send
from tests.trustenv import LAUNCH, group_instance, signed, trust_config


@pytest.fixture
def proxy(moto):
    relay = CountingProxy(moto.url).start()
    yield relay
    relay.stop()


def test_a_batch_of_ten_launches_costs_one_ec2_call(master, tmp_path, sqs, queue_url,
                                                    cert_dir, identity, fleet, proxy):
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
