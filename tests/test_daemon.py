"""The daemon end to end through its command line: moto server SQS/S3 + a real salt-master."""

from __future__ import annotations

import json
import os
import signal
import uuid

import boto3
import pytest

from aws_ork import __version__
from tests.certproxy import CertProxy
from tests.daemon import (
    accepting_value,
    bucket_objects,
    queue_counts,
    run_aws_ork,
    salt_config,
    send,
    start_aws_ork,
    states,
    stop_aws_ork,
    tree_md5s,
    wait_for,
    write_config,
)
from tests.messages import (
    FIXTURES,
    fixture_text,
    new_id,
    notification,
    sns_launch,
    sns_terminate,
)
from tests.saltenv import free_port

#: the start-up line's beginning
STARTED = f"aws_ork {__version__}: queue"


def test_launch_accepts_exactly_that_pending_key(master, conf, sqs, queue_url):
    mine, other = new_id(), new_id()
    master.add_pending_key(mine)
    master.add_pending_key(other)
    send(sqs, queue_url, sns_launch(mine))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert states(master, mine, other) == {mine: "minions", other: "minions_pre"}
    assert queue_counts(sqs, queue_url) == (0, 0)
    assert f"{mine} " in result.stderr and "accepted" in result.stderr


def test_terminate_deletes_the_key_in_every_state(master, conf, sqs, queue_url):
    accepted, pending, rejected, bystander = new_id(), new_id(), new_id(), new_id()
    master.add_accepted_key(accepted)
    master.add_pending_key(pending)
    master.add_rejected_key(rejected)
    master.add_accepted_key(bystander)
    send(sqs, queue_url, *(sns_terminate(i) for i in (accepted, pending, rejected)))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert states(master, accepted, pending, rejected, bystander) == {
        accepted: None,
        pending: None,
        rejected: None,
        bystander: "minions",
    }
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_terminate_of_an_absent_key_is_done(master, conf, sqs, queue_url):
    send(sqs, queue_url, sns_terminate(new_id()))
    result = run_aws_ork(conf, "--once")
    assert result.returncode == 0, result.stderr
    assert "no key to delete" in result.stderr
    assert queue_counts(sqs, queue_url) == (0, 0)


@pytest.mark.parametrize(
    "hostile", ["*", "i-*", "i-0123456789abcdef?", "../x", "i-123/../../etc", "[a-z]*"]
)
def test_glob_and_path_ids_touch_nothing(master, conf, sqs, queue_url, hostile):
    pending, accepted = new_id(), new_id()
    master.add_pending_key(pending)
    master.add_accepted_key(accepted)
    send(sqs, queue_url, sns_launch(hostile), sns_terminate(hostile))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert states(master, pending, accepted) == {pending: "minions_pre", accepted: "minions"}
    assert result.stderr.count("is not an instance id") == 2
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_launch_before_the_key_pre_authorises_the_minion(master, conf, sqs, queue_url):
    instance = new_id()
    send(sqs, queue_url, sns_launch(instance))

    first = run_aws_ork(conf, "--once")
    assert first.returncode == 0, first.stderr
    assert "pre-authorised (no key yet)" in first.stderr
    # done: Salt accepts the key on the minion's first contact (tests/test_speed.py runs one)
    assert (master.pki_dir / "minions_autosign" / instance).is_file()
    assert states(master, instance) == {instance: None}
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_key_store_error_keeps_the_message_for_a_retry(master, conf, sqs, queue_url, tmp_path):
    instance = new_id()
    master.add_pending_key(instance)
    accepted_dir = master.pki_dir / "minions"
    parked = tmp_path / "minions-parked"
    accepted_dir.rename(parked)
    accepted_dir.write_text("not a directory")  # the key store cannot write accepted keys
    try:
        send(sqs, queue_url, sns_launch(instance))
        broken = run_aws_ork(conf, "--once")
    finally:
        accepted_dir.unlink()
        parked.rename(accepted_dir)
    assert broken.returncode == 0, broken.stderr
    assert "key store error" in broken.stderr
    assert sum(queue_counts(sqs, queue_url)) == 1  # not deleted

    wait_for(lambda: queue_counts(sqs, queue_url)[0] == 1, 30, "the message to come back")
    fixed = run_aws_ork(conf, "--once")
    assert fixed.returncode == 0, fixed.stderr
    assert states(master, instance) == {instance: "minions"}
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_every_fixture_and_hostile_body_is_survived(master, conf, sqs, queue_url):
    launched, terminated = new_id(), new_id()
    master.add_pending_key(launched)
    master.add_accepted_key(terminated)
    hostile = [
        "not json",
        "[1, 2]",
        "42",
        '"text"',
        "null",
        "{}",
        json.dumps({"Type": "Notification", "TopicArn": "x", "Message": "{nope"}),
        json.dumps({"Type": "Notification", "TopicArn": "x", "Message": {"a": 1}}),
        json.dumps({"Event": ["autoscaling:EC2_INSTANCE_LAUNCH"]}),
        json.dumps({"Event": "autoscaling:EC2_INSTANCE_LAUNCH", "EC2InstanceId": 7}),
        "x" * (256 * 1024 - 10),
    ]
    fixtures = [fixture_text(p.stem) for p in sorted(FIXTURES.glob("*.json"))]
    send(sqs, queue_url, *hostile, *fixtures, sns_launch(launched), sns_terminate(terminated))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert states(master, launched, terminated) == {launched: "minions", terminated: None}
    # the fixtures' launches are for instances whose minion has not shown up: they are
    # pre-authorised (an autosign stub each); every message is finished and deleted
    assert sum(queue_counts(sqs, queue_url)) == 0
    assert result.stderr.count("pre-authorised (no key yet)") >= 1
    assert result.stderr.count("ignored, deleted") >= len(hostile)


def test_delete_unknown_off_leaves_unknown_messages(master, tmp_path, queue_url, sqs):
    conf = write_config(
        tmp_path / "c.conf", queue_url=queue_url, master=master, DeleteUnknownMessages="no"
    )
    send(sqs, queue_url, "not json", fixture_text("sns-asg-test-notification"))
    result = run_aws_ork(conf, "--once")
    assert result.returncode == 0, result.stderr
    assert "left in queue" in result.stderr
    assert sum(queue_counts(sqs, queue_url)) == 1  # the unknown one stays, the test one went


def test_dry_run_changes_nothing(master, bucket_conf, queue_url, sqs, s3, bucket):
    pending, accepted = new_id(), new_id()
    master.add_pending_key(pending)
    master.add_accepted_key(accepted)
    send(sqs, queue_url, sns_launch(pending), sns_terminate(accepted))

    result = run_aws_ork(bucket_conf, "--once", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "would be accepted" in result.stderr and "would be deleted" in result.stderr
    assert states(master, pending, accepted) == {pending: "minions_pre", accepted: "minions"}
    assert sum(queue_counts(sqs, queue_url)) == 2
    assert bucket_objects(s3, bucket) == {}


def test_purge_drops_the_backlog_before_handling(master, conf, sqs, queue_url):
    pending = new_id()
    master.add_pending_key(pending)
    send(sqs, queue_url, *(sns_launch(pending) for _ in range(5)))

    result = run_aws_ork(conf, "--purge", "--once")

    assert result.returncode == 0, result.stderr
    assert "queue purged" in result.stderr
    assert states(master, pending) == {pending: "minions_pre"}
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_s3_mirror_follows_every_change(master, bucket_conf, queue_url, sqs, s3, bucket):
    instance = new_id()
    master.add_pending_key(instance)
    # what a mirror written by 2.0 also held: a pending key, an autosign stub
    old = new_id()
    for state in ("minions_pre", "minions_autosign"):
        s3.put_object(Bucket=bucket, Key=f"pki/master/{state}/{old}", Body=b"old")

    assert run_aws_ork(bucket_conf, "--once").returncode == 0
    mirrored = bucket_objects(s3, bucket)
    assert mirrored == tree_md5s(master.pki_root)
    assert "master/master.pem" in mirrored  # the master's keys
    # a pending key is left out (anyone reaching the master's port can make one), and the
    # transient objects of an older mirror are deleted
    assert not any(instance in key or old in key for key in mirrored)

    send(sqs, queue_url, sns_launch(instance))
    assert run_aws_ork(bucket_conf, "--once").returncode == 0
    mirrored = bucket_objects(s3, bucket)
    assert mirrored == tree_md5s(master.pki_root)
    assert f"master/minions/{instance}" in mirrored
    assert f"master/minions_pre/{instance}" not in mirrored

    send(sqs, queue_url, sns_terminate(instance))
    assert run_aws_ork(bucket_conf, "--once").returncode == 0
    mirrored = bucket_objects(s3, bucket)
    assert mirrored == tree_md5s(master.pki_root)
    assert not any(instance in key for key in mirrored)


def test_s3_outage_never_holds_up_keys_and_the_mirror_catches_up(
    master, bucket_conf, queue_url, sqs, s3, bucket
):
    instance = new_id()
    master.add_pending_key(instance)
    send(sqs, queue_url, sns_launch(instance))
    closed = f"http://127.0.0.1:{free_port()}"

    outage = run_aws_ork(bucket_conf, "--once", env={"AWS_ENDPOINT_URL_S3": closed})

    assert states(master, instance) == {instance: "minions"}  # keys did not wait for S3
    assert queue_counts(sqs, queue_url) == (0, 0)
    assert "S3 mirror failed" in outage.stderr
    assert outage.returncode == 1  # the mirror is behind: never reported as done
    assert f"master/minions/{instance}" not in bucket_objects(s3, bucket)

    recovered = run_aws_ork(bucket_conf, "--once")
    assert recovered.returncode == 0, recovered.stderr
    assert bucket_objects(s3, bucket) == tree_md5s(master.pki_root)


def test_sigterm_cuts_the_long_poll_short(master, conf, tmp_path, sqs, queue_url):
    log = tmp_path / "daemon.log"
    proc = start_aws_ork(conf, log, "-v")
    try:
        wait_for(lambda: STARTED in log.read_text(), 60, "the daemon to start")
        wait_for(lambda: "long poll" in log.read_text(), 30, "the first long poll")
        proc.send_signal(signal.SIGTERM)
        # the long poll waits 20 s; a clean stop returns well before it would have ended
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopping (SIGTERM)" in log.read_text()
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_daemon_mode_writes_its_pid_file_and_log_and_stops_on_sigterm(
    master, tmp_path, queue_url, sqs
):
    pid_file, log_file = tmp_path / "run" / "aws_ork.pid", tmp_path / "log" / "aws_ork.log"
    (tmp_path / "run").mkdir()
    conf = write_config(
        tmp_path / "c.conf", queue_url=queue_url, master=master, PidFile=pid_file, LogFile=log_file
    )
    instance = new_id()
    master.add_pending_key(instance)

    parent = run_aws_ork(conf, "-d", timeout=60)

    assert parent.returncode == 0, parent.stderr
    pid = int(
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "the pid file")
    )
    try:
        wait_for(
            lambda: log_file.exists() and STARTED in log_file.read_text(),
            30,
            "the start line in LogFile",
        )
        send(sqs, queue_url, sns_launch(instance))
        wait_for(
            lambda: states(master, instance)[instance] == "minions",
            30,
            "the detached daemon to accept the key",
        )
        again = run_aws_ork(conf, "-d", timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid), 30, "the daemon to exit")
    assert not pid_file.exists()
    assert "stopping (SIGTERM)" in log_file.read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_check_reports_each_part_and_fails_on_a_missing_bucket(master, tmp_path, queue_url, bucket):
    good = write_config(tmp_path / "good.conf", queue_url=queue_url, master=master, bucket=bucket)
    ok = run_aws_ork(good, "--check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    # the test config turns both trust checks off: each is an explicit unsafe choice; the
    # fixtures' queue has no dead-letter queue and their bucket is not locked down
    # (tests/test_preflight.py has a setup without any warning)
    assert [line for line in lines if line.startswith("WARN")][:2] == [
        "WARN VerifySignatures is off: any message in the queue is believed",
        "WARN VerifyInstances is off: launches and terminates are not checked against EC2 "
        "(a terminate deletes a key on the message's word)",
    ]
    assert {line.split()[0] for line in lines} == {"ok", "WARN"}
    assert any(line.startswith("ok   queue") for line in lines)
    assert any(line.startswith("ok   bucket") for line in lines)
    assert any(line.startswith("ok   salt pki") for line in lines)

    bad = write_config(
        tmp_path / "bad.conf", queue_url=queue_url, master=master, bucket="no-such-bucket-here"
    )
    failed = run_aws_ork(bad, "--check")
    assert failed.returncode == 1
    assert any(line.startswith("FAIL bucket") for line in failed.stdout.splitlines())


def test_a_second_daemon_on_the_same_state_dir_does_not_start(conf, tmp_path):
    """StateDir (replay memories, mirror journal and manifest, minion ids) is one daemon's
    own: a second aws_ork pointed at it exits 1 naming the first one's pid; a dry run, which
    writes nothing there, still runs; once the first has stopped the next one starts."""
    log = tmp_path / "first.log"
    first = start_aws_ork(conf, log, "-v")
    try:
        wait_for(lambda: "long poll" in log.read_text(), 60, "the first daemon's long poll")
        second = run_aws_ork(conf, "--once")
        assert second.returncode == 1, second.stderr
        assert f"is in use by another aws_ork (pid {first.pid})" in second.stderr
        dry = run_aws_ork(conf, "--once", "--dry-run")
        assert dry.returncode == 0, dry.stderr
    finally:
        assert stop_aws_ork(first) == 0
    after = run_aws_ork(conf, "--once")
    assert after.returncode == 0, after.stderr


def _warnings(text: str, about: str) -> list[str]:
    return [line for line in text.splitlines() if "WARNING" in line and about in line]


@pytest.mark.parametrize(
    "option", ["auto_accept", "open_mode", "autosign_file", "autosign_grains_dir"]
)
def test_a_master_that_accepts_keys_by_itself_is_warned_about_at_start(
    master, tmp_path, queue_url, sqs, option
):
    """Salt accepts those keys before aws_ork sees them: the operator chose it, so the
    daemon runs, and says at every start which option makes its checks moot."""
    config = salt_config(tmp_path, master, {option: accepting_value(tmp_path, option)})
    conf = write_config(
        tmp_path / "c.conf", queue_url=queue_url, master=master, SaltMasterConfig=config
    )
    instance = new_id()
    master.add_pending_key(instance)
    send(sqs, queue_url, sns_launch(instance))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    [warning] = _warnings(result.stderr, "salt master")
    assert f"salt master {option} is " in warning, warning
    assert "aws_ork's checks decide nothing for those keys" in warning
    assert states(master, instance) == {instance: "minions"}  # and it still does its work


def test_a_master_option_included_before_a_reload_is_warned_about(master, tmp_path, queue_url):
    config = salt_config(tmp_path, master, {})
    conf = write_config(
        tmp_path / "c.conf", queue_url=queue_url, master=master, SaltMasterConfig=config
    )
    log = tmp_path / "daemon.log"
    proc = start_aws_ork(conf, log)
    try:
        wait_for(lambda: STARTED in log.read_text(), 60, "the daemon to start")
        assert _warnings(log.read_text(), "salt master") == []
        grains = tmp_path / "autosign_grains"
        (config.parent / "master.d" / "autosign.conf").write_text(
            json.dumps({"autosign_grains_dir": str(grains)})
        )
        proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "reloaded the Salt master config" in log.read_text(),
            60,
            "the reload (between two long polls)",
        )
    finally:
        assert stop_aws_ork(proc) == 0
    [warning] = _warnings(log.read_text(), "salt master")
    assert f"salt master autosign_grains_dir is {grains}: " in warning, warning


def test_a_metrics_address_off_loopback_is_warned_about_at_start(master, tmp_path, queue_url):
    conf = write_config(
        tmp_path / "c.conf",
        queue_url=queue_url,
        master=master,
        MetricsAddress=f"0.0.0.0:{free_port()}",
    )
    result = run_aws_ork(conf, "--once")  # --once serves no metrics: nothing is exposed
    assert result.returncode == 0, result.stderr
    [warning] = _warnings(result.stderr, "MetricsAddress")
    assert "is not a loopback address" in warning, warning


def test_the_cert_cache_aws_ork_makes_passes_its_own_check_at_the_next_start(
    master, tmp_path, sqs, queue_url, moto
):
    """The default CertCacheDir (StateDir/certs), made by aws_ork when it caches the first
    certificate it fetched, is one the next start and --check accept."""
    proxy = CertProxy(tmp_path / "cert-proxy", moto.url)
    proxy.start()
    try:
        sns = boto3.client("sns", region_name="us-west-2")
        topic = sns.create_topic(Name=f"aws-ork-certs-{uuid.uuid4().hex[:8]}")["TopicArn"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        instance = new_id()
        master.add_pending_key(instance)
        sns.publish(
            TopicArn=topic,
            Message=json.dumps(notification("autoscaling:EC2_INSTANCE_LAUNCH", instance)),
        )
        state = tmp_path / "new" / "state"  # nothing there yet: aws_ork makes it all
        conf = write_config(
            tmp_path / "c.conf",
            queue_url=queue_url,
            master=master,
            StateDir=state,
            VerifySignatures="true",
            AllowedTopicArns=topic,
        )

        first = run_aws_ork(conf, "--once", env=proxy.env())
        assert first.returncode == 0, first.stderr
        assert states(master, instance) == {instance: "minions"}
        assert len(proxy.fetched) == 1 and list((state / "certs").rglob("*.pem"))

        checked = run_aws_ork(conf, "--check", env=proxy.env())
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"ok   CertCacheDir {state / 'certs'}" in checked.stdout.splitlines()
        again = run_aws_ork(conf, "--once", env=proxy.env())
        assert again.returncode == 0, again.stderr
    finally:
        proxy.stop()
