"""A real salt-minion whose id is an EC2 instance id: launch accepts it, terminate removes it."""

from __future__ import annotations

import pytest

from tests.daemon import queue_counts, run_aws_ork, send
from tests.messages import sns_launch, sns_terminate
from tests.saltenv import start_master, start_minion


@pytest.fixture
def master(tmp_path_factory: pytest.TempPathFactory):
    salt_master = start_master(tmp_path_factory.mktemp("e2e-master"))
    yield salt_master
    salt_master.stop()


def test_minion_of_a_launched_instance_is_accepted_and_answers(
    master, conf, tmp_path, ec2, sqs, queue_url
):
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")[
        "Instances"
    ][0]["InstanceId"]
    minion = start_minion(master, tmp_path / "minion", instance, acceptance_wait_time=1)
    try:
        master.wait_for_key(instance, "minions_pre", timeout=60)
        assert instance not in master.key_states()["minions"]

        send(sqs, queue_url, sns_launch(instance))
        launched = run_aws_ork(conf, "--once")
        assert launched.returncode == 0, launched.stderr
        assert instance in master.key_states()["minions"]

        master.wait_for_ping(instance, timeout=60)  # raises unless it answers True

        send(sqs, queue_url, sns_terminate(instance))
        terminated = run_aws_ork(conf, "--once")
        assert terminated.returncode == 0, terminated.stderr
        listing = master.key_states()
        assert all(instance not in names for names in listing.values())
        assert queue_counts(sqs, queue_url) == (0, 0)
    finally:
        minion.stop()
