"""Key binding by key, the looking side: what the EC2 check makes of the key tags, the key
tag watcher (one batched DescribeInstances per look for every waiting launch, against the
moto server), and the accepted-keys index (one key, one minion)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import salt.utils.crypt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aws_ork.base import pubkey
from aws_ork.base.saltkeys import KeyLocation
from aws_ork.checks.ec2 import Ec2Lookup, Instance, InstanceCheck
from aws_ork.checks.keytags import KeyTagWatcher
from aws_ork.checks.verdict import Verdict
from aws_ork.keys.index import AcceptedKeys

ID = "i-0a1b2c3d4e5f60718"
TAG = "salt:minion-fingerprint"
NO_KEYS = KeyLocation(Path("/nonexistent/aws-ork-test-pki"))


def new_pem(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


PEM = new_pem()
OTHER_PEM = new_pem()


def finger(pem: str) -> str:
    return str(salt.utils.crypt.pem_finger(key=pem.strip().encode()))


def judge(tags: dict[str, str]) -> Verdict:
    check = InstanceCheck(Ec2Lookup(None), NO_KEYS, binding_tag=TAG)
    instance = Instance(ID, "running", datetime(2026, 1, 1, tzinfo=UTC), tags)
    return check.judge_launch(ID, instance)


# --- the EC2 check --------------------------------------------------------------------------


def test_the_key_tags_are_the_key_the_key_stage_stores():
    verdict = judge(pubkey.to_tags(PEM))
    assert verdict.ok and verdict.published == PEM
    assert verdict.fingerprint == finger(PEM)  # what salt-key -f prints once it is stored


def test_the_key_tags_win_over_a_matching_fingerprint_tag_and_a_mismatch_is_refused():
    both = {**pubkey.to_tags(PEM), TAG: finger(PEM)}
    assert judge(both).published == PEM
    mismatch = judge({**pubkey.to_tags(PEM), TAG: finger(OTHER_PEM)})
    assert not mismatch.ok and not mismatch.retry and mismatch.code == "binding"
    assert "not the fingerprint of the key the key tags hold" in mismatch.reason


def test_key_tags_that_hold_no_key_are_refused_for_good():
    verdict = judge({"salt:minion-key-0": "AAAA", TAG: finger(PEM)})
    assert not verdict.ok and not verdict.retry and verdict.code == "binding"
    assert verdict.reason.startswith("the key tags (salt:minion-key-0...) hold no minion key: ")


def test_only_a_fingerprint_keeps_todays_binding_and_nothing_is_deferred():
    verdict = judge({TAG: finger(PEM)})
    assert verdict.ok and verdict.published is None and verdict.fingerprint == finger(PEM)
    waiting = judge({})
    assert waiting.retry and waiting.code == "binding"
    assert "has not published its key (tags salt:minion-key-0...)" in waiting.reason


# --- the key tag watcher ---------------------------------------------------------------------


class Recorder:
    """What the watcher asked EC2, and what it handed on."""

    def __init__(self, found: dict[str, Any], fail: bool = False) -> None:
        self.found = found
        self.fail = fail
        self.calls: list[list[str]] = []
        self.published: list[str] = []

    def lookup(self, ids: Collection[str]) -> dict[str, Any]:
        self.calls.append(sorted(ids))
        if self.fail:
            raise OSError("throttled")
        return {i: self.found[i] for i in ids if i in self.found}

    def on_published(self, instance_id: str, verdict: Verdict) -> bool:
        self.published.append(instance_id)
        return True


def watcher_for(recorder: Recorder, clock: list[float] | None = None) -> KeyTagWatcher:
    now = clock or [0.0]
    watcher = KeyTagWatcher(
        recorder.lookup,
        lambda instance_id, tags: judge(tags),
        wait_seconds=480,
        clock=lambda: now[0],
    )
    watcher._on_published = recorder.on_published  # the thread is not started: look() by hand
    return watcher


def test_one_call_looks_for_every_waiting_launch_and_each_is_handled_once():
    ids = [f"i-0000000000000000{n}" for n in range(3)]
    recorder = Recorder({ids[0]: pubkey.to_tags(PEM), ids[1]: {}, ids[2]: {TAG: "nonsense"}})
    watcher = watcher_for(recorder)
    for instance_id in ids:
        watcher.watch(instance_id)
    watcher.look(sorted(watcher.waiting()))
    assert recorder.calls == [sorted(ids)]  # one DescribeInstances for all three
    assert recorder.published == [ids[0]]
    assert watcher.waiting() == {ids[1]}  # published: handed on; refused: dropped


def test_a_failing_ec2_keeps_every_launch_waiting():
    recorder = Recorder({}, fail=True)
    watcher = watcher_for(recorder)
    watcher.watch(ID)
    watcher.look([ID])
    assert watcher.waiting() == {ID} and not recorder.published


def test_the_watcher_thread_finds_tags_published_later_and_stops_at_its_bound():
    recorder = Recorder({ID: {}})
    watcher = KeyTagWatcher(recorder.lookup, lambda i, tags: judge(tags), interval=0.05)
    watcher.start(recorder.on_published)
    try:
        watcher.watch(ID)
        wait(lambda: len(recorder.calls) >= 2, "the watcher to look twice")
        assert not recorder.published
        recorder.found[ID] = pubkey.to_tags(PEM)
        wait(lambda: recorder.published == [ID], "the published key to be handed on")
        wait(lambda: not watcher.waiting(), "the launch to be dropped")
        calls = len(recorder.calls)
        watcher.wait_seconds = 0  # its bound passes at once: dropped, at most one look
        watcher.watch("i-0fedcba9876543210")
        wait(lambda: not watcher.waiting(), "the bound to drop it")
        assert len(recorder.calls) <= calls + 1
    finally:
        watcher.stop()


def wait(condition: Any, what: str, seconds: float = 10) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_the_watcher_asks_the_moto_server_for_the_tags(moto, ec2):
    """Through the real HTTP endpoint: Ec2Lookup.get_many is the watcher's one call."""
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    instance_id = instance["InstanceId"]
    ec2.create_tags(
        Resources=[instance_id],
        Tags=[{"Key": k, "Value": v} for k, v in pubkey.to_tags(PEM).items()],
    )
    check = InstanceCheck(Ec2Lookup(ec2), NO_KEYS, binding_tag=TAG)
    handed: list[Verdict] = []
    watcher = KeyTagWatcher(check.lookup.get_many, check.judge_launch)
    watcher._on_published = lambda i, verdict: handed.append(verdict) or True
    watcher.watch(instance_id)
    watcher.look([instance_id])
    assert [v.published for v in handed] == [PEM]
    assert not watcher.waiting()


# --- the accepted-keys index -----------------------------------------------------------------


def test_one_key_is_found_under_another_id_and_a_stale_entry_is_not_believed():
    store = {"web-1": PEM}
    reads: list[int] = []
    now = [0.0]

    def listing() -> list[tuple[str, str]]:
        reads.append(1)
        return list(store.items())

    index = AcceptedKeys(listing, store.get, max_age=60, clock=lambda: now[0])
    assert index.owner(PEM, other_than="web-2") == "web-1"
    assert index.owner(PEM, other_than="web-1") is None  # its own id
    del store["web-1"]  # deleted by hand: the hit is checked against the store
    assert index.owner(PEM, other_than="web-2") is None
    store["web-3"] = OTHER_PEM  # accepted by someone else: found at the next re-read
    assert index.owner(OTHER_PEM, other_than="web-2") is None and len(reads) == 1
    now[0] = 61
    assert index.owner(OTHER_PEM, other_than="web-2") == "web-3" and len(reads) == 2
    index.add("web-4", PEM)  # the key stage's own accept: known at once
    store["web-4"] = PEM
    assert index.owner(PEM, other_than="web-2") == "web-4" and len(reads) == 2


@pytest.mark.parametrize("bits", [2048, 4096])
def test_the_key_is_the_same_whatever_its_whitespace(bits):
    pem = new_pem(bits)
    index = AcceptedKeys(lambda: [("web-1", pem.replace("\n", "\r\n"))], lambda _i: pem.strip())
    assert index.owner(pem, other_than="web-2") == "web-1"
