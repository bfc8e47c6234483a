"""Issue 4 (speed): pre-authorisation through Salt's autosign stubs, constant work per message
(no listing of every key), and an idle daemon that only long-polls.

Real parts throughout: moto server over HTTP, a real salt-master (and a real salt-minion for
the end-to-end pre-authorisation). Costs are checked by counting calls, never by timing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from aws_ork.keys.manager import KeyManager, load_master_opts
from aws_ork.keys.result import Outcome
from tests.countproxy import CountingProxy
from tests.daemon import (
    bucket_objects,
    queue_counts,
    run_aws_ork,
    send,
    start_aws_ork,
    wait_for,
)
from tests.messages import new_id, sns_launch, sns_terminate
from tests.saltenv import SaltMaster, generate_public_key_pem, start_minion


def stub(master: SaltMaster, minion_id: str) -> Path:
    return master.pki_dir / "minions_autosign" / minion_id


# ------------------------------------------------------------------ pre-authorisation


def test_launch_first_then_minion_is_accepted_on_first_contact_and_mirrored(
    master, bucket_conf, tmp_path, queue_url, sqs, s3, bucket
):
    """The usual order in production: the launch event, then (seconds later) the minion."""
    instance = new_id()
    log = tmp_path / "daemon.log"
    daemon = start_aws_ork(bucket_conf, log)
    minion = None
    try:
        send(sqs, queue_url, sns_launch(instance))
        wait_for(lambda: stub(master, instance).is_file(), 60, "the autosign stub")
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 30, "the launch to be done")
        assert master.key_state_of(instance) is None  # nothing to accept yet

        minion = start_minion(master, tmp_path / "minion", instance)
        # accepted by Salt on the minion's first authentication: no message, no retry
        wait_for(lambda: master.key_state_of(instance) == "minions", 30, "Salt to accept the key")
        assert not stub(master, instance).exists(), "Salt consumed the stub"
        master.wait_for_ping(instance, timeout=60)
        # aws_ork did not accept this key, yet the S3 mirror follows it (key directory watch)
        wait_for(
            lambda: f"master/minions/{instance}" in bucket_objects(s3, bucket),
            60,
            "the Salt-accepted key in the S3 mirror",
        )
    finally:
        if minion is not None:
            minion.stop()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    text = log.read_text()
    assert "pre-authorised (no key yet)" in text
    assert "Traceback" not in text


def test_a_pending_key_is_accepted_at_once_without_a_stub(master, conf, sqs, queue_url):
    instance = new_id()
    master.add_pending_key(instance)
    send(sqs, queue_url, sns_launch(instance))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions"
    assert not stub(master, instance).exists()
    assert queue_counts(sqs, queue_url) == (0, 0)


@pytest.mark.parametrize("existing", ["accepted", "rejected"])
def test_no_stub_when_a_key_of_that_id_exists(master, conf, sqs, queue_url, existing):
    instance = new_id()
    getattr(master, f"add_{existing}_key")(instance)
    send(sqs, queue_url, sns_launch(instance))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert not stub(master, instance).exists()
    assert (
        master.key_state_of(instance)
        == {"accepted": "minions", "rejected": "minions_rejected"}[existing]
    )


def test_terminate_withdraws_the_pre_authorisation(master, conf, sqs, queue_url):
    instance, other = new_id(), new_id()
    send(sqs, queue_url, sns_launch(instance), sns_launch(other))
    assert run_aws_ork(conf, "--once").returncode == 0
    assert stub(master, instance).is_file() and stub(master, other).is_file()

    send(sqs, queue_url, sns_terminate(instance))
    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert "withdrawn from pre-authorisation" in result.stderr
    assert not stub(master, instance).exists()
    assert stub(master, other).is_file(), "only that instance's stub is removed"
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_dry_run_writes_and_removes_no_stub(master, conf, sqs, queue_url):
    fresh, preauthorised = new_id(), new_id()
    stub(master, preauthorised).touch()
    send(sqs, queue_url, sns_launch(fresh), sns_terminate(preauthorised))

    result = run_aws_ork(conf, "--once", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "would be pre-authorised" in result.stderr
    assert not stub(master, fresh).exists()
    assert stub(master, preauthorised).is_file()


# ------------------------------------------------------------- constant work per key


@pytest.fixture
def crowded(master):
    """1,000 other keys on the master (one valid public key shared: the content is not read)."""
    pub = generate_public_key_pem()
    made = []
    for index in range(1000):
        name = f"i-{index:017x}"
        (master.pki_dir / ("minions" if index % 2 else "minions_pre") / name).write_text(pub)
        made.append(name)
    yield made
    for name in made:
        for d in ("minions", "minions_pre"):
            (master.pki_dir / d / name).unlink(missing_ok=True)


def test_key_changes_never_list_the_keys(master, crowded, monkeypatch, tmp_path):
    """With 1,000 other keys present, accept/delete/pre-authorise/withdraw touch only their
    own key: listing every key (salt.key or its cache, or a directory of the pki or the
    minion cache) raises, so the work per message cannot depend on the number of keys."""
    import salt.cache
    import salt.key
    import salt.utils.event

    opts = load_master_opts(master.config_file)
    opts["cachedir"] = str(tmp_path / "cache")  # our own: the running master never rotates it
    data = salt.cache.factory(opts)
    pending, accepted, fresh, preauthorised = new_id(), new_id(), new_id(), new_id()
    master.add_pending_key(pending)
    master.add_accepted_key(accepted)
    stub(master, preauthorised).touch()
    for minion in (accepted, crowded[1]):
        data.store("grains", minion, {"id": minion})
        data.store("pillar", minion, {"role": "web"})
    listener = salt.utils.event.get_event("master", opts["sock_dir"], opts=opts, listen=True)

    def forbidden(*_args, **_kwargs):
        raise AssertionError("listed every key")

    for name in ("list_keys", "dict_match", "glob_match", "all_keys", "check_minion_cache"):
        monkeypatch.setattr(salt.key.Key, name, forbidden)
    monkeypatch.setattr(salt.cache.Cache, "list", forbidden)
    monkeypatch.setattr(salt.cache.Cache, "list_all", forbidden, raising=False)
    watched = (str(master.pki_dir), opts["cachedir"])
    for fn in ("listdir", "scandir", "walk"):
        real = getattr(os, fn)

        def guarded(path=".", *args, _real=real, **kwargs):
            if str(path).startswith(watched):
                raise AssertionError(f"listed {path}")
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, fn, guarded)

    keys = KeyManager(opts)
    assert keys.accept(pending).outcome is Outcome.ACCEPTED
    assert keys.accept(fresh).outcome is Outcome.PREAUTHORISED
    assert keys.delete(accepted).outcome is Outcome.DELETED
    assert keys.delete(preauthorised).outcome is Outcome.PREAUTH_WITHDRAWN
    monkeypatch.undo()

    listing = master.key_states()
    assert pending in listing["minions"]
    assert accepted not in sum(listing.values(), [])
    assert len(listing["minions"]) + len(listing["minions_pre"]) >= 1000  # bystanders stay
    assert stub(master, fresh).is_file() and not stub(master, preauthorised).exists()
    # Salt's semantics after a delete: that minion's grains/pillar cache is gone, others stay,
    # and the AES key rotation is requested so the deleted minion cannot read publications
    assert data.fetch("grains", accepted) == {} and data.fetch("pillar", accepted) == {}
    assert data.fetch("grains", crowded[1]) == {"id": crowded[1]}
    assert (tmp_path / "cache" / ".dfn").is_file()
    # reactors see the same salt/key events salt-key would fire
    seen = set()
    for _ in range(20):
        event = listener.get_event(wait=5, tag="salt/key", full=True)
        if event is None:
            break
        seen.add((event["data"]["act"], event["data"]["id"]))
        if {("accept", pending), ("delete", accepted)} <= seen:
            break
    listener.destroy()
    assert {("accept", pending), ("delete", accepted)} <= seen


# ---------------------------------------------------------------------------- idle


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_daemon_only_long_polls(master, bucket_conf, tmp_path, moto, monkeypatch):
    """An empty queue costs one ReceiveMessage (20 s long poll) per cycle and nothing else:
    no other SQS or S3 request, no busy loop; a SIGHUP reload costs no request either."""
    proxy = CountingProxy(moto.url).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    log = tmp_path / "daemon.log"
    daemon = start_aws_ork(bucket_conf, log, "-v")
    try:
        # the start-up reconcile of the mirror is by design; idle starts once it is over
        wait_for(
            lambda: "S3 mirror reconciliation" in log.read_text(), 60, "the start-up mirror run"
        )
        wait_for(lambda: _receives(proxy), 60, "the first long poll")
        idle_from = max(r.ended or float("inf") for r in proxy.snapshot() if _is_s3(r))
        cpu_before = _cpu_seconds(daemon.pid)
        daemon.send_signal(signal.SIGHUP)  # reloads between two polls
        poll = wait_for(
            lambda: [r for r in _receives(proxy) if r.started > idle_from],
            60,
            "a long poll that starts while idle",
        )[0]
        cpu_used = _cpu_seconds(daemon.pid) - cpu_before
        requests = proxy.snapshot()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        proxy.stop()
    idle = [r for r in requests if idle_from < r.started <= poll.started]
    assert [r.operation for r in idle] == ["ReceiveMessage"], idle
    before = [r for r in requests if r.started < poll.started and r.operation == "ReceiveMessage"][
        -1
    ]
    assert before.ended is not None and before.ended <= poll.started, "one poll at a time"
    assert all(r.params.get("WaitTimeSeconds") == 20 for r in (before, poll))
    assert "reloaded the Salt master config" in log.read_text()
    # a busy loop would burn about one CPU second per second of the 20 s poll
    assert cpu_used < 2.0, f"{cpu_used:.2f} CPU seconds while idle"


def _receives(proxy: CountingProxy) -> list:
    return [r for r in proxy.snapshot() if r.operation == "ReceiveMessage"]


def _is_s3(request) -> bool:
    return request.operation.startswith("S3 ")


def test_key_presented_while_the_stub_is_written_is_accepted_at_once(master, monkeypatch):
    """The minion may submit its key between aws_ork's look-up and the stub: aws_ork sees
    the pending key right after writing the stub, accepts it and removes the stub."""
    keys = KeyManager(load_master_opts(master.config_file))
    instance = new_id()
    write = keys._stubs.write

    def write_while_the_minion_knocks(minion_id: str) -> bool:
        created = write(minion_id)
        master.add_pending_key(minion_id)
        return created

    monkeypatch.setattr(keys._stubs, "write", write_while_the_minion_knocks)
    assert keys.accept(instance).outcome is Outcome.ACCEPTED
    assert master.key_state_of(instance) == "minions"
    assert not stub(master, instance).exists()


def test_a_backlog_is_received_back_to_back_but_at_most_two_batches_ahead(sqs, queue_url):
    """During a backlog the next receive goes out as soon as one returns, without waiting
    for the loop; but no more than two batches (20 messages) are taken out of the queue
    ahead of the loop, so a deep backlog stays in the queue, not in flight in our process."""
    from aws_ork.aws import make_client
    from aws_ork.runtime.stopper import Stopper
    from aws_ork.sqs.queue import Queue
    from aws_ork.sqs.receiver import Receiver

    bodies = [f"m{n:02d}" for n in range(50)]
    for start in range(0, 50, 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
            ],
        )
    receiver = Receiver(Queue(make_client("sqs", "us-west-2"), queue_url), Stopper())
    receiver.prefetch(2)  # the loop asks once; the second receive follows by itself
    wait_for(
        lambda: len(receiver._ahead) == 2 and all(f.done() for f in receiver._ahead),
        30,
        "two batches received ahead",
    )
    assert queue_counts(sqs, queue_url) == (30, 20)  # and no third receive
    assert len(receiver.received_ahead()) == 2  # what the loop's look-ahead step is given

    got = receiver.receive(2) + receiver.receive(2)
    assert len(got) == 20 and len({m.message_id for m in got}) == 20
    receiver.prefetch(2)  # the loop took both: receiving ahead goes on
    wait_for(lambda: queue_counts(sqs, queue_url) == (10, 40), 30, "two more batches")
    receiver.close()


def test_a_handled_batch_counts_as_deleted_only_once_sqs_confirmed_it(sqs, queue_url):
    """The delete runs beside the loop; what SQS refused (here a receipt handle it never
    issued) is not reported deleted, and close() waits for the delete in flight."""
    from aws_ork.aws import make_client
    from aws_ork.sqs.deleter import Deleter
    from aws_ork.sqs.queue import Message, Queue

    send(sqs, queue_url, "one", "two")
    queue = Queue(make_client("sqs", "us-west-2"), queue_url)
    received: list[Message] = []
    wait_for(lambda: received.extend(queue.receive(1)) or len(received) == 2, 30, "both")
    forged = Message("forged", "not-a-receipt-handle", "{}")
    confirmed: list[list[Message]] = []
    deleter = Deleter(queue)
    deleter.delete([*received, forged], confirmed.append)
    deleter.close()
    assert [sorted(m.message_id for m in batch) for batch in confirmed] == [
        sorted(m.message_id for m in received)
    ]
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_a_prefetched_batch_is_given_back_on_the_way_out(sqs, queue_url):
    """Receive-ahead never strands messages: a batch fetched ahead but not handled when the
    daemon stops is visible again at once, not after the visibility timeout."""
    from aws_ork.aws import make_client
    from aws_ork.runtime.stopper import Stopper
    from aws_ork.sqs.queue import Queue
    from aws_ork.sqs.receiver import Receiver

    send(sqs, queue_url, *(f"m{n}" for n in range(3)))
    receiver = Receiver(Queue(make_client("sqs", "us-west-2"), queue_url), Stopper())
    receiver.prefetch(2)
    wait_for(lambda: receiver._ahead and receiver._ahead[0].done(), 30, "the prefetched receive")
    assert queue_counts(sqs, queue_url) == (0, 3)
    ahead = list(receiver._ahead)  # the batch, and the receive chained after it
    receiver.close()
    wait_for(lambda: all(f.done() for f in ahead), 10, "the chained receive")
    # well within the queue's 30 s visibility timeout: given back, not timed out
    wait_for(lambda: queue_counts(sqs, queue_url) == (3, 0), 5, "the batch given back")
