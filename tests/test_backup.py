"""The S3 backup of the pki: incremental, durable, reconciled, encrypted, restorable.

Through the moto server's S3 and a real salt-master. The mirror is run in-process where
S3 requests are counted (a botocore event hook), and as the real daemon (a subprocess)
for outages, SIGKILL and ``--restore``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from aws_ork.config import BucketUrl
from aws_ork.keys.manager import KeyManager
from aws_ork.mirror.bucket import ObjectOptions, S3Tree
from aws_ork.mirror.journal import FILE_NAME as JOURNAL_FILE
from aws_ork.mirror.journal import Journal
from aws_ork.mirror.manifest import FILE_NAME as MANIFEST_FILE
from aws_ork.mirror.planner import S3Mirror
from aws_ork.mirror.worker import MirrorWorker
from tests.daemon import (
    bucket_objects,
    queue_counts,
    run_aws_ork,
    send,
    start_aws_ork,
    stop_aws_ork,
    tree_md5s,
    wait_for,
    write_config,
)
from tests.messages import new_id, sns_launch, sns_terminate
from tests.metricsenv import scrape, try_get
from tests.metricsenv import value as sample
from tests.saltenv import (
    SALT_RELEASE,
    free_port,
    generate_public_key_pem,
    start_master,
    start_minion,
)
from tests.tcpproxy import TcpProxy
from tests.trustenv import LAUNCH, decision_line, group_instance, signed, trust_config

PUB = generate_public_key_pem()  # one key for the many bulk minions (content is irrelevant)


class S3Calls:
    """Every S3 API call of one client: (operation, serialized request), via a botocore
    event hook (``before-call``: once per API call, as sent)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        client.meta.events.register("before-call.s3", self._record)

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.calls.append((model.name, params))

    def ops(self) -> list[str]:
        return [name for name, _ in self.calls]

    def clear(self) -> None:
        self.calls.clear()


def make_worker(
    tmp_path: Path,
    bucket: str,
    pki_root: Path,
    *,
    key_dir: str = "master",
    options: ObjectOptions = ObjectOptions(),
    reconcile_seconds: float = 0,
    **debounce: float,
) -> tuple[MirrorWorker, S3Calls]:
    client = boto3.client("s3", region_name="us-west-2")
    calls = S3Calls(client)
    state = tmp_path / "state"
    tree = S3Tree(client, BucketUrl(bucket, "pki/"), options)
    worker = MirrorWorker(
        S3Mirror(tree, pki_root, state / MANIFEST_FILE),
        Journal(state),
        key_dir=key_dir,
        reconcile_seconds=reconcile_seconds,
        **debounce,
    )
    worker.start()
    return worker, calls


def flushed(worker: MirrorWorker) -> None:
    assert worker.flush(60), "the mirror did not catch up"


# --- incremental: O(1) requests per key change -----------------------------------------------


def test_one_key_change_costs_the_same_with_10_and_1000_keys(master, tmp_path, s3, bucket):
    for _ in range(10):
        master.add_accepted_key(new_id(), PUB)
    worker, calls = make_worker(tmp_path, bucket, master.pki_root)
    keys = KeyManager(master.opts())
    try:
        flushed(worker)  # start-up reconciliation
        assert bucket_objects(s3, bucket) == tree_md5s(master.pki_root)

        def one_accept_and_one_delete() -> tuple[list[str], list[str]]:
            minion = new_id()
            master.add_pending_key(minion, PUB)
            worker.request()  # a key appearing behind our back: local rescan, no listing
            flushed(worker)
            calls.clear()
            assert keys.accept(minion).changed
            worker.request([minion])
            flushed(worker)
            accept_ops = calls.ops()
            assert bucket_objects(s3, bucket) == tree_md5s(master.pki_root)
            assert f"master/minions/{minion}" in bucket_objects(s3, bucket)
            calls.clear()
            assert keys.delete(minion).changed
            worker.request([minion])
            flushed(worker)
            delete_ops = calls.ops()
            assert bucket_objects(s3, bucket) == tree_md5s(master.pki_root)
            assert not any(minion in key for key in bucket_objects(s3, bucket))
            return accept_ops, delete_ops

        small = one_accept_and_one_delete()
        for _ in range(990):
            master.add_accepted_key(new_id(), PUB)
        worker.request()
        flushed(worker)
        assert len(bucket_objects(s3, bucket)) > 1000
        large = one_accept_and_one_delete()

        # one PUT of the accepted key, one batched DELETE of the pending one; then one DELETE
        assert small == large == (["PutObject", "DeleteObjects"], ["DeleteObjects"])
        delete = next(request for name, request in calls.calls if name == "DeleteObjects")
        assert delete["body"].count(b"<Key>") == 1
    finally:
        worker.stop(10)
        master.clear_keys()


def test_a_burst_of_changes_is_mirrored_in_one_run(master, tmp_path, s3, bucket):
    # a quiet time far longer than the gaps between requests, so the count is deterministic
    worker, calls = make_worker(tmp_path, bucket, master.pki_root, debounce=2, debounce_max=60)
    ids = [new_id() for _ in range(40)]
    try:
        flushed(worker)
        calls.clear()
        runs = worker.status().runs
        for minion in ids:  # a scale-out: one request per message batch, in quick succession
            master.add_accepted_key(minion, PUB)
            worker.request([minion])
        wait_for(lambda: not worker.pending, 30, "the burst to be mirrored")
        assert bucket_objects(s3, bucket) == tree_md5s(master.pki_root)
        assert calls.ops().count("PutObject") == len(ids)
        # the 40 requests were coalesced into one run, not mirrored one by one
        assert worker.status().runs == runs + 1
        assert "ListObjectsV2" not in calls.ops()
    finally:
        worker.stop(10)
        master.clear_keys()


def test_reconciliation_repairs_drift_both_ways(master, tmp_path, s3, bucket):
    kept, edited, removed = new_id(), new_id(), new_id()
    for minion in (kept, edited, removed):
        master.add_accepted_key(minion, PUB)
    worker, calls = make_worker(tmp_path, bucket, master.pki_root, reconcile_seconds=1)
    try:
        flushed(worker)  # the start-up reconciliation, which lists the bucket
        calls.clear()  # from here on, a listing can only be a periodic reconciliation
        # out of band: an object appears in the bucket, one disappears, keys change by hand
        s3.put_object(Bucket=bucket, Key="pki/master/minions/i-0000000000000dead", Body=b"x")
        s3.delete_object(Bucket=bucket, Key=f"pki/master/minions/{kept}")
        master.add_accepted_key(edited)  # a new public key for the same id
        master.key_path(removed, "minions").unlink()
        wait_for(
            lambda: bucket_objects(s3, bucket) == tree_md5s(master.pki_root),
            30,
            "the periodic reconciliation to repair the bucket",
        )
        assert "ListObjectsV2" in calls.ops()
    finally:
        worker.stop(10)
        master.clear_keys()


@pytest.mark.parametrize("sse", [None, "aws:kms"])
def test_an_object_overwritten_with_its_metadata_copied_is_uploaded_again_and_counted(
    master, tmp_path, queue_url, s3, bucket, sse
):
    """A bucket writer overwrites a mirrored key keeping its x-amz-meta-md5: the next
    reconciliation must believe S3 (the body's MD5 ETag, or under SSE-KMS the SHA-256
    checksum S3 keeps), not the metadata, upload the local file again, and say so."""
    minion = new_id()
    master.add_accepted_key(minion)
    port = free_port()
    kms = (
        {}
        if sse is None
        else {
            "BucketSSE": sse,
            "BucketKmsKeyId": boto3.client("kms", region_name="us-west-2").create_key()[
                "KeyMetadata"
            ]["Arn"],
        }
    )
    conf = write_config(
        tmp_path / "c.conf",
        queue_url=queue_url,
        master=master,
        bucket=bucket,
        MetricsAddress=f"127.0.0.1:{port}",
        **kms,
    )
    first = run_aws_ork(conf, "--once")
    assert first.returncode == 0, first.stderr
    key = f"pki/master/minions/{minion}"
    assert bucket_objects(s3, bucket) == tree_md5s(master.pki_root)
    head = s3.head_object(Bucket=bucket, Key=key)
    extra = {} if sse is None else {"ServerSideEncryption": sse}
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"-----BEGIN PUBLIC KEY-----\nnot yours\n",
        Metadata=head["Metadata"],
        **extra,
    )
    assert s3.head_object(Bucket=bucket, Key=key)["Metadata"] == head["Metadata"]

    log = tmp_path / "daemon.log"
    proc = start_aws_ork(conf, log)
    try:
        wait_for(
            lambda: "S3 mirror reconciliation" in log.read_text(), 60, "the start-up reconciliation"
        )
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == master.key_path(minion, "minions").read_bytes()  # repaired
        samples = wait_for(lambda: try_get(port, "/healthz") and scrape(port), 30, "/metrics")
        assert sample(samples, "aws_ork_mirror_repaired_total") == 1
    finally:
        assert stop_aws_ork(proc) == 0
    text = log.read_text()
    warnings = [line for line in text.splitlines() if "WARNING" in line and "overwritten" in line]
    assert len(warnings) == 1 and f"'{key}'" in warnings[0], text
    assert "1 repaired" in text

    restored = tmp_path / "restored"
    restore_conf = tmp_path / "r.conf"
    restore_conf.write_text(
        f"[aws_ork]\nBucketUrl = s3://{bucket}/pki/\nPkiDir = {restored}\n"
        f"StateDir = {tmp_path / 'rstate'}\n"
    )
    result = run_aws_ork(restore_conf, "--restore")
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree_md5s(restored) == tree_md5s(master.pki_root)
    master.clear_keys()


# --- encryption, ACL, modes ------------------------------------------------------------------


def test_sse_acl_and_mode_are_sent_with_every_object(tmp_path, s3, bucket, moto):
    root = tmp_path / "pki"
    (root / "master").mkdir(parents=True)
    (root / "master" / "master.pem").write_text("private")
    os.chmod(root / "master" / "master.pem", 0o400)
    kms = boto3.client("kms", region_name="us-west-2")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]

    cases = {
        "aes": (ObjectOptions(sse="AES256"), {"ServerSideEncryption": "AES256"}),
        "kms": (
            ObjectOptions(sse="aws:kms", kms_key_id=key_id),
            {"ServerSideEncryption": "aws:kms"},
        ),
        "noacl": (ObjectOptions(acl=None), {}),
    }
    for name, (options, expected) in cases.items():
        # gone before the worker starts: its start-up reconciliation must upload it (deleted
        # after, the delete could come after that upload, and nothing would be due)
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "pki/master/master.pem"}]})
        worker, calls = make_worker(tmp_path / name, bucket, root, options=options)
        try:
            flushed(worker)
        finally:
            worker.stop(10)
        head = s3.head_object(Bucket=bucket, Key="pki/master/master.pem")
        for field, value in expected.items():
            assert head.get(field) == value, (name, head)
        if name == "kms":
            assert key_id in head.get("SSEKMSKeyId", ""), head
        assert head["Metadata"]["mode"] == "0400"
        put = next(request for op, request in calls.calls if op == "PutObject")
        assert put["headers"].get("x-amz-acl") == options.acl
        if name == "aes":
            assert options.acl == "bucket-owner-full-control"
            assert s3.get_object_acl(Bucket=bucket, Key="pki/master/master.pem")["Grants"]


@pytest.mark.parametrize(
    "option, value",
    [
        ("BucketSSE", "des"),
        ("BucketAcl", "public-read"),
        ("ReconcileMinutes", "-1"),
        ("BucketKmsKeyId", "alias/x"),
    ],
)
def test_bad_backup_options_exit_2_naming_the_option(tmp_path, option, value):
    conf = tmp_path / "c.conf"
    conf.write_text(f"[aws_ork]\nBucketUrl = s3://my-bucket/p/\n{option} = {value}\n")
    result = run_aws_ork(conf, "--check")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and option in result.stderr


# --- durability: journal, outage, SIGKILL ------------------------------------------------------


def test_journal_survives_a_reopen_and_keeps_re_recorded_paths(tmp_path):
    journal = Journal(tmp_path)
    journal.record(["master/minions/a", "master/minions_pre/a"])
    snap = journal.snapshot()
    journal.record(["master/minions/a"])  # changed again while the first sync ran
    journal.done(snap)
    assert journal.snapshot().paths == {"master/minions/a"}
    journal.record(rescan=True)
    journal.close()
    with open(tmp_path / JOURNAL_FILE, "a") as out:
        out.write('{"p": "torn')  # a crash in the middle of an append
    again = Journal(tmp_path)
    assert again.snapshot().paths == {"master/minions/a"} and again.snapshot().rescan
    again.done(again.snapshot())
    again.close()
    assert len(Journal(tmp_path)) == 0


@pytest.fixture
def s3_proxy(moto, monkeypatch) -> Iterator[TcpProxy]:
    """The daemon's S3 goes through a proxy the test can cut; SQS goes to moto directly."""
    target = urlparse(moto.url)
    proxy = TcpProxy(target.hostname, target.port)
    proxy.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    yield proxy
    proxy.stop()


def journal_paths(state: Path) -> set[str]:
    path = state / JOURNAL_FILE
    if not path.exists():
        return set()
    return {json.loads(line).get("p") for line in path.read_text().splitlines() if line}


def test_s3_outage_the_bucket_catches_up_without_redelivery(
    master, bucket_conf, tmp_path, queue_url, sqs, s3, bucket, s3_proxy
):
    launched, terminated = new_id(), new_id()
    master.add_pending_key(launched)
    master.add_accepted_key(terminated)
    log = tmp_path / "daemon.log"
    proc = start_aws_ork(bucket_conf, log)
    try:
        wait_for(lambda: "S3 mirror reconciliation" in log.read_text(), 60, "the first mirror")
        s3_proxy.stop()  # S3 unreachable from here on
        send(sqs, queue_url, sns_launch(launched), sns_terminate(terminated))
        wait_for(
            lambda: (
                master.key_state_of(launched) == "minions"
                and master.key_state_of(terminated) is None
            ),
            60,
            "the key changes",
        )
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 30, "the messages deleted")
        wait_for(lambda: "S3 mirror failed" in log.read_text(), 30, "a failed mirror run")
        assert f"master/minions/{launched}" in journal_paths(tmp_path / "state")
        assert f"master/minions/{launched}" not in bucket_objects(s3, bucket)

        s3_proxy.start()  # S3 is back: no message is sent again
        wait_for(
            lambda: bucket_objects(s3, bucket) == tree_md5s(master.pki_root),
            60,
            "the bucket to catch up",
        )
        wait_for(lambda: "S3 mirror caught up" in log.read_text(), 10, "the catch-up log line")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        master.clear_keys()
    text = log.read_text()
    handled = [
        line
        for line in text.splitlines()
        if "message " in line and (launched in line or terminated in line)
    ]
    assert len(handled) == 2, handled  # each message handled once: nothing was redelivered
    assert "changes waiting" in text  # the log says how far behind the mirror is
    assert proc.returncode == 0
    assert journal_paths(tmp_path / "state") == set()


def test_sigkill_between_key_change_and_upload_next_start_uploads(
    master, bucket_conf, tmp_path, queue_url, sqs, s3, bucket, s3_proxy
):
    """S3 is cut first so the upload cannot happen before the kill: this proves the change
    was recorded before its message was deleted and is replayed from the journal."""
    launched = new_id()
    master.add_pending_key(launched)
    log = tmp_path / "daemon.log"
    proc = start_aws_ork(bucket_conf, log)
    try:
        wait_for(lambda: "S3 mirror reconciliation" in log.read_text(), 60, "the first mirror")
        s3_proxy.stop()
        send(sqs, queue_url, sns_launch(launched))
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 60, "the message deleted")
        assert master.key_state_of(launched) == "minions"
        assert f"master/minions/{launched}" in journal_paths(tmp_path / "state")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"master/minions/{launched}" not in bucket_objects(s3, bucket)
    s3_proxy.start()

    again = run_aws_ork(bucket_conf, "--once")

    assert again.returncode == 0, again.stderr
    assert "replaying" in again.stderr
    mirrored = bucket_objects(s3, bucket)
    assert f"master/minions/{launched}" in mirrored
    assert f"master/minions_pre/{launched}" not in mirrored
    assert mirrored == tree_md5s(master.pki_root)
    assert journal_paths(tmp_path / "state") == set()
    master.clear_keys()


# --- restore -------------------------------------------------------------------------------------


def modes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_restore_brings_back_a_master_whose_minion_still_answers(
    tmp_path, queue_url, sqs, s3, bucket
):
    lost = start_master(tmp_path / "old")
    minion_id = new_id()
    minion = None
    try:
        minion = start_minion(lost, tmp_path / "minion", minion_id)
        lost.wait_for_key(minion_id, "minions_pre", timeout=60)
        conf = write_config(tmp_path / "c.conf", queue_url=queue_url, master=lost, bucket=bucket)
        send(sqs, queue_url, sns_launch(minion_id))
        result = run_aws_ork(conf, "--once")
        assert result.returncode == 0, result.stderr
        assert lost.key_state_of(minion_id) == "minions", result.stderr
        lost.wait_for_ping(minion_id, timeout=60)
        before, before_modes = tree_md5s(lost.pki_root), modes(lost.pki_root)
        assert bucket_objects(s3, bucket) == before

        lost.stop()
        shutil.rmtree(lost.pki_root)  # the master is gone; a replacement has an empty pki

        restored = run_aws_ork(conf, "--restore")

        assert restored.returncode == 0, restored.stderr
        assert f"restored {len(before)} files" in restored.stdout
        assert tree_md5s(lost.pki_root) == before
        assert modes(lost.pki_root) == before_modes
        assert stat.S_IMODE(lost.pki_dir.stat().st_mode) == 0o700
        # Salt 3008 links master.pem to <id>.pem; 3006 and 3007 write the file itself
        assert (lost.pki_dir / "master.pem").is_symlink() == (SALT_RELEASE >= (3008, 0))
        assert all(mode == 0o400 for rel, mode in before_modes.items() if rel.endswith(".pem"))
        lost.start()
        lost.wait_for_ping(minion_id, timeout=90)  # no re-keying, no accept
        states = lost.key_states()
        assert minion_id in states["minions"] and not states["minions_pre"]
    finally:
        if minion is not None:
            minion.stop()
        lost.cleanup()


def test_restore_refuses_a_non_empty_pki_without_force(tmp_path, s3, bucket):
    s3.put_object(Bucket=bucket, Key="pki/master/minions/i-0123456789abcdef0", Body=b"new")
    pki = tmp_path / "pki"
    (pki / "master" / "minions").mkdir(parents=True)
    local = pki / "master" / "minions" / "i-0123456789abcdef0"
    local.write_text("old")
    conf = tmp_path / "c.conf"
    conf.write_text(
        f"[aws_ork]\nBucketUrl = s3://{bucket}/pki/\nPkiDir = {pki}\n"
        f"StateDir = {tmp_path / 'state'}\n"
    )

    refused = run_aws_ork(conf, "--restore")
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "PkiDir" in refused.stderr and "--force" in refused.stderr
    assert local.read_text() == "old"

    forced = run_aws_ork(conf, "--restore", "--force")
    assert forced.returncode == 0, forced.stderr
    assert local.read_text() == "new"
    assert stat.S_IMODE(local.stat().st_mode) == 0o600  # no mode stored: private


def test_restore_refuses_keys_that_would_escape_pki(tmp_path, s3, bucket):
    s3.put_object(Bucket=bucket, Key="pki/../escape", Body=b"x")
    s3.put_object(Bucket=bucket, Key="pki/master/ok.pub", Body=b"y", Metadata={"mode": "0644"})
    conf = tmp_path / "c.conf"
    pki = tmp_path / "pki"
    conf.write_text(f"[aws_ork]\nBucketUrl = s3://{bucket}/pki/\nPkiDir = {pki}\n")
    result = run_aws_ork(conf, "--restore")
    assert result.returncode == 1, result.stderr  # the rest is restored, the refusal counted
    assert (pki / "master" / "ok.pub").read_text() == "y"
    assert stat.S_IMODE((pki / "master" / "ok.pub").stat().st_mode) == 0o644
    assert not (tmp_path / "escape").exists()
    assert "1 objects refused" in result.stdout
    assert "'../escape': not a safe relative path" in result.stderr


def test_restore_leaves_out_autosign_stubs_and_pending_keys(tmp_path, s3, bucket):
    """A restored stub would pre-authorise its id afresh on the new master; a restored
    pending key (a mirror written before 2.1 held them) would look fresh to the freshness
    check however long before its instance it was presented."""
    s3.put_object(Bucket=bucket, Key="pki/master/minions_autosign/i-0123456789abcdef0", Body=b"")
    for state in ("minions_pre", "minions_denied"):
        s3.put_object(
            Bucket=bucket,
            Key=f"pki/master/{state}/i-0aaaaaaaaaaaaaaa1",
            Body=b"k",
            Metadata={"mode": "0644"},
        )
    s3.put_object(
        Bucket=bucket,
        Key="pki/master/minions/i-0fedcba9876543210",
        Body=b"key",
        Metadata={"mode": "0644"},
    )
    pki = tmp_path / "pki"
    conf = tmp_path / "c.conf"
    conf.write_text(f"[aws_ork]\nBucketUrl = s3://{bucket}/pki/\nPkiDir = {pki}\n")
    result = run_aws_ork(conf, "--restore")
    assert result.returncode == 0, result.stderr
    assert (pki / "master" / "minions" / "i-0fedcba9876543210").read_text() == "key"
    assert not (pki / "master" / "minions_autosign" / "i-0123456789abcdef0").exists()
    assert not list(pki.rglob("i-0aaaaaaaaaaaaaaa1"))
    assert "1 autosign stubs not restored" in result.stdout
    assert "2 pending or denied keys not restored" in result.stdout
    assert "restored 1 files" in result.stdout


def test_a_restored_master_remembers_the_finished_envelopes_and_enrolments(
    master, tmp_path, queue_url, sqs, s3, bucket, cert_dir, identity, fleet
):
    """Master A handles a signed launch; master B is restored from A's mirror onto a fresh
    pki and an empty StateDir. The captured envelope replayed to B is refused as a replay,
    and a new launch of the enrolled instance accepts nothing on B either."""
    instance = group_instance(fleet)
    master.add_pending_key(instance)
    captured = signed(identity, LAUNCH, instance, fleet["group"])
    (tmp_path / "a").mkdir()
    conf_a = trust_config(
        tmp_path / "a", queue_url, master, cert_dir, fleet["group"], BucketUrl=f"s3://{bucket}/pki/"
    )
    send(sqs, queue_url, captured)
    first = run_aws_ork(conf_a, "--once")
    assert first.returncode == 0, first.stderr
    assert master.key_state_of(instance) == "minions"
    mirrored = bucket_objects(s3, bucket, memories=True)
    assert {".aws_ork/state/finished-sns-messages", ".aws_ork/state/enrolled-instances"} <= set(
        mirrored
    ), mirrored

    replacement = start_master(tmp_path / "mb")
    try:
        replacement.stop()
        shutil.rmtree(replacement.pki_root)  # a fresh master: nothing of A's on it
        (tmp_path / "b").mkdir()
        conf_b = trust_config(
            tmp_path / "b",
            queue_url,
            replacement,
            cert_dir,
            fleet["group"],
            BucketUrl=f"s3://{bucket}/pki/",
        )
        restored = run_aws_ork(conf_b, "--restore")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "restored 2 replay and enrolment memories" in restored.stdout
        assert not (replacement.pki_root / ".aws_ork").exists()  # nothing of it in PkiDir
        state = tmp_path / "b" / "state"
        assert stat.S_IMODE((state / "enrolled-instances").stat().st_mode) == 0o600
        replacement.start()
        assert replacement.key_state_of(instance) == "minions"

        replacement.salt_key("-y", "-d", instance)  # the key is removed on B...
        replacement.add_pending_key(instance)  # ...and someone presents one under that id
        send(sqs, queue_url, captured)  # the envelope captured from A's topic, sent again
        again = run_aws_ork(conf_b, "--once")
        assert again.returncode == 0, again.stderr
        assert "a replay" in decision_line(again.stderr, instance)
        assert replacement.key_state_of(instance) == "minions_pre"

        send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))  # a new one
        late = run_aws_ork(conf_b, "--once")
        assert late.returncode == 0, late.stderr
        assert "removed by someone else" in decision_line(late.stderr, instance)
        assert replacement.key_state_of(instance) == "minions_pre"  # never accepted again
    finally:
        replacement.cleanup()
        master.clear_keys()
