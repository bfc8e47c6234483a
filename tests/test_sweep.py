"""The reconcile sweep through the moto server (EC2, Auto Scaling) and a real salt-master: it
finds what lost messages would have changed."""

from __future__ import annotations

from tests.daemon import run_aws_ork, start_aws_ork, stop_aws_ork, wait_for
from tests.trustenv import group_instance, plain_instance, trust_config


def test_a_sweep_accepts_a_pending_key_whose_launch_was_lost(master, tmp_path, queue_url,
                                                             cert_dir, fleet):
    lost, stranger = group_instance(fleet), plain_instance(fleet, {"role": "salt-minion"})
    master.add_pending_key(lost)
    master.add_pending_key(stranger)  # in no managed group: not ours to accept
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"],
                        SweepMinutes="60")

    dry = run_aws_ork(conf, "--once", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"sweep: launch {lost} (its launch message was lost): would be accepted" \
        in dry.stderr
    assert master.key_state_of(lost) == "minions_pre"

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert (master.key_state_of(lost), master.key_state_of(stranger)) == \
        ("minions", "minions_pre")
    assert f"sweep: launch {lost} (its launch message was lost): accepted" in result.stderr


def test_a_sweep_deletes_the_key_of_an_instance_terminated_while_the_daemon_was_stopped(
        master, tmp_path, queue_url, cert_dir, fleet):
    gone, alive = group_instance(fleet), group_instance(fleet)
    master.add_accepted_key(gone)
    master.add_accepted_key(alive)
    fleet["ec2"].terminate_instances(InstanceIds=[gone])  # its terminate message was lost
    # a sweep every 3 s: the second in a row deletes (EC2 is eventually consistent)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"],
                        SweepMinutes="0.05")
    log = tmp_path / "aws_ork.log"
    daemon = start_aws_ork(conf, log)
    try:
        wait_for(lambda: "1 gone once" in log.read_text(), 60, "the first sweep")
        assert master.key_state_of(gone) == "minions"  # not on the first sighting
        wait_for(lambda: master.key_state_of(gone) is None, 60, "the key deleted")
    finally:
        stop_aws_ork(daemon)
    text = log.read_text()
    assert f"sweep: terminate {gone} (EC2: terminated on two sweeps in a row): deleted" in text
    assert master.key_state_of(alive) == "minions"


def test_a_sweep_needs_verify_instances(master, tmp_path, queue_url, cert_dir, fleet):
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"],
                        SweepMinutes="60", VerifyInstances="false", AutoScalingGroups="",
                        InstanceTags="")
    result = run_aws_ork(conf, "--once")
    assert result.returncode == 2 and "SweepMinutes: is set but VerifyInstances is off" \
        in result.stderr
