"""The instance side of key binding: data/instance/aws_ork-bind-minion.sh, run as user data
would run it, with the real salt-key and salt-call, and stand-ins for IMDS (curl), the AWS CLI
and the service manager that record what they were asked; then the recorded tags replayed
against the moto server, and (where the AWS CLI is installed) the script's own create-tags
call sent to it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import salt.utils.crypt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aws_ork.base import binding, pubkey

SCRIPT = Path(__file__).parent.parent / "data" / "instance" / "aws_ork-bind-minion.sh"
INSTANCE = "i-0123456789abcdef0"
FINGERPRINT_TAG = "salt:minion-fingerprint"

CURL = """#!/bin/sh
# IMDSv2: a token for the PUT, then the identity documents; no network
case "$*" in
  *"-X PUT"*) echo token-123 ;;
  *instance-id*) echo {instance} ;;
  *placement/region*) echo {region} ;;
  *) exit 22 ;;
esac
"""
RECORD = """#!/bin/sh
[ "$*" = --version ] && { echo "stand-in 1"; exit 0; }  # Salt's grains ask systemctl
echo "$(basename "$0") $*" >> "$CALLS"
"""


def stub(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class Instance:
    """A fake instance's /etc/salt, PATH and the calls its stand-ins record."""

    def __init__(
        self,
        folder: Path,
        minion_config: str = "",
        instance: str = INSTANCE,
        region: str = "eu-west-1",
        record_aws: bool = True,
    ) -> None:
        self.bin, self.etc, self.root = folder / "bin", folder / "etc" / "salt", folder / "root"
        self.bin.mkdir()
        self.etc.mkdir(parents=True)
        self.pki = self.root / "pki" / "minion"
        (self.etc / "minion").write_text(
            f"root_dir: {self.root}\npki_dir: {self.pki}\n"
            f"cachedir: {self.root}/cache\nlog_file: {self.root}/minion.log\n{minion_config}"
        )
        stub(self.bin, "curl", CURL.format(instance=instance, region=region))
        for name in ("aws", "systemctl") if record_aws else ("systemctl",):
            stub(self.bin, name, RECORD)
        self.calls = folder / "calls"
        self.env = {
            **os.environ,
            "CALLS": str(self.calls),
            "SALT_CONFIG_DIR": str(self.etc),
            "PATH": f"{self.bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            f"{os.environ.get('PATH', '')}",
        }

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(SCRIPT)], env=self.env, capture_output=True, text=True, timeout=300
        )

    def recorded(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def pub(self) -> str:
        return (self.pki / "minion.pub").read_text()


def create_tags(line: str) -> tuple[list[str], dict[str, str]]:
    """A recorded ``aws ec2 create-tags`` call: its arguments before --tags, and its tags in
    their order (Key=K,Value=V; the values hold no blank nor comma)."""
    words = line.split(" ")
    at = words.index("--tags")
    published: dict[str, str] = {}
    for word in words[at + 1 :]:
        key, value = word.split(",", 1)
        assert key.startswith("Key=") and value.startswith("Value="), word
        assert key[4:] not in published
        published[key[4:]] = value[6:]
    return words[:at], published


def key_tags_of(published: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in published.items() if k.startswith(pubkey.KEY_TAG_PREFIX)}


def the_one_create_tags(instance: Instance) -> dict[str, str]:
    recorded = instance.recorded()
    aws = [line for line in recorded if line.startswith("aws ")]
    assert len(aws) == 1, recorded  # one call: the fingerprint and the key together
    head, published = create_tags(aws[0])
    assert head == [
        "aws",
        "ec2",
        "create-tags",
        "--region",
        "eu-west-1",
        "--resources",
        INSTANCE,
    ]
    assert recorded.index(aws[0]) < recorded.index("systemctl restart salt-minion")
    return published


def assert_publishes_its_key(instance: Instance, size: int) -> dict[str, str]:
    """The one call carries the fingerprint tag, then exactly the key tags of minion.pub,
    which decode to minion.pub's very text."""
    published = the_one_create_tags(instance)
    pub = instance.pub()
    key = serialization.load_pem_public_key(pub.encode())
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == size
    fingerprint = str(salt.utils.crypt.pem_finger(str(instance.pki / "minion.pub")))
    count = 2 if size == 2048 else 3
    assert list(published) == [FINGERPRINT_TAG] + [
        f"{pubkey.KEY_TAG_PREFIX}{i}" for i in range(count)
    ]
    assert published[FINGERPRINT_TAG] == fingerprint
    assert binding.matches(pub, fingerprint)
    keys = key_tags_of(published)
    assert all(len(v) <= pubkey.TAG_VALUE_MAX for v in keys.values())
    assert keys == pubkey.to_tags(pub)  # cut where aws_ork's own encoder cuts
    stored = pubkey.from_tags(keys)
    assert stored is not None and pubkey.same_key(stored, pub)
    assert stored == pub  # exactly the PEM text salt-key wrote
    return published


def assert_minion_config(instance: Instance) -> None:
    assert (instance.etc / "minion_id").read_text().strip() == INSTANCE
    drop_in = (instance.etc / "minion.d" / "aws_ork.conf").read_text().splitlines()
    assert f"id: {INSTANCE}" in drop_in
    assert "rejected_retry: True" in drop_in
    for config in [instance.etc / "minion", *(instance.etc / "minion.d").iterdir()]:
        assert "acceptance_wait_time" not in config.read_text(), config  # Salt's 10 s default


def test_the_script_publishes_fingerprint_and_key_in_one_call_before_the_minion_starts(tmp_path):
    instance = Instance(tmp_path)

    run = instance.run()

    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(p.name for p in instance.pki.iterdir()) == ["minion.pem", "minion.pub"]
    assert stat.S_IMODE((instance.pki / "minion.pem").stat().st_mode) == 0o600
    published = assert_publishes_its_key(instance, 2048)
    assert instance.recorded()[-1] == "systemctl restart salt-minion"  # after the tags
    assert_minion_config(instance)

    instance.calls.unlink()
    again = instance.run()  # a reboot runs user data again: the key stays, published again
    assert again.returncode == 0, again.stderr
    assert the_one_create_tags(instance) == published


def test_the_minion_configs_keysize_4096_gives_three_key_tags(tmp_path):
    instance = Instance(tmp_path, minion_config="keysize: 4096\n")

    run = instance.run()

    assert run.returncode == 0, run.stdout + run.stderr
    assert len(key_tags_of(assert_publishes_its_key(instance, 4096))) == 3
    assert_minion_config(instance)


def test_a_keysize_aws_ork_does_not_accept_is_refused_before_anything_is_published(tmp_path):
    instance = Instance(tmp_path, minion_config="keysize: 8192\n")

    run = instance.run()

    assert run.returncode == 1
    assert "keysize 8192" in run.stderr
    assert not (instance.pki / "minion.pub").exists()
    assert instance.recorded() == []


def test_a_minion_pub_that_is_not_a_public_key_pem_is_refused(tmp_path):
    """An existing pair whose minion.pub is PKCS#1 ("BEGIN RSA PUBLIC KEY"): its body is not
    the SPKI base64 aws_ork decodes, so nothing is published and the minion is not started."""
    instance = Instance(tmp_path)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    instance.pki.mkdir(parents=True)
    (instance.pki / "minion.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (instance.pki / "minion.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    )

    run = instance.run()

    assert run.returncode == 1, run.stdout + run.stderr
    assert "is not a -----BEGIN PUBLIC KEY----- PEM" in run.stderr
    assert instance.recorded() == []


def test_the_recorded_tags_fit_ec2_and_read_back_as_the_key(tmp_path, ec2):
    """The script's create-tags arguments replayed with boto3 against the moto server, read
    back with DescribeInstances (as aws_ork reads them) and decoded."""
    instance = Instance(tmp_path, minion_config="keysize: 4096\n")
    run = instance.run()
    assert run.returncode == 0, run.stdout + run.stderr
    published = assert_publishes_its_key(instance, 4096)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    target = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    target_id = target["InstanceId"]

    ec2.create_tags(
        Resources=[target_id], Tags=[{"Key": k, "Value": v} for k, v in published.items()]
    )

    assert read_back(ec2, target_id, published) == instance.pub()


def read_back(ec2: Any, instance_id: str, published: dict[str, str]) -> str | None:
    """The instance's tags through DescribeInstances: the published ones exactly, decoded."""
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    tags = {t["Key"]: t["Value"] for t in reservation["Instances"][0].get("Tags", [])}
    assert {k: tags.get(k) for k in published} == published
    return pubkey.from_tags(tags)


@pytest.mark.skipif(shutil.which("aws") is None, reason="no AWS CLI on PATH")
def test_the_script_publishes_through_the_real_aws_cli(tmp_path, ec2, moto):
    """The script's own ``aws ec2 create-tags`` (the real AWS CLI's shorthand syntax, the
    values' "+", "/" and "=" included) sent to the moto server."""
    image = ec2.describe_images()["Images"][0]["ImageId"]
    target = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    instance = Instance(
        tmp_path, instance=target["InstanceId"], region="us-west-2", record_aws=False
    )
    assert shutil.which("aws", path=instance.env["PATH"]) != str(instance.bin / "aws")
    assert instance.env["AWS_ENDPOINT_URL"] == moto.url  # the moto fixture exported it

    run = instance.run()

    assert run.returncode == 0, run.stdout + run.stderr
    pub = instance.pub()
    fingerprint = str(salt.utils.crypt.pem_finger(str(instance.pki / "minion.pub")))
    published = {FINGERPRINT_TAG: fingerprint, **pubkey.to_tags(pub)}
    assert read_back(ec2, target["InstanceId"], published) == pub
