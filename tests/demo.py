"""A local demo: moto server + a Salt master and minion in a temp dir + aws_ork + a launch.

The real order of events: the launch notification arrives while the instance is still booting,
so aws_ork pre-authorises the minion (Salt's autosign stub); the minion then starts and is
accepted on its first contact; the terminate notification removes its key.

Run it with ``python3 -m tox -e demo`` (or ``python -m tests.demo`` in an environment with
aws_ork and its test extras installed). Everything listens on 127.0.0.1 and is stopped at
the end; nothing outside the temp dir is touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3

from aws_ork.base import pubkey
from tests.awsenv import start_moto
from tests.daemon import command, is_key_binding_off_warning, wait_for, write_config
from tests.messages import sns_launch, sns_terminate
from tests.saltenv import make_minion_keys, start_master, start_minion
from tests.snssign import make_signing_identity, sign_envelope

TOPIC = "arn:aws:sns:us-west-2:123456789012:salt-master-asg-events"


def signed(body: str, identity) -> str:
    return json.dumps(sign_envelope(json.loads(body), identity))


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def show_keys(master) -> None:
    listing = master.key_states()
    print(json.dumps({state: names for state, names in listing.items()}, indent=2))


def _lines_about(log: Path, instance: str) -> str:
    """aws_ork's log lines about this instance."""
    return "\n".join(line for line in log.read_text().splitlines() if f"{instance} " in line)


def _mirror_without(s3, instance: str) -> list[str]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="aws-ork-demo").get("Contents", [])]
    return keys if keys and not any(instance in k for k in keys) else []


def stop_cleanly(daemon: subprocess.Popen, log_path: Path) -> bool:
    """SIGTERM aws_ork, show its log; False (with the offending lines) unless it exited 0
    without a warning (but act 1's KeyBinding = off, an explicit choice warned at every start),
    an unclosed resource or a traceback."""
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)
    say(f"aws_ork's log ({log_path.name}):")
    text = log_path.read_text()
    sys.stdout.write(text)
    noise = [
        line
        for line in text.splitlines()
        if (("Warning" in line or " WARNING " in line) and not is_key_binding_off_warning(line))
        or "unclosed" in line
        or "Traceback" in line
    ]
    if daemon.returncode != 0 or noise:
        say(f"demo FAILED: aws_ork exited {daemon.returncode}; unexpected lines:")
        print("\n".join(noise))
        return False
    return True


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="aws_ork-demo-"))
    say(f"working in {root}")
    moto = start_moto(root / "moto.log")
    os.environ.update(moto.env())
    master = minion = daemon = None
    minions: list = []
    try:
        say(f"moto server (SQS, S3, EC2) at {moto.url}")
        sqs = boto3.client("sqs", region_name="us-west-2")
        s3 = boto3.client("s3", region_name="us-west-2")
        ec2 = boto3.client("ec2", region_name="us-west-2")
        queue_url = sqs.create_queue(QueueName="SaltMasterTestQueue")["QueueUrl"]
        s3.create_bucket(
            Bucket="aws-ork-demo", CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
        )
        image = ec2.describe_images()["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"
        ]
        say(f"EC2 instance {instance} launched (in moto)")

        master = start_master(root / "salt")
        say(f"salt-master running (config {master.config_file}); no minion yet")
        show_keys(master)

        # secure defaults: signed SNS envelopes only, from our topic, for instances EC2 knows.
        # The demo signs with a key and certificate it makes now and places in CertCacheDir
        # (a certificate in the cache is used without fetching it from AWS).
        cert_dir = root / "certs"
        identity = make_signing_identity(cert_dir)
        conf = write_config(
            root / "aws_ork.conf",
            queue_url=queue_url,
            master=master,
            bucket="aws-ork-demo",
            VerifySignatures="true",
            VerifyInstances="true",
            CertCacheDir=cert_dir,
            AllowedTopicArns=TOPIC,
            KeyBinding="off",  # act 1: pre-authorisation (act 2 binds the key to the instance)
        )
        say(f"starting aws_ork -v -c {conf} (KeyBinding = off: a WARNING at every start)")
        log_path = root / "aws_ork.log"
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(command(conf, "-v"), stdout=log, stderr=subprocess.STDOUT)

        # The real order: Auto Scaling announces the launch while the instance is still booting,
        # tens of seconds before its minion first contacts the master.
        say(
            "Auto Scaling announces the launch (an SNS notification arrives in the queue); "
            "the instance is still booting: its minion has no key yet"
        )
        sqs.send_message(QueueUrl=queue_url, MessageBody=signed(sns_launch(instance), identity))
        stub = master.key_path(instance, "minions_autosign")
        wait_for(
            lambda: (
                stub.exists()
                and f"{instance} " in log_path.read_text()
                and "pre-authorised" in log_path.read_text()
            ),
            60,
            "the pre-authorisation",
        )
        say(
            f"aws_ork pre-authorised {instance}: Salt will accept its key on its first contact "
            f"(autosign stub {stub})"
        )
        print(_lines_about(log_path, instance))

        minion = start_minion(master, root / "minion", instance)
        say(f"the instance's salt-minion (id {instance}) starts and presents its key")
        master.wait_for_key(instance, "minions", timeout=60)
        say(
            "the key was accepted by the salt-master on the minion's first contact "
            f"(the stub is used up: {'still there' if stub.exists() else 'gone'}):"
        )
        show_keys(master)
        master.wait_for_ping(instance, timeout=60)
        say(f"salt {instance} test.ping -> True")

        say("Auto Scaling announces the termination")
        ec2.terminate_instances(InstanceIds=[instance])
        sqs.send_message(QueueUrl=queue_url, MessageBody=signed(sns_terminate(instance), identity))
        wait_for(
            lambda: all(instance not in n for n in master.key_states().values()),
            60,
            "the key deleted",
        )
        say(f"aws_ork removed the key of {instance}:")
        show_keys(master)
        mirrored = wait_for(lambda: _mirror_without(s3, instance), 60, "the mirror to follow")
        say(f"the pki is mirrored to s3://aws-ork-demo/pki/ ({len(mirrored)} objects):")
        print("\n".join(mirrored))
        if not stop_cleanly(daemon, log_path):
            return 1

        # Act 2: key binding by key. An impostor who learns the new instance's id connects
        # first; the instance publishes its whole public key on its own EC2 tags, and aws_ork
        # stores exactly that key as accepted before the instance's minion first knocks.
        bound_conf = write_config(
            root / "aws_ork-bound.conf",
            queue_url=queue_url,
            master=master,
            bucket="aws-ork-demo",
            VerifySignatures="true",
            VerifyInstances="true",
            CertCacheDir=cert_dir,
            AllowedTopicArns=TOPIC,
            KeyBinding="tag",
        )
        say(f"act 2: key binding; restarting aws_ork with KeyBinding = tag ({bound_conf})")
        log_path = root / "aws_ork-bound.log"
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                command(bound_conf, "-v"), stdout=log, stderr=subprocess.STDOUT
            )
        bound = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"
        ]
        sqs.send_message(QueueUrl=queue_url, MessageBody=signed(sns_launch(bound), identity))
        impostor = start_minion(master, root / "impostor", bound, acceptance_wait_time=10)
        minions.append(impostor)
        say(f"an impostor's salt-minion connects first under the id {bound}")
        wait_for(
            lambda: (
                "has not published its key" in log_path.read_text()
                and master.key_path(bound, "minions_pre").is_file()
            ),
            60,
            "the launch to wait for the instance's key tags",
        )
        print(_lines_about(log_path, bound))
        make_minion_keys(root / "genuine" / "pki")
        pub = (root / "genuine" / "pki" / "minion.pub").read_text()
        tags = pubkey.to_tags(pub)
        ec2.create_tags(Resources=[bound], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        say(
            f"instance {bound} made its minion key and published it on its tags "
            f"{', '.join(tags)} (what data/instance/aws_ork-bind-minion.sh does), then starts "
            "its salt-minion with Salt's default acceptance_wait_time (10 s)"
        )
        accepted = master.key_path(bound, "minions")
        genuine = start_minion(
            master,
            root / "genuine",
            bound,
            acceptance_wait_time=10,
            extra_opts={"rejected_retry": True},
        )
        minions.append(genuine)
        wait_for(
            lambda: accepted.is_file() and accepted.read_text().strip() == pub.strip(),
            60,
            "the published key to be accepted",
        )
        print(_lines_about(log_path, bound))
        master.wait_for_ping(bound, timeout=60)
        answer = master.salt_cmd(bound, "config.get", args=["pki_dir"]).get(bound)
        say(
            f"salt {bound} config.get pki_dir -> {answer}: the genuine minion answers, accepted "
            f"at its first contact; the impostor's key was never accepted"
        )
        if not stop_cleanly(daemon, log_path):
            return 1
        say(
            "demo finished: the key was pre-authorised, accepted on first contact and removed "
            "on terminate; under key binding the instance's published key was accepted before "
            "its minion knocked and the impostor refused; aws_ork stopped cleanly both times "
            "(exit 0, no warnings but act 1's KeyBinding = off)"
        )
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        for other in [minion, *minions]:
            if other is not None:
                other.stop()
        if master is not None:
            master.stop()
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
