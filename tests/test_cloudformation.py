"""data/cloudformation/aws_ork.yaml: deployed to the moto server, then aws_ork run against it.

moto's CloudFormation has no model for five of the template's resource types (it would skip
them with a warning and still report the stack complete). The deployed variant leaves them out
(``MOTO_LACKS``) and says so; what they would set is checked on the template itself instead.
"""

from __future__ import annotations

import fnmatch
import json
import re
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from aws_ork import defaults
from aws_ork.base import pubkey
from tests.daemon import queue_counts, run_aws_ork, send, write_config
from tests.messages import new_id
from tests.trustenv import LAUNCH, signed

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "data" / "cloudformation" / "aws_ork.yaml"

#: Resource types moto (5.2) cannot create through CloudFormation. The deployed variant
#: leaves them out; docs/aws.md ("Deploying the AWS side") names the same five.
MOTO_LACKS = frozenset(
    {
        "AWS::SQS::QueuePolicy",  # only the topic may send
        "AWS::SNS::Subscription",  # topic -> queue, raw delivery off
        "AWS::SNS::TopicPolicy",  # only Auto Scaling and the hook role may publish
        "AWS::AutoScaling::LifecycleHook",  # launching/terminating hooks on the group
        "AWS::S3::BucketPolicy",  # TLS only, the master's role (and the restore role) only
    }
)
#: What moto names the restore role's ARN parameter in the policy documents below.
RESTORE_ROLE = {"Ref": "RestoreRoleArn"}
MASTER_ROLE = {"Fn::GetAtt": ["MasterRole", "Arn"]}
HOOK_ROLE = {"Fn::GetAtt": ["HookRole", "Arn"]}
NO_VALUE = {"Ref": "AWS::NoValue"}

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


def resolve(node: Any, **conditions: bool) -> Any:
    """The template fragment as CloudFormation would see it with these conditions true or
    false: ``Fn::If`` picks its branch, ``AWS::NoValue`` drops the item or key."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, then, otherwise = node["Fn::If"]
            return resolve(then if conditions[name] else otherwise, **conditions)
        out = {k: resolve(v, **conditions) for k, v in node.items()}
        return {k: v for k, v in out.items() if v != NO_VALUE}
    if isinstance(node, list):
        return [v for v in (resolve(i, **conditions) for i in node) if v != NO_VALUE]
    return node


def statements(kind: str, **conditions: bool) -> dict[str, dict[str, Any]]:
    """The policy statements (by Sid) of the template's one resource of this type."""
    props = the(load_template(), kind)
    document = props.get("PolicyDocument") or props["KeyPolicy"]
    return {s["Sid"]: s for s in resolve(document, **conditions)["Statement"]}


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
    deployed = {name: r for name, r in template["Resources"].items() if r["Type"] not in MOTO_LACKS}
    template["Resources"] = deployed
    cloudformation = boto3.client("cloudformation", region_name="us-west-2")
    name = f"aws-ork-{uuid.uuid4().hex[:8]}"
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": "AutoScalingGroupName", "ParameterValue": fleet["group"]}],
    )
    described = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described
    # moto skips a type it has no model for and still says CREATE_COMPLETE: every resource we
    # sent must really be there
    created = {
        r["LogicalResourceId"]: r["ResourceStatus"]
        for r in cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    }
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
    assert stack["KeyTagsGuardPolicyArn"].startswith("arn:aws:iam::")
    assert stack["BucketSSE"] == "aws:kms"
    # the stack's own key (not aws/s3, which any principal S3 lets in may use), under its
    # alias (moto keeps a CloudFormation key's policy unparsed, so DescribeKey fails there)
    aliases = boto3.client("kms", region_name="us-west-2").list_aliases()["Aliases"]
    assert {a["AliasName"]: a.get("TargetKeyId") for a in aliases}[
        stack["BucketKmsKeyAlias"]
    ] == stack["BucketKmsKeyId"].rsplit("/", 1)[1]
    encryption = boto3.client("s3", region_name="us-west-2").get_bucket_encryption(
        Bucket=stack["BucketName"]
    )["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert encryption["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": stack["BucketKmsKeyId"],
    }
    assert stack["NotificationCommand"].split() == [
        "aws",
        "autoscaling",
        "put-notification-configuration",
        "--region",
        "us-west-2",
        "--auto-scaling-group-name",
        fleet["group"],
        "--topic-arn",
        stack["TopicArn"],
        "--notification-types",
        "autoscaling:EC2_INSTANCE_LAUNCH",
        "autoscaling:EC2_INSTANCE_TERMINATE",
        "autoscaling:EC2_INSTANCE_LAUNCH_ERROR",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=stack["QueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    dead_letter = sqs.get_queue_attributes(
        QueueUrl=stack["DeadLetterQueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]
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
    late = sum(
        defaults.CERT_FAILURE_BACKOFF_SECONDS * 2**n for n in range(defaults.CERT_FAILURE_LIMIT - 1)
    )
    assert parameter["Default"] >= defaults.receives_within(defaults.HOOK_WAIT_SECONDS + late)
    assert parameter["MinValue"] <= parameter["Default"] <= parameter["MaxValue"]


def test_check_passes_and_a_signed_launch_is_handled(
    stack, master, identity, cert_dir, sqs, fleet, tmp_path
):
    conf = write_config(
        tmp_path / "aws_ork.conf",
        queue_url=stack["QueueUrl"],
        master=master,
        AllowedTopicArns=stack["AllowedTopicArns"],
        VerifySignatures="true",
        CertCacheDir=cert_dir,
        BucketUrl=stack["BucketUrl"],
        BucketSSE=stack["BucketSSE"],
        BucketKmsKeyId=stack["BucketKmsKeyId"],
    )

    check = run_aws_ork(conf, "--check")

    lines = check.stdout.splitlines()
    assert check.returncode == 0, check.stdout + check.stderr
    assert not [line for line in lines if line.startswith("FAIL")]
    assert any(
        line.startswith(f"ok   queue {stack['QueueUrl']}: 0 messages waiting") for line in lines
    ), lines
    assert any(
        line.startswith(f"ok   bucket {stack['BucketUrl']}: reachable, writable") for line in lines
    ), lines

    instance = new_id()
    master.add_pending_key(instance)
    send(
        sqs,
        stack["QueueUrl"],
        signed(identity, LAUNCH, instance, fleet["group"], topic=stack["TopicArn"]),
    )

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
        (
            "Allow",
            {"Service": "sns.amazonaws.com"},
            "sqs:SendMessage",
            {"ArnEquals": {"aws:SourceArn": topic}},
        ),
        ("Deny", "*", "sqs:SendMessage", {"ArnNotEquals": {"aws:SourceArn": topic}}),
    ]
    subscription = the(template, "AWS::SNS::Subscription")
    assert subscription["RawMessageDelivery"] is False  # the envelope is what AWS signs
    assert (subscription["TopicArn"], subscription["Endpoint"]) == (
        topic,
        {"Fn::GetAtt": ["Queue", "Arn"]},
    )


def test_lifecycle_hooks_notify_the_topic_for_the_named_group():
    hooks = resources_of(load_template(), "AWS::AutoScaling::LifecycleHook").values()
    assert sorted(h["Properties"]["LifecycleTransition"] for h in hooks) == [
        "autoscaling:EC2_INSTANCE_LAUNCHING",
        "autoscaling:EC2_INSTANCE_TERMINATING",
    ]
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
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["BucketKey", "Arn"]},
    }
    assert template["Parameters"]["RestoreRoleArn"]["Default"] == ""
    bucket_arns = [{"Fn::GetAtt": ["Bucket", "Arn"]}, {"Fn::Sub": "${Bucket.Arn}/*"}]

    for restore in (False, True):
        policy = statements("AWS::S3::BucketPolicy", HasRestoreRole=restore)
        tls = policy.pop("TlsOnly")
        assert (tls["Effect"], tls["Principal"], tls["Action"], tls["Resource"]) == (
            "Deny",
            "*",
            "s3:*",
            bucket_arns,
        )
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        # every principal but the roles is denied the objects and their listing, by the
        # role's ARN (every session of the role carries it), not NotPrincipal
        others = policy.pop("OnlyTheMasterAndTheRestoreRole")
        assert (others["Effect"], others["Principal"], others["Resource"]) == (
            "Deny",
            "*",
            bucket_arns,
        )
        assert "NotPrincipal" not in others
        for action in ("s3:GetObject*", "s3:PutObject*", "s3:DeleteObject*", "s3:ListBucket*"):
            assert action in others["Action"]
        allowed = [MASTER_ROLE, RESTORE_ROLE] if restore else [MASTER_ROLE]
        assert others["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": allowed}}
        if restore:  # the restore role reads (and lists versions), writes nothing
            reads = policy.pop("TheRestoreRoleReads")
            assert (reads["Effect"], reads["Principal"]) == ("Allow", {"AWS": RESTORE_ROLE})
            assert sorted(reads["Action"]) == [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:ListBucket",
                "s3:ListBucketVersions",
            ]
        assert policy == {}  # nothing else: no Allow for anyone else, no root


def test_only_the_master_encrypts_and_only_the_restore_role_decrypts():
    template = load_template()
    key = the(template, "AWS::KMS::Key")
    assert key["EnableKeyRotation"] is True
    assert template["Resources"]["BucketKey"]["DeletionPolicy"] == "Retain"
    alias = the(template, "AWS::KMS::Alias")
    assert alias["TargetKeyId"] == {"Ref": "BucketKey"}
    via_s3 = {"StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}}}
    for restore in (False, True):
        policy = statements("AWS::KMS::Key", HasRestoreRole=restore)
        admin = policy.pop("AccountAdministersTheKeyButCannotUseIt")
        assert admin["Principal"] == {
            "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
        }
        # administration only: no use of the key, nor a grant that would give its use
        for use in (
            "kms:*",
            "kms:Decrypt",
            "kms:Encrypt",
            "kms:GenerateDataKey*",
            "kms:ReEncrypt*",
            "kms:CreateGrant",
            "kms:Create*",
        ):
            assert use not in admin["Action"]
        assert not [
            a
            for a in admin["Action"]
            if a.startswith(
                (
                    "kms:Decrypt",
                    "kms:Encrypt",
                    "kms:GenerateDataKey",
                    "kms:ReEncrypt",
                    "kms:CreateGrant",
                )
            )
        ]
        assert "kms:PutKeyPolicy" in admin["Action"] or "kms:Put*" in admin["Action"]
        master = policy.pop("TheMasterEncrypts")
        assert (master["Effect"], master["Principal"], master["Action"]) == (
            "Allow",
            {"AWS": MASTER_ROLE},
            "kms:GenerateDataKey",
        )
        assert master["Condition"] == via_s3
        if restore:
            decrypt = policy.pop("TheRestoreRoleDecrypts")
            assert (decrypt["Effect"], decrypt["Principal"], decrypt["Action"]) == (
                "Allow",
                {"AWS": RESTORE_ROLE},
                "kms:Decrypt",
            )
            assert decrypt["Condition"] == via_s3
        assert policy == {}
    # the master's own IAM policy has no kms:Decrypt either: the running daemon never reads
    # a body back (PUT, DELETE, HEAD, LIST); only --restore does, with the restore role
    (policy_resource,) = resources_of(template, "AWS::IAM::Policy").values()
    kms = [
        st
        for st in policy_resource["Properties"]["PolicyDocument"]["Statement"]
        if str(st["Action"]).startswith("kms:")
    ]
    assert kms == [
        {
            "Effect": "Allow",
            "Action": "kms:GenerateDataKey",
            "Resource": {"Fn::GetAtt": ["BucketKey", "Arn"]},
        }
    ]


def test_only_auto_scaling_and_the_hook_role_may_publish_to_the_topic():
    slr = {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/aws-service-role/"
        "autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling*"
    }
    assert the(load_template(), "AWS::SNS::TopicPolicy")["Topics"] == [{"Ref": "Topic"}]
    for group in (False, True):
        policy = statements("AWS::SNS::TopicPolicy", HasGroup=group)
        service = policy.pop("AutoScalingOfThisAccount")
        assert (service["Effect"], service["Principal"], service["Action"]) == (
            "Allow",
            {"Service": "autoscaling.amazonaws.com"},
            "sns:Publish",
        )
        assert service["Condition"] == {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
        }
        if group:
            hook = policy.pop("TheHookRole")
            assert (hook["Effect"], hook["Principal"], hook["Action"]) == (
                "Allow",
                {"AWS": HOOK_ROLE},
                "sns:Publish",
            )
        others = policy.pop("NobodyElse")
        assert (others["Effect"], others["Principal"], others["Action"]) == (
            "Deny",
            "*",
            "sns:Publish",
        )
        # IAM principals (service principals carry no aws:PrincipalArn: they get only the
        # Allow above) other than the hook role and Auto Scaling's service-linked role
        assert others["Condition"] == {
            "Bool": {"aws:PrincipalIsAWSService": "false"},
            "ArnNotLike": {"aws:PrincipalArn": [HOOK_ROLE, slr] if group else [slr]},
        }
        assert policy == {}


def test_the_master_role_has_the_documented_policy():
    """The same actions as docs/aws.md's "IAM policy" (the batch names are no IAM actions)."""
    readme = (ROOT / "docs" / "aws.md").read_text()
    section = readme.split("## IAM policy", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    wanted: set[str] = set()
    for statement in json.loads(block.group(1))["Statement"]:
        action = statement["Action"]
        wanted.update([action] if isinstance(action, str) else action)
    template = load_template()
    assert the(template, "AWS::IAM::InstanceProfile")["Roles"] == [{"Ref": "MasterRole"}]
    assert "Policies" not in template["Resources"]["MasterRole"]["Properties"]
    (policy,) = resources_of(template, "AWS::IAM::Policy").values()
    assert policy["Properties"]["Roles"] == [{"Ref": "MasterRole"}]
    granted: set[str] = set()
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        action = statement["Action"]
        granted.update([action] if isinstance(action, str) else action)
    assert granted == wanted - BATCH_ACTIONS


INSTANCES = {"Fn::Sub": "arn:${AWS::Partition}:ec2:*:*:instance/*"}
GUARDED = ["salt:minion-key-*", {"Ref": "KeyBindingTag"}]
INSTANCE_ARN = "arn:aws:ec2:us-west-2:123456789012:instance/"


def managed_policy(name: str) -> dict[str, Any]:
    template = load_template()
    assert template["Resources"][name]["Type"] == "AWS::IAM::ManagedPolicy"
    return template["Resources"][name]["Properties"]


def test_an_instance_may_tag_only_itself_and_only_with_its_key_tags():
    (statement,) = managed_policy("KeyBindingPolicy")["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "ec2:CreateTags")
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"
    }
    key_tags = [f"{pubkey.KEY_TAG_PREFIX}{i}" for i in range(pubkey.MAX_KEY_TAGS)]
    assert statement["Condition"] == {
        "StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"},
        "ForAllValues:StringEquals": {"aws:TagKeys": [{"Ref": "KeyBindingTag"}, *key_tags]},
    }
    parameter = load_template()["Parameters"]["KeyBindingTag"]
    assert parameter["Default"] == "salt:minion-fingerprint"
    # no wildcard in it: the guard's StringLike on it matches that one key only
    assert re.fullmatch(parameter["AllowedPattern"], parameter["Default"])
    assert not re.fullmatch(parameter["AllowedPattern"], "salt:*")
    assert not re.fullmatch(parameter["AllowedPattern"], "salt:minion-?")


def test_the_key_tags_guard_only_denies_and_is_on_the_master_role_and_exported():
    guard = managed_policy("KeyTagsGuardPolicy")
    assert guard["Roles"] == [{"Ref": "MasterRole"}]
    by_sid = {s["Sid"]: s for s in guard["PolicyDocument"]["Statement"]}
    assert {s["Effect"] for s in by_sid.values()} == {"Deny"}
    assert all(s["Resource"] == INSTANCES for s in by_sid.values())
    others = by_sid.pop("OnlyAnInstanceSetsItsKeyTags")
    assert others["Action"] == "ec2:CreateTags"
    assert others["Condition"] == {
        "ForAnyValue:StringLike": {"aws:TagKeys": GUARDED},
        "Null": {"ec2:SourceInstanceARN": "true"},
    }
    elsewhere = by_sid.pop("AnInstanceSetsOnlyItsOwnKeyTags")
    assert elsewhere["Action"] == "ec2:CreateTags"
    assert elsewhere["Condition"] == {
        "ForAnyValue:StringLike": {"aws:TagKeys": GUARDED},
        "Null": {"ec2:SourceInstanceARN": "false"},
        "StringNotEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"},
    }
    deletes = by_sid.pop("NobodyDeletesKeyTags")
    assert deletes["Action"] == "ec2:DeleteTags"
    assert deletes["Condition"] == {"ForAnyValue:StringLike": {"aws:TagKeys": GUARDED}}
    every = by_sid.pop("NobodyDeletesEveryTag")
    assert every["Action"] == "ec2:DeleteTags"
    assert every["Condition"] == {"Null": {"aws:TagKeys": "true"}}
    assert by_sid == {}
    output = load_template()["Outputs"]["KeyTagsGuardPolicyArn"]
    assert output["Value"] == {"Ref": "KeyTagsGuardPolicy"}
    assert "attach it to every other role that may tag instances" in " ".join(
        output["Description"].split()
    )


def condition_holds(condition: dict[str, dict[str, Any]], context: dict[str, Any]) -> bool:
    """IAM's evaluation of the operators these policies use: a key missing from the request
    fails a positive operator and passes a negated one (ForAllValues passes, ForAnyValue
    fails); Null tests presence; a policy variable is the request's value of its key."""

    def values(wanted: Any) -> list[str | None]:
        out = []
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if isinstance(value, dict):  # {"Ref": "KeyBindingTag"}: its default
                value = "salt:minion-fingerprint"
            if value.startswith("${") and value.endswith("}"):
                value = context.get(value[2:-1])
            out.append(value)
        return out

    def match(operator: str, have: str, want: str | None) -> bool:
        if want is None:
            return False
        return fnmatch.fnmatchcase(have, want) if operator == "StringLike" else have == want

    for operator, keys in condition.items():
        for key, wanted in keys.items():
            have = context.get(key)
            patterns = values(wanted)
            if operator == "Null":
                ok = (have is None) == (wanted == "true")
            elif operator.startswith(("ForAllValues:", "ForAnyValue:")):
                qualifier, base = operator.split(":", 1)
                hits = [any(match(base, h, w) for w in patterns) for h in have or []]
                ok = all(hits) if qualifier == "ForAllValues" else any(hits)
            elif operator.startswith("StringNot"):
                ok = have is None or not any(match("StringEquals", have, w) for w in patterns)
            else:
                ok = have is not None and any(match(operator, have, w) for w in patterns)
            if not ok:
                return False
    return True


def decide(action: str, target: str, keys: list[str] | None, caller: str | None) -> str:
    """allow / deny / implicit for a request by a role with KeyBindingPolicy, the guard and
    ec2:* on every resource (caller: the instance whose role credentials sign, or None)."""
    context: dict[str, Any] = {"aws:ARN": INSTANCE_ARN + target}
    if keys is not None:
        context["aws:TagKeys"] = keys
    if caller is not None:
        context["ec2:SourceInstanceARN"] = INSTANCE_ARN + caller
    guard = managed_policy("KeyTagsGuardPolicy")["PolicyDocument"]["Statement"]
    binding_allow = managed_policy("KeyBindingPolicy")["PolicyDocument"]["Statement"]
    if any(s["Action"] == action and condition_holds(s["Condition"], context) for s in guard):
        return "deny"
    if any(
        s["Action"] == action and condition_holds(s["Condition"], context) for s in binding_allow
    ):
        return "allow"
    return "implicit"


@pytest.mark.parametrize(
    ("action", "target", "keys", "caller", "wanted"),
    [
        # the instance publishing its own key: the script's one call (2048 and 4096)
        (
            "ec2:CreateTags",
            "i-a",
            ["salt:minion-fingerprint", "salt:minion-key-0", "salt:minion-key-1"],
            "i-a",
            "allow",
        ),
        (
            "ec2:CreateTags",
            "i-a",
            [
                "salt:minion-fingerprint",
                "salt:minion-key-0",
                "salt:minion-key-1",
                "salt:minion-key-2",
            ],
            "i-a",
            "allow",
        ),
        # nothing else on itself, nor a fourth key tag
        ("ec2:CreateTags", "i-a", ["salt:minion-key-0", "Name"], "i-a", "implicit"),
        ("ec2:CreateTags", "i-a", ["salt:minion-key-3"], "i-a", "implicit"),
        # another instance, a user or a service role: denied, whatever else allows them
        ("ec2:CreateTags", "i-b", ["salt:minion-key-0"], "i-a", "deny"),
        ("ec2:CreateTags", "i-b", ["salt:minion-fingerprint"], "i-a", "deny"),
        ("ec2:CreateTags", "i-b", ["Name", "salt:minion-key-7"], "i-a", "deny"),
        ("ec2:CreateTags", "i-a", ["salt:minion-key-0"], None, "deny"),
        ("ec2:CreateTags", "i-a", ["Name", "salt:minion-fingerprint"], None, "deny"),
        # other tags are not the guard's business
        ("ec2:CreateTags", "i-b", ["Name"], "i-a", "implicit"),
        ("ec2:CreateTags", "i-a", ["Name"], None, "implicit"),
        # deleting them: nobody, the instance itself included; nor every tag at once
        ("ec2:DeleteTags", "i-a", ["salt:minion-key-1"], "i-a", "deny"),
        ("ec2:DeleteTags", "i-a", ["salt:minion-fingerprint"], None, "deny"),
        ("ec2:DeleteTags", "i-a", None, None, "deny"),
        ("ec2:DeleteTags", "i-a", None, "i-a", "deny"),
        ("ec2:DeleteTags", "i-a", ["Name"], None, "implicit"),
    ],
)
def test_who_may_set_and_delete_the_key_tags(action, target, keys, caller, wanted):
    assert decide(action, target, keys, caller) == wanted
