"""data/cloudformation/aws_ork.yaml: deployed to the moto server, then aws_ork run against it.

moto's CloudFormation has no model for four of the template's resource types (it would skip
them with a warning and still report the stack complete). The deployed variant leaves them out
(``MOTO_LACKS``) and says so; what they would set is checked on the template itself instead.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from aws_ork import defaults
from tests.daemon import queue_counts, run_aws_ork, send, write_config
from tests.messages import new_id
from tests.trustenv import LAUNCH, signed

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "data" / "cloudformation" / "aws_ork.yaml"

#: Resource types moto (5.2) cannot create through CloudFormation. The deployed variant
#: leaves them out; the README ("Deploying the AWS side") names the same four.
MOTO_LACKS = frozenset({
    "AWS::SQS::QueuePolicy",  # only the topic may send
    "AWS::SNS::Subscription",  # topic -> queue, raw delivery off
    "AWS::AutoScaling::LifecycleHook",  # launching/terminating hooks on the group
    "AWS::S3::BucketPolicy",  # TLS only
})

#: IAM has no actions of their own for these (the single-message actions authorise them).
BATCH_ACTIONS = {"sqs:DeleteMessageBatch", "sqs:ChangeMessageVisibilityBatch"}


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (``!Ref``, ``!GetAtt``, ``!Sub`` ...) turned
    into their JSON forms, so the template can be edited here and sent as JSON."""


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_tag)


def load_template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), _CfnLoader)  # noqa: S506 - SafeLoader subclass


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def the(template: dict[str, Any], kind: str) -> dict[str, Any]:
    """The properties of the template's one resource of this type."""
    found = list(resources_of(template, kind).values())
    assert len(found) == 1, f"expected one {kind}"
    return found[0]["Properties"]


@pytest.fixture(scope="module")
def stack(moto, fleet) -> dict[str, str]:
    """The template (without MOTO_LACKS) deployed for the ``fleet`` group; its outputs."""
    template = load_template()
    deployed = {name: r for name, r in template["Resources"].items()
                if r["Type"] not in MOTO_LACKS}
    template["Resources"] = deployed
    cloudformation = boto3.client("cloudformation", region_name="us-west-2")
    name = f"aws-ork-{uuid.uuid4().hex[:8]}"
    cloudformation.create_stack(
        StackName=name, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": "AutoScalingGroupName", "ParameterValue": fleet["group"]}])
    described = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described
    # moto skips a type it has no model for and still says CREATE_COMPLETE: every resource we
    # sent must really be there
    created = {r["LogicalResourceId"]: r["ResourceStatus"] for r in
               cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]}
    assert {n: created.get(n) for n in deployed} == {n: "CREATE_COMPLETE" for n in deployed}
    return {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}


def test_moto_lacks_only_what_the_template_really_uses():
    """Each type left out of the deployment is one the template has (the list stays honest)."""
    kinds = {r["Type"] for r in load_template()["Resources"].values()}
    assert MOTO_LACKS <= kinds


def test_the_stack_deploys_with_its_outputs(stack, sqs, fleet):
    assert stack["AllowedTopicArns"] == stack["TopicArn"]
    assert stack["TopicArn"].startswith("arn:aws:sns:us-west-2:")
    assert stack["BucketUrl"] == f"s3://{stack['BucketName']}/salt/pki/"
    assert stack["MasterInstanceProfile"] and stack["KeyBindingPolicyArn"]
    assert stack["NotificationCommand"].split() == [
        "aws", "autoscaling", "put-notification-configuration", "--region", "us-west-2",
        "--auto-scaling-group-name", fleet["group"], "--topic-arn", stack["TopicArn"],
        "--notification-types", "autoscaling:EC2_INSTANCE_LAUNCH",
        "autoscaling:EC2_INSTANCE_TERMINATE", "autoscaling:EC2_INSTANCE_LAUNCH_ERROR"]
    attributes = sqs.get_queue_attributes(QueueUrl=stack["QueueUrl"],
                                          AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    dead_letter = sqs.get_queue_attributes(QueueUrl=stack["DeadLetterQueueUrl"],
                                           AttributeNames=["QueueArn"])["Attributes"]
    assert redrive == {"deadLetterTargetArn": dead_letter["QueueArn"], "maxReceiveCount": 50}
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"


def test_max_receive_count_lets_a_waiting_launch_reach_its_bound():
    """The redrive's maxReceiveCount against the retry spacing and wait bounds the daemon
    really uses (aws_ork/defaults.py): a launch waiting for its key must be given up by
    aws_ork, not moved to the dead-letter queue first. Computed from the constants, so the
    template cannot drift from them again."""
    parameter = load_template()["Parameters"]["MaxReceiveCount"]
    # receive k comes, at the earliest, the sum of the first k-1 retry delays after the first
    arrivals = [0]
    while arrivals[-1] < defaults.HOOK_WAIT_SECONDS:
        arrivals.append(arrivals[-1] + defaults.retry_delay(len(arrivals)))
    receives = max(len(arrivals), defaults.BOUND_KEY_ATTEMPTS)
    assert receives == defaults.WAIT_RECEIVES
    assert parameter["MinValue"] >= receives  # SQS delivers receive N <= maxReceiveCount
    # a wait may start after a deferred certificate (two failed fetches: the back-off
    # windows of CERT_FAILURE_BACKOFF_SECONDS, 60 s then 120 s)
    late = sum(defaults.CERT_FAILURE_BACKOFF_SECONDS * 2 ** n
               for n in range(defaults.CERT_FAILURE_LIMIT - 1))
    assert parameter["Default"] >= defaults.receives_within(defaults.HOOK_WAIT_SECONDS + late)
    assert parameter["MinValue"] <= parameter["Default"] <= parameter["MaxValue"]


def test_check_passes_and_a_signed_launch_is_handled(stack, master, identity, cert_dir, sqs,
                                                     fleet, tmp_path):
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=stack["QueueUrl"], master=master,
                        AllowedTopicArns=stack["AllowedTopicArns"], VerifySignatures="true",
                        CertCacheDir=cert_dir, BucketUrl=stack["BucketUrl"],
                        BucketSSE="aws:kms")

    check = run_aws_ork(conf, "--check")

    lines = check.stdout.splitlines()
    assert check.returncode == 0, check.stdout + check.stderr
    assert not [line for line in lines if line.startswith("FAIL")]
    assert any(line.startswith(f"ok   queue {stack['QueueUrl']}: 0 messages waiting")
               for line in lines), lines
    assert any(line.startswith(f"ok   bucket {stack['BucketUrl']}: reachable, writable")
               for line in lines), lines

    instance = new_id()
    master.add_pending_key(instance)
    send(sqs, stack["QueueUrl"], signed(identity, LAUNCH, instance, fleet["group"],
                                        topic=stack["TopicArn"]))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions"
    assert queue_counts(sqs, stack["QueueUrl"]) == (0, 0)
    # the accept opened Salt's master event connection; the daemon closes it on the way out
    assert "unclosed" not in result.stderr, result.stderr


# What moto cannot deploy, checked on the template itself.

def test_only_the_topic_can_send_to_the_queue():
    template = load_template()
    statements = the(template, "AWS::SQS::QueuePolicy")["PolicyDocument"]["Statement"]
    topic = {"Ref": "Topic"}
    assert [(s["Effect"], s["Principal"], s["Action"], s["Condition"]) for s in statements] == [
        ("Allow", {"Service": "sns.amazonaws.com"}, "sqs:SendMessage",
         {"ArnEquals": {"aws:SourceArn": topic}}),
        ("Deny", "*", "sqs:SendMessage", {"ArnNotEquals": {"aws:SourceArn": topic}}),
    ]
    subscription = the(template, "AWS::SNS::Subscription")
    assert subscription["RawMessageDelivery"] is False  # the envelope is what AWS signs
    assert (subscription["TopicArn"], subscription["Endpoint"]) == (
        topic, {"Fn::GetAtt": ["Queue", "Arn"]})


def test_lifecycle_hooks_notify_the_topic_for_the_named_group():
    hooks = resources_of(load_template(), "AWS::AutoScaling::LifecycleHook").values()
    assert sorted(h["Properties"]["LifecycleTransition"] for h in hooks) == [
        "autoscaling:EC2_INSTANCE_LAUNCHING", "autoscaling:EC2_INSTANCE_TERMINATING"]
    for hook in hooks:
        props = hook["Properties"]
        assert props["AutoScalingGroupName"] == {"Ref": "AutoScalingGroupName"}
        assert props["NotificationTargetARN"] == {"Ref": "Topic"}
        assert props["RoleARN"] == {"Fn::GetAtt": ["HookRole", "Arn"]}


def test_the_bucket_is_locked_down():
    template = load_template()
    bucket = the(template, "AWS::S3::Bucket")
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    (statement,) = the(template, "AWS::S3::BucketPolicy")["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == \
        ("Deny", "*", "s3:*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_master_role_has_the_readme_policy():
    """The same actions as the README's "IAM policy" (the batch names are no IAM actions)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## IAM policy", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    wanted: set[str] = set()
    for statement in json.loads(block.group(1))["Statement"]:
        action = statement["Action"]
        wanted.update([action] if isinstance(action, str) else action)
    template = load_template()
    assert the(template, "AWS::IAM::InstanceProfile")["Roles"] == [{"Ref": "MasterRole"}]
    (policy,) = template["Resources"]["MasterRole"]["Properties"]["Policies"]
    granted: set[str] = set()
    for statement in policy["PolicyDocument"]["Statement"]:
        if "Fn::If" in statement:  # kms:GenerateDataKey/Decrypt, only with a KmsKeyArn
            continue
        action = statement["Action"]
        granted.update([action] if isinstance(action, str) else action)
    assert granted == wanted - BATCH_ACTIONS


def test_an_instance_may_tag_only_itself_and_only_with_the_binding_tag():
    (statement,) = the(load_template(), "AWS::IAM::ManagedPolicy")["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "ec2:CreateTags")
    assert statement["Condition"] == {
        "StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"},
        "ForAllValues:StringEquals": {"aws:TagKeys": [{"Ref": "KeyBindingTag"}]}}
    parameter = load_template()["Parameters"]["KeyBindingTag"]
    assert parameter["Default"] == "salt:minion-fingerprint"
