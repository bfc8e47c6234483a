"""What differs between Salt lines (aws_ork/keys/saltcompat.py), on the Salt of this tox env.

Run on every supported line (marked ``saltline`` in conftest.SALTLINE): on Salt 3006 and 3007
``salt.key.Key`` has no key cache, and aws_ork's stand-in must read and write the pki exactly
as Salt does; on 3008 the stand-in must agree with Salt's own ``localfs_key`` driver.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from aws_ork import cli
from aws_ork.base.errors import ConfigError
from aws_ork.base.saltkeys import KeyLocation
from aws_ork.keys import saltcompat
from aws_ork.keys.manager import KeyManager, load_master_opts
from aws_ork.keys.saltcompat import KeyFiles
from tests.daemon import write_config
from tests.saltenv import SALT_RELEASE, SaltMaster, generate_public_key_pem

IDS = {
    "i-0c0c0c0c0c0c0c0c1": "minions_pre",
    "i-0c0c0c0c0c0c0c0c2": "minions",
    "i-0c0c0c0c0c0c0c0c3": "minions_rejected",
    "i-0c0c0c0c0c0c0c0c4": "minions_denied",
}


def salt_key(master: SaltMaster) -> Any:
    import salt.key

    return salt.key.Key(load_master_opts(master.config_file))


def test_the_key_files_agree_with_salts_own_reading_of_the_pki(master: SaltMaster) -> None:
    """KeyFiles (the stand-in for Salt 3006/3007) reads each state as Salt reads it: 3008's
    ``Key.list_match`` and key cache, or 3006/3007's ``Key.list_keys`` of the directories."""
    master.clear_keys()
    pubs = {minion_id: generate_public_key_pem() for minion_id in IDS}
    for minion_id, state in IDS.items():
        master._add_key(minion_id, state, pubs[minion_id])
    master.add_accepted_key("i-0c0c0c0c0c0c0c0c4")  # denied behind an accepted key
    key = salt_key(master)
    files = KeyFiles(KeyLocation.from_opts(key.opts))
    ours = files.list_match(list(IDS))
    if saltcompat.has_key_cache(key):
        theirs = key.list_match(list(IDS))
    else:
        theirs = {state: [i for i in names if i in IDS] for state, names in key.list_keys().items()}
    assert {s: sorted(n) for s, n in ours.items() if n} == {
        s: sorted(n) for s, n in theirs.items() if n
    }
    assert files.fetch("keys", "i-0c0c0c0c0c0c0c0c1") == {
        "state": "pending",
        "pub": pubs["i-0c0c0c0c0c0c0c0c1"].strip(),
    }
    assert files.fetch("denied_keys", "i-0c0c0c0c0c0c0c0c4") == [
        pubs["i-0c0c0c0c0c0c0c0c4"].strip()
    ]
    assert files.fetch("keys", "i-0c0c0c0c0c0c0c0c9") is None


def test_a_key_stored_through_the_key_files_is_what_salt_key_lists(master: SaltMaster) -> None:
    master.clear_keys()
    minion_id = "i-0c0c0c0c0c0c0c0d1"
    pub = master.add_pending_key(minion_id).read_text()
    files = KeyFiles(KeyLocation.from_opts(load_master_opts(master.config_file)))
    files.store("keys", minion_id, {"state": "accepted", "pub": pub})
    states = master.key_states()
    assert minion_id in states["minions"] and minion_id not in states["minions_pre"]
    assert files.flush("keys", minion_id) is True
    assert minion_id not in master.key_states()["minions"]


def test_the_key_manager_accepts_and_deletes_through_this_salts_api(master: SaltMaster) -> None:
    """The key stage on this line: exact accept and delete, seen by salt-key."""
    master.clear_keys()
    minion_id = "i-0c0c0c0c0c0c0c0d2"
    master.add_pending_key(minion_id)
    manager = KeyManager(load_master_opts(master.config_file))
    try:
        assert manager.accept(minion_id).changed
        assert minion_id in master.key_states()["minions"]
        assert manager.delete(minion_id).changed
        assert minion_id not in master.key_states()["minions"]
    finally:
        manager.close()


def test_a_public_key_is_valid_as_salt_loads_it() -> None:
    assert saltcompat.valid_public_key(generate_public_key_pem())
    assert not saltcompat.valid_public_key("-----BEGIN PUBLIC KEY-----\nnot a key\n")
    assert not saltcompat.valid_public_key("")


@pytest.mark.parametrize(
    ("release", "refused"),
    [((3005, 1), True), ((3006, 0), True), ((3006, 26), True), ((3006, 27), False)]
    + [((3007, 0), False), ((3008, 4), False), ((3009, 0), False)],
)
def test_a_salt_older_than_3006_27_is_refused(release: tuple[int, int], refused: bool) -> None:
    refusal = saltcompat.release_refusal(release)
    assert (refusal is not None) == refused
    if refused:
        assert f"Salt {release[0]}.{release[1]} is older than 3006.27" in str(refusal)


def test_a_salt_newer_than_the_tested_lines_is_warned_about() -> None:
    assert saltcompat.release_warnings((3008, 9), {}) == []
    (warning,) = saltcompat.release_warnings((3009, 0), {})
    assert "newer than the releases aws_ork is tested with" in warning


def test_too_old_a_salt_exits_2_at_start(
    master: SaltMaster, tmp_path: Path, queue_url: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The start refuses a Salt older than 3006.27 (the release is read from salt.version;
    here it is made to say 3005.1), naming Salt's release; --check FAILs with exit 2."""
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=master)
    monkeypatch.setattr(saltcompat, "salt_release", lambda: (3005, 1))
    with pytest.raises(ConfigError, match="Salt 3005.1 is older than 3006.27"):
        load_master_opts(master.config_file)
    assert cli.main(["-c", str(conf), "--once"]) == 2
    assert "Salt 3005.1 is older than 3006.27" in capsys.readouterr().err
    assert cli.main(["-c", str(conf), "--check"]) == 2
    assert "FAIL salt release: Salt 3005.1 is older than 3006.27" in capsys.readouterr().out


def test_cluster_id_counts_only_where_salt_has_clusters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Salt 3007 and later keep a cluster's keys in cluster_pki_dir; 3006 ignores cluster_id
    and keeps them in pki_dir, and aws_ork says so at start (a WARNING)."""
    opts = {
        "pki_dir": str(tmp_path / "pki"),
        "cluster_id": "c1",
        "cluster_pki_dir": str(tmp_path / "cluster"),
    }
    has_clusters = SALT_RELEASE >= (3007, 0)
    expected = tmp_path / ("cluster" if has_clusters else "pki")
    assert KeyLocation.from_opts(opts).key_dir == expected
    warnings = saltcompat.release_warnings(SALT_RELEASE, opts)
    assert any("has no master cluster" in w for w in warnings) == (not has_clusters)
    assert saltcompat.release_warnings((3006, 27), opts)
    assert not saltcompat.release_warnings((3007, 16), opts)


def test_the_start_warns_about_cluster_id_on_salt_3006(
    master: SaltMaster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = {**load_master_opts(master.config_file), "cluster_id": "c1"}
    monkeypatch.setattr(saltcompat, "salt_release", lambda: (3006, 27))
    with caplog.at_level(logging.WARNING, logger="aws_ork"):
        KeyManager(opts, dry_run=True).close()
    assert "Salt 3006 has no master cluster" in caplog.text
