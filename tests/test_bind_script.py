"""The instance side of key binding: data/instance/aws_ork-bind-minion.sh, run as user data
would run it, with the real salt-key and salt-call, and stand-ins for IMDS (curl), the AWS CLI
and the service manager that record what they were asked."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import salt.utils.crypt

from aws_ork.base import binding

SCRIPT = Path(__file__).parent.parent / "data" / "instance" / "aws_ork-bind-minion.sh"
INSTANCE = "i-0123456789abcdef0"

CURL = f"""#!/bin/sh
# IMDSv2: a token for the PUT, then the identity documents; no network
case "$*" in
  *"-X PUT"*) echo token-123 ;;
  *instance-id*) echo {INSTANCE} ;;
  *placement/region*) echo eu-west-1 ;;
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


def test_the_script_makes_tags_and_starts_the_minion_the_way_key_binding_needs(tmp_path):
    bin_dir, etc = tmp_path / "bin", tmp_path / "etc" / "salt"
    bin_dir.mkdir()
    etc.mkdir(parents=True)
    root = tmp_path / "root"
    (etc / "minion").write_text(
        f"root_dir: {root}\npki_dir: {root}/pki/minion\n"
        f"cachedir: {root}/cache\nlog_file: {root}/minion.log\n"
    )
    stub(bin_dir, "curl", CURL)
    for name in ("aws", "systemctl"):
        stub(bin_dir, name, RECORD)
    calls = tmp_path / "calls"
    env = {
        **os.environ,
        "CALLS": str(calls),
        "SALT_CONFIG_DIR": str(etc),
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
        f"{os.environ.get('PATH', '')}",
    }

    run = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stdout + run.stderr
    pki = root / "pki" / "minion"
    assert sorted(p.name for p in pki.iterdir()) == ["minion.pem", "minion.pub"]
    assert stat.S_IMODE((pki / "minion.pem").stat().st_mode) == 0o600
    published = str(salt.utils.crypt.pem_finger(str(pki / "minion.pub")))
    recorded = calls.read_text().splitlines()
    assert recorded[0] == (
        f"aws ec2 create-tags --region eu-west-1 --resources {INSTANCE} "
        f"--tags Key=salt:minion-fingerprint,Value={published}"
    )
    assert recorded[-1] == "systemctl restart salt-minion"  # after the tag: key bound first
    assert binding.matches((pki / "minion.pub").read_text(), published)
    assert (etc / "minion_id").read_text().strip() == INSTANCE
    drop_in = (etc / "minion.d" / "aws_ork.conf").read_text()
    for line in (
        f"id: {INSTANCE}",
        "acceptance_wait_time: 1",
        "acceptance_wait_time_max: 10",
        "rejected_retry: True",
    ):
        assert line in drop_in.splitlines()

    again = subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300
    )  # a reboot runs user data again: the key stays
    assert again.returncode == 0, again.stderr
    assert str(salt.utils.crypt.pem_finger(str(pki / "minion.pub"))) == published
