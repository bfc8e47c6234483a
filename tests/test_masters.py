"""More than one master (docs/aws.md, "More than one master"), end to end on loopback.

1. Independent masters, fan-out: one SNS topic (moto's own SNS) delivers to one SQS queue
   per master; each master runs its own aws_ork with its own queue, StateDir and mirror
   prefix, with the shipped trust defaults. A multi-master minion (Salt's hot multi-master:
   one minion, both masters, one master key pair) presents its key to both; one launch
   published once ends with its key accepted on both masters, one terminate with it deleted
   on both, and each mirror prefix equal to its own master's pki.
2. A Salt cluster (``cluster_id``): two salt-masters sharing one ``cluster_pki_dir``, one
   aws_ork per member, both consuming one queue: 100 launches and 100 terminates of real
   moto instances (signed, trust defaults), and a minion pre-authorised by one member's
   daemon accepted by the other member.

Signatures. Envelopes moto's SNS delivers are signed with a key of moto's and name a
certificate URL of AWS's form, a new one per delivery, that only the moto server serves.
The fan-out daemons fetch them exactly as from AWS (verified TLS, no redirects) through
tests/certproxy.py (``https_proxy`` and ``SSL_CERT_FILE`` in their environment). The
notifications are published without a Subject: moto leaves Subject out of the string it
signs, so an envelope with one would (rightly) fail the check. The cluster tests send
envelopes signed with the test CA (tests/trustenv.py), as the other trust tests do: there
the point is two daemons on one queue, not SNS.

The masters listen on 127.0.0.1 and 127.0.0.2 with the same ports, as Salt's own cluster
tests do (Linux routes all of 127.0.0.0/8 to the loopback interface).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from aws_ork.preflight.queue_policy import policy_lines
from aws_ork.preflight.report import Status
from tests.awsenv import MotoServer
from tests.certproxy import CertProxy
from tests.daemon import (
    bucket_objects,
    is_key_binding_off_warning,
    queue_counts,
    send,
    start_aws_ork,
    states,
    stop_aws_ork,
    tree_md5s,
    wait_for,
    write_config,
)
from tests.messages import notification
from tests.saltenv import (
    SaltMaster,
    free_port,
    generate_public_key_pem,
    start_master,
    start_minion,
)
from tests.trustenv import LAUNCH, TERMINATE, TOPIC, group_instance, signed

HOSTS = ("127.0.0.1", "127.0.0.2")


def ports_free_on_both(count: int) -> list[int]:
    """Ports free on 127.0.0.1 and on 127.0.0.2 (the two masters bind the same ports)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind((HOSTS[1], port))
        except OSError:
            continue
        if port not in ports:
            ports.append(port)
    return ports


def trust_options(cert_dir: Path, topic: str, group: str) -> dict[str, Any]:
    """The shipped trust defaults, made explicit (tests/daemon.py turns them off)."""
    return {
        "VerifySignatures": "true",
        "VerifyInstances": "true",
        "CertCacheDir": cert_dir,
        "AllowedTopicArns": topic,
        "AutoScalingGroups": group,
        "InstanceTags": "role=salt-minion",
    }


def decisions(log: str) -> list[str]:
    """The daemon's decision lines: ``... message <id>: <kind> <instance> ... via=<source>:
    <outcome>``."""
    return [line for line in log.splitlines() if "aws_ork.decide: message " in line]


def outcome(line: str) -> str:
    return line.partition(" via=")[2].partition(": ")[2]


def problems(log: str) -> list[str]:
    """Lines that should never appear in a clean run (these configs mean KeyBinding = off:
    its start-up WARNING is the one exempt)."""
    return [
        line
        for line in log.splitlines()
        if re.search(r" (ERROR|CRITICAL|WARNING) |Traceback|REJECTED", line)
        and not is_key_binding_off_warning(line)
    ]


# --------------------------------------------------------------------------- fan-out


def queue_policy(queue_arn: str, topic_arn: str) -> str:
    """The queue policy docs/aws.md ("More than one master") gives for each master's queue."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "FromTheTopic",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                },
                {
                    "Sid": "NobodyElse",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnNotEquals": {"aws:SourceArn": topic_arn}},
                },
            ],
        }
    )


@pytest.fixture
def multi_master(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SaltMaster, SaltMaster]]:
    """Two independent salt-masters as Salt's multi-master minion needs them: same ports on
    127.0.0.1 and 127.0.0.2, the same master key pair (copied, as Salt's multi-master
    tutorial says), each its own pki_dir, minion keys and event bus."""
    publish, ret = ports_free_on_both(2)
    masters: list[SaltMaster] = []
    try:
        for name, host in zip(("a", "b"), HOSTS, strict=True):
            master = start_master(
                tmp_path_factory.mktemp(f"master-{name}"),
                start=False,
                extra_opts={
                    "id": f"master-{name}",
                    "interface": host,
                    "publish_port": publish,
                    "ret_port": ret,
                },
            )
            if masters:  # b gets a's key pair under its own id, linked as Salt 3008 does
                for suffix in ("pem", "pub"):
                    own = master.pki_dir / f"master-b.{suffix}"
                    shutil.copy2(masters[0].pki_dir / f"master-a.{suffix}", own)
                    (master.pki_dir / f"master.{suffix}").symlink_to(own)
            masters.append(master)  # stopped below even if it fails to start
            master.start()
        yield masters[0], masters[1]
    finally:
        for master in masters:
            master.stop()


@pytest.fixture
def cert_proxy(moto: MotoServer, tmp_path: Path) -> Iterator[CertProxy]:
    """AWS's certificate host for the daemons, answering with moto's certificates."""
    proxy = CertProxy(tmp_path / "cert-proxy", moto.url)
    proxy.start()
    yield proxy
    proxy.stop()


def test_a_launch_published_once_is_accepted_on_both_masters_and_its_terminate_deleted(
    multi_master, cert_proxy, tmp_path, sqs, s3, bucket, fleet
):
    a, b = multi_master
    sns = boto3.client("sns", region_name="us-west-2")
    topic = sns.create_topic(Name=f"aws-ork-fanout-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queues, configs = [], []
    for master in (a, b):
        name = master.config["id"]
        queue = sqs.create_queue(
            QueueName=f"{name}-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "60"}
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        policy = queue_policy(arn, topic)
        sqs.set_queue_attributes(QueueUrl=queue, Attributes={"Policy": policy})
        assert [line.status for line in policy_lines(policy, (topic,), ())] == [Status.OK]
        subscription = sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True
        )["SubscriptionArn"]
        attributes = sns.get_subscription_attributes(SubscriptionArn=subscription)
        assert attributes["Attributes"]["RawMessageDelivery"] == "false"  # signed envelopes
        queues.append(queue)
        (tmp_path / name).mkdir()
        # the shipped defaults; CertCacheDir is StateDir/certs: each daemon fetches its own
        configs.append(
            write_config(
                tmp_path / name / "aws_ork.conf",
                queue_url=queue,
                master=master,
                bucket=bucket,
                prefix=f"{name}/",
                VerifySignatures="true",
                VerifyInstances="true",
                AllowedTopicArns=topic,
                AutoScalingGroups=fleet["group"],
                InstanceTags="role=salt-minion",
            )
        )
    trees = {"master-a/": a.pki_root, "master-b/": b.pki_root}

    def mirrors_match() -> bool:
        """Each prefix holds its own master's pki, and nothing else is in the bucket."""
        return bucket_objects(s3, bucket, "") == {
            prefix + rel: md5
            for prefix, root in trees.items()
            for rel, md5 in tree_md5s(root).items()
        }

    def queues_empty() -> bool:
        return all(queue_counts(sqs, queue) == (0, 0) for queue in queues)

    def publish(event: str, instance: str) -> None:
        """Once, to the topic, as Auto Scaling does (without a Subject: see above)."""
        sns.publish(
            TopicArn=topic, Message=json.dumps(notification(event, instance, fleet["group"]))
        )

    logs = [tmp_path / "master-a.log", tmp_path / "master-b.log"]
    daemons = [
        start_aws_ork(conf, log, env=cert_proxy.env())
        for conf, log in zip(configs, logs, strict=True)
    ]
    try:
        instance = group_instance(fleet)
        # Salt's hot multi-master minion: it presents its key to both masters
        minion = start_minion(a, tmp_path / "minion", instance, extra_opts={"master": list(HOSTS)})
        try:
            wait_for(
                lambda: all(m.key_path(instance, "minions_pre").is_file() for m in (a, b)),
                60,
                "the minion's key pending on both",
            )
            publish(LAUNCH, instance)
            wait_for(
                lambda: (
                    all(m.key_path(instance, "minions").is_file() for m in (a, b))
                    and queues_empty()
                    and mirrors_match()
                ),
                60,
                "the key accepted on both masters, each mirror and queue done",
            )
            assert states(a, instance) == states(b, instance) == {instance: "minions"}
            for master in (a, b):  # both masters serve the minion
                master.wait_for_ping(instance, timeout=60)
        finally:
            minion.stop()  # its instance is terminated next: its minion is gone

        fleet["ec2"].terminate_instances(InstanceIds=[instance])
        publish(TERMINATE, instance)
        wait_for(
            lambda: (
                not any(
                    m.key_path(instance, state).exists()
                    for m in (a, b)
                    for state in ("minions", "minions_pre", "minions_autosign")
                )
                and queues_empty()
                and mirrors_match()
            ),
            60,
            "the key deleted on both masters, each mirror and queue done",
        )
        assert states(a, instance) == states(b, instance) == {instance: None}
    finally:
        codes = [stop_aws_ork(daemon) for daemon in daemons]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts
    for text in texts:  # each daemon decided each event once, on a signature it checked
        assert [outcome(line) for line in decisions(text)] == ["accepted", "deleted"], text
        assert text.count("fetched SNS signing certificate") == 2, text
        assert not problems(text), text
    # one certificate per delivery: two publishes, two queues, fetched through "AWS"
    assert len(set(cert_proxy.fetched)) == 4
    assert not any(instance in key for key in bucket_objects(s3, bucket, ""))


# --------------------------------------------------------------------------- Salt cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SaltMaster, ...]]:
    """A two-master Salt cluster as Salt's master-cluster tutorial sets one up: each master's
    id is the address its peers reach it on (127.0.0.1, 127.0.0.2), ``cluster_peers`` names
    the other, and ``cluster_pki_dir`` and ``cachedir`` are one shared directory each (a
    shared file system in production). Same ports on both addresses. The first master
    founds the cluster; the second discovers it and joins."""
    shared = tmp_path_factory.mktemp("cluster-shared")
    (shared / "pki" / "peers").mkdir(parents=True)
    (shared / "cache").mkdir()
    publish, ret, pool = ports_free_on_both(3)
    masters: list[SaltMaster] = []
    try:
        for host, peer in (HOSTS, HOSTS[::-1]):
            masters.append(
                start_master(
                    tmp_path_factory.mktemp(f"cluster-{host}"),
                    extra_opts={
                        "id": host,
                        "interface": host,
                        "cluster_id": "aws-ork-test",
                        "cluster_peers": [peer],
                        "cluster_pki_dir": str(shared / "pki"),
                        "cachedir": str(shared / "cache"),
                        "cluster_pool_port": pool,
                        "publish_port": publish,
                        "ret_port": ret,
                    },
                )
            )
        yield tuple(masters)
    finally:
        for master in masters:
            master.stop()


def present_keys(key_dir: Path, ids: list[str]) -> None:
    """Pending keys, as minions that booted would present them (one key for all: the
    content does not matter here), written where the cluster keeps keys."""
    pub = generate_public_key_pem()
    for minion_id in ids:
        tmp = key_dir / "minions_pre" / f".{minion_id}.tmp"
        tmp.write_text(pub)
        tmp.replace(key_dir / "minions_pre" / minion_id)


STOP_LINE = re.compile(
    r"stopping \(SIGTERM\): (\d+) received, (\d+) deleted, (\d+) retried, "
    r"(\d+) rejected"
)


def test_a_cluster_two_daemons_one_queue_100_launches_and_100_terminates(
    cluster, tmp_path, sqs, s3, bucket, cert_dir, identity, fleet
):
    """Each message is handled once, by one of the daemons; every key ends where it must,
    on both masters; each daemon's mirror prefix ends equal to the shared pki."""
    key_dir = Path(cluster[0].config["cluster_pki_dir"])
    assert {p.name for p in (key_dir / "peers").iterdir()} == {f"{h}.pub" for h in HOSTS}
    queue = sqs.create_queue(
        QueueName=f"aws-ork-cluster-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]
    group = fleet["group"]
    reply = fleet["ec2"].run_instances(  # as the group would tag them
        ImageId=fleet["image"],
        MinCount=100,
        MaxCount=100,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "aws:autoscaling:groupName", "Value": group},
                    {"Key": "role", "Value": "salt-minion"},
                ],
            }
        ],
    )
    ids = sorted(i["InstanceId"] for i in reply["Instances"])
    present_keys(key_dir, ids)  # their minions booted and presented their keys

    configs, logs, prefixes = [], [], []
    for master in cluster:
        name = master.config["id"]
        (tmp_path / name).mkdir()
        prefixes.append(f"cluster/{name}/")
        # the shipped defaults, but for a short ReconcileMinutes (docs/aws.md: a member's prefix
        # gets the other members' changes at its next reconciliation)
        configs.append(
            write_config(
                tmp_path / name / "aws_ork.conf",
                queue_url=queue,
                master=master,
                bucket=bucket,
                prefix=prefixes[-1],
                PkiDir=key_dir,
                ReconcileMinutes="0.1",
                **trust_options(cert_dir, TOPIC, group),
            )
        )
        logs.append(tmp_path / f"{name}.log")

    def in_state(state: str) -> set[str]:
        return {i for i in ids if (key_dir / state / i).exists()}

    daemons = [start_aws_ork(conf, log) for conf, log in zip(configs, logs, strict=True)]
    try:
        wait_for(
            lambda: all("S3 mirror reconciliation" in log.read_text() for log in logs),
            30,
            "both daemons started",
        )
        send(sqs, queue, *(signed(identity, LAUNCH, i, group) for i in ids))
        wait_for(
            lambda: in_state("minions") == set(ids) and queue_counts(sqs, queue) == (0, 0),
            60,
            "100 keys accepted and every launch deleted",
        )
        for master in cluster:  # one key store: both masters list the same keys
            listing = master.key_states()
            assert (listing["minions"], listing["minions_pre"]) == (ids, [])

        fleet["ec2"].terminate_instances(InstanceIds=ids)
        send(sqs, queue, *(signed(identity, TERMINATE, i, group) for i in ids))
        wait_for(
            lambda: (
                not any(in_state(s) for s in ("minions", "minions_pre", "minions_autosign"))
                and queue_counts(sqs, queue) == (0, 0)
            ),
            60,
            "100 keys deleted and every terminate deleted",
        )
        wait_for(
            lambda: all(
                bucket_objects(s3, bucket, prefix) == tree_md5s(key_dir) for prefix in prefixes
            ),
            30,
            "each daemon's prefix equal to the shared pki",
        )
        for master in cluster:
            assert not set(ids) & {i for names in master.key_states().values() for i in names}
    finally:
        codes = [stop_aws_ork(daemon) for daemon in daemons]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts
    decided: Counter[tuple[str, str, str]] = Counter()
    for text in texts:
        assert decisions(text), f"this daemon handled nothing:\n{text}"
        assert not problems(text), text
        for line in decisions(text):  # message <id>: <kind> <instance> ...: <outcome>
            kind, instance = line.split(": ")[2].split()[:2]
            decided[kind, instance, outcome(line)] += 1
    assert decided == Counter(
        {
            **{("launch", i, "accepted"): 1 for i in ids},
            **{("terminate", i, "deleted"): 1 for i in ids},
        }
    )
    totals = [tuple(map(int, STOP_LINE.search(text).groups())) for text in texts]
    for received, deleted, retried, rejected in totals:  # nothing received twice
        assert (deleted, retried, rejected) == (received, 0, 0), totals
    assert sum(t[0] for t in totals) == 200, totals


def test_a_cluster_minion_preauthorised_by_one_member_is_accepted_by_the_other(
    cluster, tmp_path, sqs, cert_dir, identity, fleet
):
    """The autosign stub a daemon writes lives in the shared cluster_pki_dir: whichever
    member the new minion first reaches accepts its key there and then."""
    key_dir = Path(cluster[0].config["cluster_pki_dir"])
    queue = sqs.create_queue(
        QueueName=f"aws-ork-cluster-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]
    group = fleet["group"]
    configs, logs = [], []
    for master in cluster:
        name = master.config["id"]
        (tmp_path / name).mkdir()
        configs.append(
            write_config(
                tmp_path / name / "aws_ork.conf",
                queue_url=queue,
                master=master,
                **trust_options(cert_dir, TOPIC, group),
            )
        )
        logs.append(tmp_path / f"{name}.log")
    instance = group_instance(fleet)
    daemons = [start_aws_ork(conf, log) for conf, log in zip(configs, logs, strict=True)]
    try:
        send(sqs, queue, signed(identity, LAUNCH, instance, group))  # the instance boots
        wait_for(
            lambda: (
                (key_dir / "minions_autosign" / instance).exists()
                and queue_counts(sqs, queue) == (0, 0)
            ),
            30,
            "the launch pre-authorised",
        )
        writer = next(i for i, log in enumerate(logs) if instance in log.read_text())
        other = cluster[1 - writer]  # the minion first reaches the member that did not write
        minion = start_minion(
            other, tmp_path / "minion", instance, extra_opts={"master": other.config["interface"]}
        )
        try:
            wait_for(
                lambda: (key_dir / "minions" / instance).is_file(),
                60,
                "the key accepted on the minion's first contact",
            )
            assert not (key_dir / "minions_autosign" / instance).exists()  # used up
            for master in cluster:
                assert states(master, instance) == {instance: "minions"}
            cluster[writer].wait_for_ping(instance, timeout=60)  # through the cluster
        finally:
            minion.stop()

        fleet["ec2"].terminate_instances(InstanceIds=[instance])
        send(sqs, queue, signed(identity, TERMINATE, instance, group))
        wait_for(
            lambda: (
                not any(
                    (key_dir / state / instance).exists()
                    for state in ("minions", "minions_pre", "minions_denied", "minions_autosign")
                )
                and queue_counts(sqs, queue) == (0, 0)
            ),
            30,
            "the key deleted",
        )
    finally:
        codes = [stop_aws_ork(daemon) for daemon in daemons]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts
    outcomes = sorted(outcome(line) for text in texts for line in decisions(text))
    assert outcomes == [
        "deleted",
        "pre-authorised (no key yet): Salt accepts it on the minion's first contact",
    ], texts
    for text in texts:
        assert not problems(text), text
