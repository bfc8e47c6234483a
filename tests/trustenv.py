"""Signed envelopes and a managed Auto Scaling group for the trust tests.

The ``fleet`` fixture (registered for every test module by tests/conftest.py, module-scoped):
a launch template and an Auto Scaling group on the moto server. The signing identity
(``cert_dir``, ``identity``) is in tests/conftest.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.daemon import wait_for, write_config
from tests.messages import envelope, notification
from tests.saltenv import SaltMaster
from tests.snssign import SigningIdentity, sign_envelope

TOPIC = "arn:aws:sns:us-west-2:123456789012:salt-master-asg-events"
OTHER_TOPIC = "arn:aws:sns:us-west-2:123456789012:someone-elses-topic"
LAUNCH = "autoscaling:EC2_INSTANCE_LAUNCH"
TERMINATE = "autoscaling:EC2_INSTANCE_TERMINATE"


@pytest.fixture(scope="module")
def fleet(moto) -> dict[str, Any]:
    """A launch template and a managed Auto Scaling group ``web-<random>``, its tag propagated."""
    ec2 = boto3.client("ec2", region_name="us-west-2")
    asg = boto3.client("autoscaling", region_name="us-west-2")
    suffix = uuid.uuid4().hex[:8]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    template = f"lt-trust-{suffix}"
    ec2.create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": image, "InstanceType": "t2.micro"},
    )
    group = f"web-{suffix}"
    asg.create_auto_scaling_group(
        AutoScalingGroupName=group,
        LaunchTemplate={"LaunchTemplateName": template},
        MinSize=0,
        MaxSize=10,
        DesiredCapacity=0,
        AvailabilityZones=["us-west-2a"],
        Tags=[{"Key": "role", "Value": "salt-minion", "PropagateAtLaunch": True}],
    )
    return {"ec2": ec2, "asg": asg, "group": group, "image": image, "desired": 0}


def group_instance(fleet: dict[str, Any]) -> str:
    """A new instance launched by the managed group (so it carries the real group tag)."""
    asg = fleet["asg"]

    def members() -> set[str]:
        groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[fleet["group"]])
        return {i["InstanceId"] for i in groups["AutoScalingGroups"][0]["Instances"]}

    before = members()
    fleet["desired"] += 1
    asg.set_desired_capacity(AutoScalingGroupName=fleet["group"], DesiredCapacity=fleet["desired"])
    new = wait_for(lambda: members() - before, 30, "the group to launch an instance")
    return new.pop()


def plain_instance(fleet: dict[str, Any], tags: dict[str, str]) -> str:
    """An instance with exactly these tags (e.g. another group's ``aws:autoscaling:groupName``)."""
    spec = (
        [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        if tags
        else []
    )
    reply = fleet["ec2"].run_instances(
        ImageId=fleet["image"], MinCount=1, MaxCount=1, TagSpecifications=spec
    )
    return reply["Instances"][0]["InstanceId"]


def signed(
    identity: SigningIdentity,
    event: str,
    instance_id: str,
    group: str,
    topic: str = TOPIC,
    version: str = "2",
) -> str:
    return json.dumps(
        sign_envelope(envelope(notification(event, instance_id, group), topic), identity, version)
    )


def trust_config(
    tmp_path: Path, queue_url: str, master: SaltMaster, cert_dir: Path, group: str, **options: Any
) -> Path:
    values: dict[str, Any] = {
        "VerifySignatures": "true",
        "VerifyInstances": "true",
        "CertCacheDir": cert_dir,
        "AllowedTopicArns": TOPIC,
        "AutoScalingGroups": f"{group} other-*",
        "InstanceTags": "role=salt-minion",
    }
    values.update(options)
    return write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=master, **values)


def decision_line(stderr: str, instance_id: str) -> str:
    """The handler's one decision line about this instance (not a SECURITY line beside it)."""
    lines = [
        line
        for line in stderr.splitlines()
        if f" {instance_id} " in line and "aws_ork.decide: message " in line
    ]
    assert len(lines) == 1, f"expected one decision for {instance_id}:\n{stderr}"
    return lines[0]
