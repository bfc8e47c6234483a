"""Key binding in the key stage, against a real salt-master's key store: only the key whose
fingerprint the instance published is accepted, wherever Salt put it."""

from __future__ import annotations

from pathlib import Path

import pytest
import salt.utils.crypt

from aws_ork.base import binding
from aws_ork.keys.manager import KeyManager, load_master_opts
from aws_ork.keys.result import Outcome
from tests.messages import new_id
from tests.saltenv import generate_public_key_pem


@pytest.fixture(scope="module")
def keys(master) -> KeyManager:
    return KeyManager(load_master_opts(master.config_file))


def finger_file(tmp_path: Path, pub: str) -> str:
    """What ``salt-call --local key.finger`` prints on the minion for this key file."""
    path = tmp_path / "minion.pub"
    path.write_text(pub + "\n")
    return str(salt.utils.crypt.pem_finger(str(path)))


def test_both_of_salts_fingerprints_name_the_key(tmp_path):
    pub = generate_public_key_pem()
    on_master = salt.utils.crypt.pem_finger(key=pub.encode())  # salt-key -f
    on_minion = finger_file(tmp_path, pub)  # salt-call --local key.finger
    # Salt 3006.27 and 3008 hash different bytes for the two (3007.16 the same): either one
    # names the key
    assert binding.matches(pub, on_master) and binding.matches(pub, on_minion)
    assert not binding.matches(generate_public_key_pem(), on_minion)
    assert binding.normalise(f"  {on_minion.upper()} ") == on_minion
    assert binding.normalise("not:a:fingerprint") is None


def test_the_bound_pending_key_is_accepted(master, keys, tmp_path):
    minion, pub = new_id(), generate_public_key_pem()
    master.add_pending_key(minion, pub)
    result = keys.accept_bound(minion, finger_file(tmp_path, pub))
    assert (result.outcome, result.changed) == (Outcome.ACCEPTED, True)
    assert master.key_path(minion, "minions").read_text().strip() == pub


def test_an_impostors_pending_key_is_never_accepted_and_no_stub_is_written(master, keys, tmp_path):
    """Left pending (an id without any key lets the next presenter's pending key wipe the
    accepted one), and its denied one removed, so the genuine key finds the denied slot."""
    minion, genuine, impostor = new_id(), generate_public_key_pem(), generate_public_key_pem()
    other = generate_public_key_pem()
    master.add_pending_key(minion, impostor)
    master.add_denied_key(minion, other)
    result = keys.accept_bound(minion, finger_file(tmp_path, genuine))
    assert result.outcome is Outcome.BOUND_NOT_YET and not result.outcome.done
    assert result.others == tuple(
        salt.utils.crypt.pem_finger(key=pub.encode()) for pub in (impostor, other)
    )
    assert master.key_state_of(minion) == "minions_pre"
    assert not master.key_path(minion, "minions_denied").exists()
    assert not (master.pki_dir / "minions_autosign" / minion).exists()


def test_a_presented_key_salt_threw_away_is_accepted(master, keys, tmp_path):
    """Both slots held by impostors: the genuine key is on no disk, only on its salt/auth
    event; it is accepted, and the impostors' keys are gone."""
    minion, genuine = new_id(), generate_public_key_pem()
    master.add_pending_key(minion, generate_public_key_pem())
    master.add_denied_key(minion, generate_public_key_pem())
    fingerprint = finger_file(tmp_path, genuine)
    assert (
        keys.accept_bound(minion, fingerprint, presented=generate_public_key_pem()).outcome
        is Outcome.BOUND_NOT_YET
    )
    result = keys.accept_bound(minion, fingerprint, presented=genuine + "\n")
    assert (result.outcome, result.changed) == (Outcome.ACCEPTED, True)
    assert master.key_path(minion, "minions").read_text().strip() == genuine
    assert not master.key_path(minion, "minions_pre").exists()
    assert not master.key_path(minion, "minions_denied").exists()


def test_the_genuine_key_denied_behind_an_impostor_is_accepted_from_denied(master, keys, tmp_path):
    minion, genuine, impostor = new_id(), generate_public_key_pem(), generate_public_key_pem()
    master.add_pending_key(minion, impostor)
    master.add_denied_key(minion, genuine)  # Salt denied it: another key was pending
    result = keys.accept_bound(minion, finger_file(tmp_path, genuine))
    assert result.outcome is Outcome.ACCEPTED and result.others
    assert master.key_path(minion, "minions").read_text().strip() == genuine
    assert not master.key_path(minion, "minions_pre").exists()
    assert not master.key_path(minion, "minions_denied").exists()


def test_another_accepted_key_is_left_alone(master, keys, tmp_path):
    minion, genuine, other = new_id(), generate_public_key_pem(), generate_public_key_pem()
    master.add_accepted_key(minion, other)
    result = keys.accept_bound(minion, finger_file(tmp_path, genuine))
    assert result.outcome is Outcome.OTHER_KEY_ACCEPTED
    assert master.key_path(minion, "minions").read_text().strip() == other
    master.add_accepted_key(minion, genuine)
    assert (
        keys.accept_bound(minion, finger_file(tmp_path, genuine)).outcome
        is Outcome.ALREADY_ACCEPTED
    )


def test_nothing_presented_yet_waits_and_dry_run_changes_nothing(master, tmp_path):
    minion, genuine = new_id(), generate_public_key_pem()
    dry = KeyManager(load_master_opts(master.config_file), dry_run=True)
    assert dry.accept_bound(minion, finger_file(tmp_path, genuine)).outcome is Outcome.BOUND_NOT_YET
    master.add_pending_key(minion, generate_public_key_pem())
    result = dry.accept_bound(minion, finger_file(tmp_path, genuine))
    assert result.dry_run and result.others
    assert master.key_state_of(minion) == "minions_pre"  # the impostor's, still there


def test_a_given_up_launch_removes_only_impostor_keys(master, keys, tmp_path):
    """The give-up cleanup: the impostors' pending and denied keys go; a key with the
    published fingerprint, or anything under an accepted id, stays."""
    minion, genuine = new_id(), generate_public_key_pem()
    impostor, other = generate_public_key_pem(), generate_public_key_pem()
    fingerprint = finger_file(tmp_path, genuine)
    master.add_pending_key(minion, impostor)
    master.add_denied_key(minion, other)
    assert KeyManager(load_master_opts(master.config_file), dry_run=True).drop_impostors(
        minion, fingerprint
    )  # dry run: says so, changes nothing
    assert master.key_state_of(minion) == "minions_pre"
    assert keys.drop_impostors(minion, fingerprint) == tuple(
        salt.utils.crypt.pem_finger(key=pub.encode()) for pub in (impostor, other)
    )
    assert not master.key_path(minion, "minions_pre").exists()
    assert not master.key_path(minion, "minions_denied").exists()

    master.add_pending_key(minion, genuine)  # the published key: never removed
    assert keys.drop_impostors(minion, fingerprint) == ()
    assert master.key_path(minion, "minions_pre").read_text().strip() == genuine

    accepted = new_id()
    master.add_accepted_key(accepted, impostor)
    master.add_denied_key(accepted, other)
    assert keys.drop_impostors(accepted, fingerprint) == ()
    assert master.key_path(accepted, "minions").is_file()
    assert master.key_path(accepted, "minions_denied").is_file()


def test_a_racing_pending_store_over_the_accepted_key_is_undone(master, keys, tmp_path):
    """What Salt's store does when an auth attempt found the id empty before the accept: the
    accepted file deleted, the impostor's pending one written; the bound key comes back."""
    minion, genuine, impostor = new_id(), generate_public_key_pem(), generate_public_key_pem()
    fingerprint = finger_file(tmp_path, genuine)
    master.add_pending_key(minion, impostor)
    assert keys.restore_bound(minion, fingerprint, genuine).outcome is Outcome.ACCEPTED
    assert master.key_path(minion, "minions").read_text().strip() == genuine
    assert not master.key_path(minion, "minions_pre").exists()
    assert keys.restore_bound(minion, fingerprint, genuine).outcome is Outcome.ALREADY_ACCEPTED
    master.key_path(minion, "minions").unlink()  # an operator's salt-key -d: left alone
    assert keys.restore_bound(minion, fingerprint, genuine).outcome is Outcome.NOT_PENDING
    assert master.key_state_of(minion) is None
