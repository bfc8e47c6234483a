"""Events for Salt's reactor: ``aws_ork/<kind>/<minion id>`` on the real master's event bus.

The daemon runs as a subprocess (``--once``) against the moto server and a real salt-master; a
listener subscribed to the master's event bus before the run receives what it fired. Absence
is proven without waiting for nothing: after the run the test fires a sentinel event of its
own on the same bus, and everything aws_ork fired would have been published before it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aws_ork import __version__
from aws_ork.effects.announce import Announcer
from aws_ork.effects.followups import KeyFollowups
from aws_ork.effects.hooks import Hooks
from aws_ork.keys import reactor
from aws_ork.keys.eventkey import EventKey, default_path
from aws_ork.keys.manager import KeyManager
from aws_ork.keys.stage import KeyStage
from tests.daemon import (
    queue_counts,
    run_aws_ork,
    send,
    start_aws_ork,
    states,
    stop_aws_ork,
    wait_for,
    write_config,
)
from tests.messages import new_id, sns_launch, sns_terminate
from tests.saltenv import SaltMaster, SaltMinion, start_master, start_minion
from tests.trustenv import LAUNCH, TOPIC, group_instance, plain_instance, signed, trust_config

#: How long a listener waits for the events of one run (the run itself has finished).
EVENT_DEADLINE = 30.0
#: The key of the tests that fire through a stand-in for Salt's event object.
KEY = EventKey(b"0123456789abcdef" * 4, Path("/nonexistent"))


def content(data: dict[str, Any], key: EventKey = KEY) -> dict[str, Any]:
    """What a recipe reads once the HMAC checks: the event data is ``signed`` and ``hmac``
    only, and the HMAC verifies as Salt's ``hmac`` filter checks it."""
    import salt.utils.hashutils

    assert set(data) - {"_stamp"} == {"signed", "hmac"}, data
    assert salt.utils.hashutils.hmac_signature(data["signed"], key.secret, data["hmac"])
    loaded = json.loads(data["signed"])
    assert isinstance(loaded, dict)
    return loaded


class Listener:
    """A subscriber on the master's event bus, for tags starting with ``aws_ork``."""

    def __init__(self, master: SaltMaster) -> None:
        import salt.utils.event

        self.opts = master.opts()
        self.bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True)
        self.seen: list[dict[str, Any]] = []

    def until(
        self, wanted: set[str], deadline: float = EVENT_DEADLINE, *, verify: bool = True
    ) -> dict[str, Any]:
        """Collect events until every tag in ``wanted`` arrived; {tag: data}, an aws_ork
        event's data verified and read as a recipe does (:func:`content`) unless not
        ``verify`` (forgeries)."""
        import time

        end = time.monotonic() + deadline
        while not wanted <= {e["tag"] for e in self.seen}:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out waiting for {sorted(wanted)}; got {[e['tag'] for e in self.seen]}"
                )
            event = self.bus.get_event(wait=min(left, 1.0), tag="aws_ork", full=True)
            if event is not None:
                self.seen.append(event)
        return {e["tag"]: self.content(e) if verify else e["data"] for e in self.seen}

    def content(self, event: dict[str, Any]) -> dict[str, Any]:
        if not event["tag"].startswith("aws_ork/"):
            return event["data"]
        key = EventKey.load_or_create(default_path(self.opts), self.opts, create=False)
        loaded = content(event["data"], key)
        assert loaded["tag"] == event["tag"]
        return loaded

    def fired_before_sentinel(self) -> list[str]:
        """Fire a sentinel on the bus and return the aws_ork tags that arrived before it."""
        import salt.utils.event

        sentinel = f"aws_ork_test/sentinel/{uuid.uuid4().hex}"
        pusher = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False)
        try:
            assert pusher.fire_event({"sentinel": True}, sentinel)
        finally:
            pusher.destroy()
        self.until({sentinel})
        return [e["tag"] for e in self.seen if e["tag"].startswith("aws_ork/")]

    def destroy(self) -> None:
        self.bus.destroy()


@pytest.fixture
def listener(master: SaltMaster) -> Iterator[Listener]:
    bus = Listener(master)
    yield bus
    bus.destroy()


def test_launch_accept_preauthorise_and_terminate_are_fired(master, conf, sqs, queue_url, listener):
    pending, keyless, gone = new_id(), new_id(), new_id()
    master.add_pending_key(pending)
    master.add_accepted_key(gone)
    send(
        sqs,
        queue_url,
        sns_launch(pending),
        sns_launch(keyless, group="db-asg"),
        sns_terminate(gone),
    )

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert states(master, pending, gone) == {pending: "minions", gone: None}
    events = listener.until(
        {f"aws_ork/accepted/{pending}", f"aws_ork/launch/{keyless}", f"aws_ork/terminate/{gone}"}
    )
    accepted = events[f"aws_ork/accepted/{pending}"]
    assert {
        k: accepted[k]
        for k in (
            "instance_id",
            "minion_id",
            "group",
            "outcome",
            "source",
            "event",
            "version",
            "facts",
        )
    } == {
        "instance_id": pending,
        "minion_id": pending,
        "group": "web-asg",
        "outcome": "accepted",
        "source": "sns",
        "event": "autoscaling:EC2_INSTANCE_LAUNCH",
        "version": __version__,
        "facts": None,
    }  # VerifyInstances off: no EC2 facts
    assert accepted["reason"] == "accepted"
    assert accepted["message_id"] and accepted["message_id"] in result.stderr
    launch = events[f"aws_ork/launch/{keyless}"]
    assert launch["group"] == "db-asg" and launch["outcome"].startswith("pre-authorised")
    terminate = events[f"aws_ork/terminate/{gone}"]
    assert terminate["outcome"] == "deleted" and terminate["minion_id"] == gone
    # one event per decision: nothing about the bystanders, nothing twice
    assert sorted(listener.fired_before_sentinel()) == sorted(events)


@pytest.mark.parametrize("how", ["SaltEvents = false", "--dry-run"])
def test_nothing_is_fired_when_off_or_dry_run(master, tmp_path, sqs, queue_url, listener, how):
    pending, gone = new_id(), new_id()
    master.add_pending_key(pending)
    master.add_accepted_key(gone)
    options = {"SaltEvents": "false"} if how.startswith("SaltEvents") else {}
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=master, **options)
    send(sqs, queue_url, sns_launch(pending), sns_terminate(gone))

    result = run_aws_ork(conf, "--once", *(("--dry-run",) if how == "--dry-run" else ()))

    assert result.returncode == 0, result.stderr
    decided = "would be accepted" if how == "--dry-run" else "accepted"
    assert f"{pending} group=web-asg via=sns: {decided}" in result.stderr
    assert listener.fired_before_sentinel() == []


HOSTILE_GROUP = 'web$(touch /tmp/aws_ork_pwned)`id`;{{ salt["cmd.run"]("id") }}\n- x: "y"'


def test_a_launch_that_fails_the_signature_check_fires_nothing(
    master, tmp_path, sqs, queue_url, listener
):
    """Anyone's message, with shell and template text in it: refused, logged, and nothing
    of it reaches the master's bus (it used to fire ``aws_ork/rejected/<id>`` with the
    sender's text)."""
    minion = new_id()
    master.add_pending_key(minion)
    conf = write_config(
        tmp_path / "aws_ork.conf",
        queue_url=queue_url,
        master=master,
        VerifySignatures="true",
        AllowedTopicArns=TOPIC,
    )
    send(sqs, queue_url, sns_launch(minion, group=HOSTILE_GROUP))  # a placeholder signature

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert states(master, minion) == {minion: "minions_pre"}
    assert queue_counts(sqs, queue_url) == (0, 0)
    assert "REJECTED" in result.stderr and "signature" in result.stderr.lower()
    assert listener.fired_before_sentinel() == []


def test_ec2_facts_ride_along(
    master, tmp_path, sqs, queue_url, listener, fleet, identity, cert_dir
):
    mine = group_instance(fleet)
    stranger = plain_instance(
        fleet, {"aws:autoscaling:groupName": "db-prod", "role": "salt-minion"}
    )
    master.add_pending_key(mine)  # after the launch: fresh
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    send(
        sqs,
        queue_url,
        signed(identity, LAUNCH, mine, fleet["group"]),
        signed(identity, LAUNCH, stranger, "db-prod"),
    )

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    events = listener.until({f"aws_ork/accepted/{mine}", f"aws_ork/rejected/{stranger}"})
    facts = events[f"aws_ork/accepted/{mine}"]["facts"]
    assert facts["state"] in ("pending", "running")
    assert datetime.fromisoformat(facts["launch_time"]).utcoffset() is not None
    assert facts["tags"]["aws:autoscaling:groupName"] == fleet["group"]
    assert facts["tags"]["role"] == "salt-minion"
    refused = events[f"aws_ork/rejected/{stranger}"]
    assert "not in AutoScalingGroups" in refused["reason"]
    assert refused["facts"]["tags"]["aws:autoscaling:groupName"] == "db-prod"


def test_a_forged_rejected_leaves_the_genuine_launch_its_facts(
    master, tmp_path, sqs, queue_url, listener, fleet, identity, cert_dir
):
    """A genuine launch is pre-authorised; a forged message about the same instance (its
    signature fails) comes next; the minion then boots and Salt accepts it through the
    stub: the ``accepted`` still carries the launch's EC2 facts, nothing of the forgery was
    fired, and the instance's own hostile tag reaches the event without shell or template
    characters."""
    mine = plain_instance(
        fleet,
        {"aws:autoscaling:groupName": fleet["group"], "role": "salt-minion", "note": HOSTILE_GROUP},
    )
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    log = tmp_path / "aws_ork.log"
    proc = start_aws_ork(conf, log)
    started: list[SaltMinion] = []
    try:
        send(sqs, queue_url, signed(identity, LAUNCH, mine, fleet["group"]))
        wait_for(
            lambda: f"{mine} group={fleet['group']} via=sns: pre-authorised" in log.read_text(),
            60,
            "the genuine launch to be pre-authorised",
        )
        send(sqs, queue_url, sns_launch(mine, group=HOSTILE_GROUP))  # no valid signature
        wait_for(lambda: "REJECTED" in log.read_text(), 60, "the forgery to be refused")
        started.append(start_minion(master, tmp_path / "minion", mine))
        events = listener.until(
            {f"aws_ork/launch/{mine}", f"aws_ork/accepted/{mine}"}, deadline=120
        )
    finally:
        for salt_minion in started:
            salt_minion.stop()
        stop_aws_ork(proc)
    accepted = events[f"aws_ork/accepted/{mine}"]
    assert accepted["source"] == "autosign" and accepted["outcome"] == "accepted"
    assert accepted["facts"] is not None
    assert accepted["facts"]["tags"]["role"] == "salt-minion"
    note = accepted["facts"]["tags"]["note"]
    assert note.startswith("web__touch /tmp/aws_ork_pwned__id_")
    assert not set(note) & set("$`;{}()\"'\n%")
    assert sorted(listener.fired_before_sentinel()) == sorted(
        [f"aws_ork/launch/{mine}", f"aws_ork/accepted/{mine}"]
    )  # no rejected


def settled(events: reactor.SaltEvents, count: int, deadline: float = 10.0) -> None:
    """Wait until the worker thread has fired or dropped ``count`` events in all."""
    end = time.monotonic() + deadline
    while events.fired + events.dropped < count:
        if time.monotonic() > end:
            raise AssertionError(
                f"timed out: {events.fired} fired + {events.dropped} dropped of {count}"
            )
        time.sleep(0.002)


class Recorder:
    """Stands in for Salt's event object: records what would be fired, or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.fired: list[tuple[str, dict[str, Any]]] = []
        self.connects = 0

    def connect(self, _opts: Any) -> Recorder:
        self.connects += 1
        return self

    def fire_event(self, data: dict[str, Any], tag: str, timeout: int = 1000) -> bool:
        if self.fail:
            return False  # what Salt returns when it cannot connect
        self.fired.append((tag, data))
        return True

    def destroy(self) -> None:
        pass


def followups(keys: KeyManager, events: reactor.SaltEvents) -> KeyFollowups:
    """The watchers' follow-ups as the daemon wires them, without lifecycle hooks."""
    return KeyFollowups(KeyStage(keys), Announcer(events), Hooks(None))


def test_acceptance_by_salt_through_a_stub_is_fired_with_the_launch_context(master):
    """The loop's watcher reports consumed autosign stubs; an accepted one is announced with
    the group and message of the launch that pre-authorised it."""
    minion, refused = new_id(), new_id()
    recorder = Recorder()
    events = reactor.SaltEvents(master.opts(), connect=recorder.connect, key=KEY)
    events.fire(reactor.Kind.LAUNCH, minion, {"group": "web-asg", "message_id": "m-1"})
    master.add_accepted_key(minion)  # what Salt does with the stub on the minion's first auth
    master.add_rejected_key(refused)
    keys = KeyManager(master.opts())
    try:
        followups(keys, events).note_accepted_by_salt([minion, refused])
    finally:
        keys.close()
    events.close()  # fires what is queued
    assert [tag for tag, _ in recorder.fired] == [
        f"aws_ork/launch/{minion}",
        f"aws_ork/accepted/{minion}",
    ]
    accepted = content(recorder.fired[1][1])
    assert accepted["group"] == "web-asg" and accepted["message_id"] == "m-1"
    assert accepted["source"] == "autosign"


def test_a_bound_key_accepted_by_the_arrivals_thread_is_fired(master):
    """Key binding: the arrivals thread hands a presented key to the key stage, which accepts
    it, and the effects announce it (with the context of the launch that waited for it)."""
    from aws_ork.base import binding

    minion = new_id()
    pub = master.add_pending_key(minion).read_text()
    recorder = Recorder()
    events = reactor.SaltEvents(master.opts(), connect=recorder.connect, key=KEY)
    events.fire(reactor.Kind.LAUNCH, minion, {"group": "web-asg", "message_id": "m-2"})
    keys = KeyManager(master.opts())
    try:
        assert followups(keys, events).on_key_presented(minion, binding.finger(pub))
    finally:
        keys.close()
    events.close()  # fires what is queued
    assert states(master, minion) == {minion: "minions"}
    tag, data = recorder.fired[-1][0], content(recorder.fired[-1][1])
    assert tag == f"aws_ork/accepted/{minion}"
    assert (data["source"], data["outcome"], data["group"], data["message_id"]) == (
        "key binding",
        "accepted",
        "web-asg",
        "m-2",
    )


def test_a_published_key_stored_by_the_key_tag_watcher_is_fired(master):
    """Key binding by key: the key tag watcher hands the key an instance published to the
    key stage, which stores it as accepted, and the effects announce it with the launch's
    context."""
    from aws_ork.base import binding
    from aws_ork.checks.verdict import Verdict
    from tests.saltenv import generate_public_key_pem

    minion = new_id()
    pem = generate_public_key_pem()
    recorder = Recorder()
    events = reactor.SaltEvents(master.opts(), connect=recorder.connect, key=KEY)
    events.fire(reactor.Kind.LAUNCH, minion, {"group": "web-asg", "message_id": "m-3"})
    keys = KeyManager(master.opts())
    verdict = Verdict.passed(fingerprint=binding.finger(pem.strip()), published=pem)
    try:
        assert followups(keys, events).on_key_published(minion, verdict)
    finally:
        keys.close()
    events.close()  # fires what is queued
    assert states(master, minion) == {minion: "minions"}
    assert master.key_path(minion, "minions").read_text().strip() == pem.strip()
    tag, data = recorder.fired[-1][0], content(recorder.fired[-1][1])
    assert tag == f"aws_ork/accepted/{minion}"
    assert (data["source"], data["outcome"], data["group"], data["message_id"]) == (
        "key binding",
        "accepted",
        "web-asg",
        "m-3",
    )


def test_sighup_reconnects_with_the_reloaded_master_config():
    seen: list[Any] = []
    recorder = Recorder()

    def connect(opts: Any) -> Recorder:
        seen.append(opts["sock_dir"])
        return recorder

    events = reactor.SaltEvents({"sock_dir": "/run/old"}, connect=connect, key=KEY)
    minion = new_id()
    assert events.fire(reactor.Kind.LAUNCH, minion, {})
    assert events.fire(reactor.Kind.ACCEPTED, minion, {})  # the same connection
    events.reload({"sock_dir": "/run/new"})
    assert events.fire(reactor.Kind.TERMINATE, minion, {})
    events.close()
    assert seen == ["/run/old", "/run/new"]
    assert [tag.split("/")[1] for tag, _ in recorder.fired] == ["launch", "accepted", "terminate"]
    assert (events.fired, events.dropped) == (3, 0)


def test_a_bus_that_is_down_costs_one_try_per_period(caplog):
    recorder = Recorder(fail=True)
    now = [1000.0]
    events = reactor.SaltEvents(
        {"sock_dir": "/nonexistent"}, connect=recorder.connect, clock=lambda: now[0], key=KEY
    )
    minion = new_id()
    with caplog.at_level("DEBUG", logger="aws_ork.keys.reactor"):
        # queued at once; the worker thread reads the clock: each waits for the one before
        assert events.fire(reactor.Kind.LAUNCH, minion, {})
        settled(events, 1)
        assert events.fire(reactor.Kind.ACCEPTED, minion, {})  # within RETRY_SECONDS
        settled(events, 2)
        now[0] += reactor.RETRY_SECONDS
        assert events.fire(reactor.Kind.ACCEPTED, minion, {})
        settled(events, 3)
        recorder.fail = False
        now[0] += reactor.RETRY_SECONDS
        assert events.fire(reactor.Kind.ACCEPTED, minion, {})
        events.close()
    assert recorder.connects == 3  # the dropped one never tried
    assert (events.fired, events.dropped) == (1, 3)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "event bus is down" in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)


class HungBus(Recorder):
    """Salt's event object on a bus that hangs: the connection (or the first event) blocks
    until the test lets it go."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.entered = threading.Event()
        self.release = threading.Event()

    def _hang(self) -> None:
        self.entered.set()
        assert self.release.wait(30)

    def connect(self, opts: Any) -> Recorder:
        if self.where == "connect":
            self._hang()
        return super().connect(opts)

    def fire_event(self, data: dict[str, Any], tag: str, timeout: int = 1000) -> bool:
        if self.where == "fire_event":
            self._hang()
        return super().fire_event(data, tag, timeout)


@pytest.mark.parametrize("where", ["connect", "fire_event"])
def test_a_hung_bus_never_delays_a_decision(caplog, where):
    """fire() only queues: the worker thread waits for Salt, the caller never does; the
    queue is bounded, and close() gives up after its bound, counting what was not fired."""
    bus = HungBus(where)
    events = reactor.SaltEvents(
        {"sock_dir": "/nonexistent"}, connect=bus.connect, queue_limit=5, key=KEY
    )
    minions = [new_id() for _ in range(8)]
    try:
        with caplog.at_level("DEBUG", logger="aws_ork.keys.reactor"):
            start = time.monotonic()
            assert events.fire(reactor.Kind.LAUNCH, minions[0], {"group": "web-asg"})
            assert bus.entered.wait(10)  # the worker holds the first event, stuck in Salt
            queued = [
                events.fire(reactor.Kind.LAUNCH, minion, {"group": "web-asg"})
                for minion in minions[1:]
            ]
            fired_in = time.monotonic() - start
            assert queued == [True] * 5 + [False] * 2  # the queue holds 5; 2 are dropped
            assert (events.fired, events.dropped) == (0, 2)

            start = time.monotonic()
            events.close(timeout=0.2)
            closed_in = time.monotonic() - start
            assert not events.fire(reactor.Kind.TERMINATE, minions[0], {})  # after close
        # 2 for want of room, 5 queued and the one in Salt's hands at close, 1 after close
        assert (events.fired, events.dropped) == (0, 9)
        assert 0.2 <= closed_in < 2.0
        assert fired_in < 2.0  # in practice well under a millisecond per fire
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 2, warnings  # one for the full queue, one at close
        assert "already wait to be fired" in warnings[0]
        assert warnings[1].startswith("6 aws_ork Salt events dropped at stop")
    finally:
        bus.release.set()
    # let go, the worker finishes the event it held, closes the connection and ends, without
    # touching the counters (close() counted that event as dropped) or firing the rest
    end = time.monotonic() + 10
    while any(t.name == "aws_ork-salt-events" and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < end, "the worker thread did not end"
        time.sleep(0.01)
    assert [tag for tag, _ in bus.fired] == [f"aws_ork/launch/{minions[0]}"]
    assert (events.fired, events.dropped) == (0, 9)


def test_events_reach_the_real_bus_in_order_and_close_fires_what_is_queued(master, listener):
    """On a real master: fire() returns before Salt has the event; close() fires everything
    queued, in the order it was queued, over one connection."""
    events = reactor.SaltEvents(
        master.opts(), key=EventKey.load_or_create(default_path(master.opts()), master.opts())
    )
    minions = [new_id() for _ in range(100)]
    tags = []
    for minion in minions:
        assert events.fire(
            reactor.Kind.LAUNCH, minion, {"group": "web-asg", "message_id": f"m-{minion}"}
        )
        assert events.fire(reactor.Kind.ACCEPTED, minion, {"source": "autosign"})
        tags += [f"aws_ork/launch/{minion}", f"aws_ork/accepted/{minion}"]
    events.close()
    assert (events.fired, events.dropped) == (len(tags), 0)

    received = listener.until(set(tags))
    assert [e["tag"] for e in listener.seen if e["tag"].startswith("aws_ork/")] == tags
    accepted = received[tags[-1]]  # the launch's context rode along, through the queue
    assert (accepted["group"], accepted["message_id"]) == ("web-asg", f"m-{minions[-1]}")
    assert listener.fired_before_sentinel() == tags  # and nothing more


@pytest.mark.parametrize("hostile", ["*", "i-*", "../x", "i-0123/../../etc", ""])
def test_only_instance_ids_make_a_tag(hostile):
    recorder = Recorder()
    events = reactor.SaltEvents({"sock_dir": "/nonexistent"}, connect=recorder.connect, key=KEY)
    assert not events.fire(reactor.Kind.ACCEPTED, hostile, {})
    events.close()
    assert recorder.fired == [] and recorder.connects == 0
    assert (events.fired, events.dropped) == (0, 0)  # not an event at all


def test_untrusted_text_is_bounded_and_escaped():
    recorder = Recorder()
    events = reactor.SaltEvents({"sock_dir": "/nonexistent"}, connect=recorder.connect, key=KEY)
    tags = {f"k{i:03d}": "v" * 1000 for i in range(80)}
    tags["evil\nkey"] = "x: {{ salt['cmd.run']('id') }}\n- y"
    assert events.fire(
        reactor.Kind.REJECTED,
        new_id(),
        {
            "group": "g\n" * 1000,
            "reason": "r" * 5000,
            "facts": {"state": "running", "launch_time": "2026-11-23T10:00:00+00:00", "tags": tags},
        },
    )
    events.close()
    data = content(recorder.fired[0][1])
    assert len(data["group"]) <= reactor.GROUP_LIMIT and "\n" not in data["group"]
    assert len(data["reason"]) == reactor.REASON_LIMIT
    assert len(data["facts"]["tags"]) == reactor.TAGS_LIMIT
    assert all(len(v) <= reactor.TAG_VALUE_LIMIT for v in data["facts"]["tags"].values())
    assert all("\n" not in k + v for k, v in data["facts"]["tags"].items())


def readme_example(heading: str) -> str:
    """The first ```jinja block after ``heading`` in docs/salt.md: the test runs what it
    shows."""
    text = (Path(__file__).parent.parent / "docs" / "salt.md").read_text()
    after = text[text.index(heading) :]
    start = after.index("```jinja\n") + len("```jinja\n")
    return after[start : after.index("```", start)]


class Webhook:
    """An incoming-webhook stand-in on 127.0.0.1: records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        import http.server
        import threading

        bodies: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.stop()


@pytest.fixture
def reactor_master(
    tmp_path_factory: pytest.TempPathFactory, webhook: Webhook
) -> Iterator[SaltMaster]:
    """A real salt-master whose reactor runs the examples of docs/salt.md: the highstate one for
    ``aws_ork/accepted/*`` (the highstate writes ``highstated/<minion id>`` under the
    master's root) and the chat one for ``aws_ork/*``, posting to the ``webhook``."""
    root = tmp_path_factory.mktemp("reactor")
    highstate, chat = root / "highstate.sls", root / "chat.sls"
    highstate.write_text(readme_example("**Highstate a new minion"))
    chat.write_text(
        readme_example("**Tell a chat channel**").replace(
            "https://hooks.slack.com/services/T000/B000/XXXXXXXX", webhook.url
        )
    )
    states_dir = root / "master" / "srv" / "salt"
    states_dir.mkdir(parents=True)
    (states_dir / "top.sls").write_text("base:\n  '*':\n    - marker\n")
    (states_dir / "marker.sls").write_text(
        "marker:\n  file.managed:\n"
        f"    - name: {root / 'highstated'}/{{{{ grains['id'] }}}}\n"
        "    - makedirs: True\n    - contents: highstated\n"
    )
    salt_master = start_master(
        root / "master",
        extra_opts={
            "reactor": [{"aws_ork/accepted/*": [str(highstate)]}, {"aws_ork/*": [str(chat)]}]
        },
    )
    yield salt_master
    salt_master.stop()


def test_the_readme_chat_reactor_posts_each_decision(
    reactor_master, webhook, tmp_path, sqs, queue_url
):
    minion, gone = new_id(), new_id()
    reactor_master.add_pending_key(minion)
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=reactor_master)
    send(sqs, queue_url, sns_launch(minion, group='web "asg"\n- x: y'), sns_terminate(gone))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    texts = wait_for(
        lambda: len(webhook.bodies) >= 2 and [b["text"] for b in webhook.bodies],
        60,
        "the reactor to post both decisions",
    )
    assert sorted(texts) == sorted(
        [
            f"aws_ork/accepted/{minion} group=web _asg__- x: y: accepted",
            f"aws_ork/terminate/{gone} group=web-asg: no key to delete",
        ]
    )


def salt_call(minion: SaltMinion, *args: str) -> subprocess.CompletedProcess:
    """``salt-call`` as the accepted minion itself: its own key, straight to the master."""
    from tests.saltenv import salt_script

    return subprocess.run(
        [*salt_script("salt-call"), "-c", str(minion.config_dir), "--out=json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_accepted_minion_cannot_forge_an_event_the_readme_recipes_act_on(
    reactor_master, webhook, tmp_path, sqs, queue_url
):
    """A real accepted salt-minion puts ``aws_ork/accepted/<id>`` on the master's bus, with a
    plain tag, with a ``pretag`` (fired before Salt's blacklist check), and with a genuine
    aws_ork event's ``signed`` and ``hmac`` replayed under another tag: the chat
    recipe posts none of them, and posts the genuine event that follows."""
    attacker, victim, genuine = new_id(), new_id(), new_id()
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=reactor_master)
    reactor_master.add_pending_key(victim)
    send(sqs, queue_url, sns_launch(victim))
    assert run_aws_ork(conf, "--once").returncode == 0
    first = wait_for(lambda: webhook.bodies[:1], 60, "the genuine accepted to be posted")
    assert first[0]["text"].startswith(f"aws_ork/accepted/{victim} ")
    listener = Listener(reactor_master)
    minion = start_minion(reactor_master, tmp_path / "attacker", attacker)
    try:
        reactor_master.wait_for_key(attacker, "minions_pre", timeout=60)
        reactor_master.salt_key("-a", attacker, "-y")
        reactor_master.wait_for_ping(attacker, timeout=60)
        # a genuine signed event of another tag, captured: replayed under accepted/<other>
        launch_tag = f"aws_ork/launch/{genuine}"
        pusher = reactor.SaltEvents(
            reactor_master.opts(),
            key=EventKey.load_or_create(
                default_path(reactor_master.opts()), reactor_master.opts(), create=False
            ),
        )
        pusher.fire(reactor.Kind.LAUNCH, genuine, {"group": "web-asg"})
        pusher.close()
        captured = next(
            e["data"]
            for e in iter(lambda: listener.bus.get_event(wait=5, tag=launch_tag, full=True), None)
            if e["tag"] == launch_tag
        )
        forged = {
            "signed": captured["signed"],
            "hmac": captured["hmac"],
            "minion_id": attacker,
            "outcome": "accepted",
            "reason": "forged",
            "group": "forged",
        }
        target = f"aws_ork/accepted/{attacker}"
        plain = salt_call(minion, "event.send", target, json.dumps(forged))
        assert plain.returncode == 0, plain.stderr
        pretagged = salt_call(
            minion,
            "event.fire_master",
            json.dumps(forged),
            "ignored",
            "preload="
            + json.dumps(
                {"pretag": "aws_ork", "events": [{"tag": f"accepted/{attacker}", "data": forged}]}
            ),
        )
        assert pretagged.returncode == 0, pretagged.stderr
        listener.until({target}, verify=False)  # the forgeries are on the bus, aws_ork's tag
    finally:
        minion.stop()
        listener.destroy()
    # a genuine event after them: once the recipe posted it, it had rendered the forgeries
    reactor_master.add_pending_key(genuine)
    send(sqs, queue_url, sns_launch(genuine))
    assert run_aws_ork(conf, "--once").returncode == 0
    texts = wait_for(
        lambda: (
            any(b["text"].startswith(f"aws_ork/accepted/{genuine} ") for b in webhook.bodies)
            and [b["text"] for b in webhook.bodies]
        ),
        60,
        "the genuine event after the forgeries to be posted",
    )
    assert not [t for t in texts if attacker in t or "forged" in t], texts
    assert sorted(t.split(" ")[0] for t in texts) == sorted(
        [  # the genuine ones, once each
            f"aws_ork/accepted/{victim}",
            f"aws_ork/launch/{genuine}",
            f"aws_ork/accepted/{genuine}",
        ]
    )


def test_a_minion_accepted_by_salt_through_the_stub_is_highstated_by_the_readme_reactor(
    reactor_master, tmp_path, sqs, queue_url
):
    """The whole way: launch -> autosign stub -> the minion's first contact -> Salt accepts
    -> the loop's watcher -> ``aws_ork/accepted/<id>`` (with the launch's group) -> the
    highstate reactor of docs/salt.md -> the minion runs its highstate."""
    minion = new_id()
    listener = Listener(reactor_master)
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=reactor_master)
    log = tmp_path / "aws_ork.log"
    proc = start_aws_ork(conf, log)
    started: list[SaltMinion] = []
    try:
        send(sqs, queue_url, sns_launch(minion, group="web-asg"))
        wait_for(
            lambda: f"{minion} group=web-asg via=sns: pre-authorised" in log.read_text(),
            60,
            "the launch to be pre-authorised",
        )
        started.append(start_minion(reactor_master, tmp_path / "minion", minion))
        events = listener.until(
            {f"aws_ork/launch/{minion}", f"aws_ork/accepted/{minion}"}, deadline=120
        )
        accepted = events[f"aws_ork/accepted/{minion}"]
        assert (accepted["source"], accepted["outcome"], accepted["group"]) == (
            "autosign",
            "accepted",
            "web-asg",
        )
        assert accepted["message_id"] == events[f"aws_ork/launch/{minion}"]["message_id"]
        marker = reactor_master.root.parent / "highstated" / minion
        wait_for(marker.exists, 120, "the reactor's highstate to run on the new minion")
        assert marker.read_text().strip() == "highstated"
    finally:
        for salt_minion in started:
            salt_minion.stop()
        stop_aws_ork(proc)
        listener.destroy()
