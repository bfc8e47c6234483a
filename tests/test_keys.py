"""KeyManager against a real salt-master's key store: exact matches, every key state."""

from __future__ import annotations

import os

import pytest

from aws_ork.keys.manager import KeyManager, load_master_opts
from aws_ork.keys.result import Outcome
from tests.messages import new_id


@pytest.fixture(scope="module")
def keys(master) -> KeyManager:
    return KeyManager(load_master_opts(master.config_file))


def stubs(master) -> set[str]:
    """The ids with an autosign stub (pre-authorised)."""
    folder = master.pki_dir / "minions_autosign"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_accept_takes_exactly_the_named_pending_key(master, keys):
    mine, neighbour = new_id(), new_id()
    master.add_pending_key(mine)
    # a neighbour whose id starts with the same characters: a glob or prefix match would hit it
    twin = mine[:-1] + ("0" if mine[-1] != "0" else "1")
    master.add_pending_key(twin)
    master.add_pending_key(neighbour)

    result = keys.accept(mine)

    assert (result.outcome, result.changed) == (Outcome.ACCEPTED, True)
    assert [master.key_state_of(i) for i in (mine, twin, neighbour)] == [
        "minions",
        "minions_pre",
        "minions_pre",
    ]
    assert keys.accept(mine).outcome is Outcome.ALREADY_ACCEPTED


@pytest.mark.parametrize(
    "bad",
    [
        "*",
        "i-*",
        "i-?",
        "i-[0-9a-f]*",
        "../minions/x",
        "i-0,i-1",
        ".hidden",
        "..",
        "-i-0123456789abcdef0",
        "web 1",
        "w" * 129,
        "i-0123456789abcdef0 ",
        "",
    ],
)
def test_ids_that_are_not_safe_minion_ids_never_reach_salt(master, keys, bad):
    pending, accepted = new_id(), new_id()
    master.add_pending_key(pending)
    master.add_accepted_key(accepted)

    assert keys.accept(bad).outcome is Outcome.INVALID_ID
    assert keys.delete(bad).outcome is Outcome.INVALID_ID
    assert keys.reject(bad).outcome is Outcome.INVALID_ID

    assert (master.key_state_of(pending), master.key_state_of(accepted)) == (
        "minions_pre",
        "minions",
    )


def test_a_key_not_yet_submitted_is_pre_authorised_for_that_id_only(master, keys):
    instance = new_id()
    before = stubs(master)
    result = keys.accept(instance)
    assert (result.outcome, result.outcome.done) == (Outcome.PREAUTHORISED, True)
    assert stubs(master) == before | {instance}  # one stub, this id's, and nothing else
    assert keys.delete(instance).outcome is Outcome.PREAUTH_WITHDRAWN
    assert stubs(master) == before


def test_a_rejected_key_stays_rejected(master, keys):
    rejected = new_id()
    master.add_rejected_key(rejected)
    assert keys.accept(rejected).outcome is Outcome.REFUSED
    assert master.key_state_of(rejected) == "minions_rejected"


@pytest.mark.parametrize("where", ["pending", "accepted", "rejected", "denied"])
def test_delete_removes_the_key_in_any_state(master, keys, where):
    doomed, bystander = new_id(), new_id()
    getattr(master, f"add_{where}_key")(doomed)
    master.add_accepted_key(bystander)

    result = keys.delete(doomed)

    assert (result.outcome, result.changed) == (Outcome.DELETED, True)
    assert all(doomed not in names for names in master.key_states().values())
    assert master.key_state_of(bystander) == "minions"
    assert keys.delete(doomed).outcome is Outcome.ABSENT


def test_dry_run_reports_and_changes_nothing(master):
    dry = KeyManager(load_master_opts(master.config_file), dry_run=True)
    pending, accepted = new_id(), new_id()
    master.add_pending_key(pending)
    master.add_accepted_key(accepted)

    assert dry.accept(pending).describe() == "would be accepted"
    assert dry.delete(accepted).describe() == "would be deleted"
    assert (master.key_state_of(pending), master.key_state_of(accepted)) == (
        "minions_pre",
        "minions",
    )


def test_a_key_another_daemon_accepted_meanwhile_is_already_accepted_not_an_error(
    master, keys, monkeypatch
):
    """A Salt cluster: two daemons on one key store may handle the same instance (a
    notification and a hook message); the one that finds the key accepted between its look-up
    and its accept reports it accepted, without an ERROR and a retry."""
    minion = new_id()
    master.add_accepted_key(minion)
    looked_up = keys.states
    seen: list[str] = []

    def pending_at_first_look(minion_id: str) -> set[str]:
        seen.append(minion_id)
        return {"minions_pre"} if len(seen) == 1 else looked_up(minion_id)

    monkeypatch.setattr(keys, "states", pending_at_first_look)
    assert keys.accept(minion).outcome is Outcome.ALREADY_ACCEPTED
    assert master.key_state_of(minion) == "minions"


@pytest.mark.parametrize(
    ("change", "state"), [("accept", "minions"), ("reject", "minions_rejected")]
)
def test_a_key_changing_state_is_never_absent_for_a_minion_authenticating_meanwhile(
    master, keys, monkeypatch, change, state
):
    """Salt's file driver stores a state change as "delete the old file, write the new one";
    a minion authenticating in between finds no key, is taken for a new minion, and the master
    puts its key back in pending over the accept (or, over a reject, pending again with a
    fresh mtime). The change is one rename instead: at every removal of one of the key's
    files, another state still holds it."""
    minion = new_id()
    master.add_pending_key(minion)
    absent_at: list[str] = []
    real_remove, real_unlink = os.remove, os.unlink

    def watched(real):
        def remove(path, *args, **kwargs):
            path = os.fspath(path)
            if os.path.basename(path) == minion:
                real(path, *args, **kwargs)
                if not any(
                    master.key_path(minion, state).is_file()
                    for state in ("minions", "minions_pre", "minions_rejected")
                ):
                    absent_at.append(path)
                return None
            return real(path, *args, **kwargs)

        return remove

    monkeypatch.setattr(os, "remove", watched(real_remove))
    monkeypatch.setattr(os, "unlink", watched(real_unlink))
    outcome = getattr(keys, change)(minion).outcome
    monkeypatch.undo()
    assert outcome is (Outcome.ACCEPTED if change == "accept" else Outcome.REJECTED)
    assert absent_at == []
    assert master.key_state_of(minion) == state
