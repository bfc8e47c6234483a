"""The key-directory watcher: Salt's own key changes (autosign, salt-key) reach the mirror."""

from __future__ import annotations

from aws_ork.base.saltkeys import KeyLocation
from aws_ork.keys.watcher import KeyDirWatcher

ID = "i-0123456789abcdef0"


def pki(tmp_path):
    for name in (
        "minions",
        "minions_pre",
        "minions_rejected",
        "minions_denied",
        "minions_autosign",
    ):
        (tmp_path / name).mkdir()
    return tmp_path


def test_a_used_up_stub_is_named_even_when_other_keys_changed_in_the_same_cycle(tmp_path):
    root = pki(tmp_path)
    (root / "minions_autosign" / ID).touch()
    watcher = KeyDirWatcher(KeyLocation(root))
    watcher.expect(ID)
    assert not watcher.poll().changed

    # Salt accepts the minion through its stub while aws_ork accepts another key
    (root / "minions_autosign" / ID).unlink()
    (root / "minions" / ID).write_text("pub")
    (root / "minions" / "i-0fedcba9876543210").write_text("pub")

    change = watcher.poll()
    assert (change.changed, change.consumed) == (True, [ID])
    assert watcher.expected == frozenset()


def test_a_stub_still_waiting_is_not_reported_and_survives_a_reload(tmp_path):
    root = pki(tmp_path)
    (root / "minions_autosign" / ID).touch()
    watcher = KeyDirWatcher(KeyLocation(root))
    watcher.expect(ID)
    (root / "minions_pre" / "i-0fedcba9876543210").write_text("pub")  # someone else's key

    change = watcher.poll()
    assert (change.changed, change.consumed) == (True, [])

    watcher.reload({"pki_dir": str(root)})  # SIGHUP
    assert watcher.expected == frozenset({ID})
    (root / "minions_autosign" / ID).unlink()
    (root / "minions" / ID).write_text("pub")
    assert watcher.poll().consumed == [ID]
