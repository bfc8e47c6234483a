"""What ``--restore`` decides to write from a bucket listing, before any S3 read or disk write.

Fast unit tests of :func:`aws_ork.mirror.restore.plan_restore` (a pure function of the object
keys): no moto, no Salt, no files. What the writes then do on disk (links, modes, symlinks in
PkiDir) is tested through the real CLI and S3 in ``tests/test_restore.py``.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from aws_ork.mirror.restore import Refusal, Skip, Skipped, plan_restore, safe_relpath

UNSAFE = ["../etc/cron.d/evil", "/etc/passwd", "a//b", "a/./b", "a/../b", "a/", "x\0y", ".", ""]


def test_unsafe_keys_are_refused_and_only_safe_ones_written() -> None:
    plan = plan_restore(["master/master.pem", *UNSAFE])
    assert plan.writes == ("master/master.pem",)
    assert plan.refused == [Refusal(rel, "not a safe relative path") for rel in sorted(UNSAFE)]


def test_aws_ork_own_objects_are_neither_written_nor_refused() -> None:
    """The StateDir memories in the bucket are restored into StateDir, never into PkiDir."""
    plan = plan_restore([".aws_ork/replay/ids", ".aws_ork/../../x", "master/master.pem"])
    assert plan.writes == ("master/master.pem",)
    assert plan.skipped == ()


def test_pending_denied_keys_and_autosign_stubs_are_left_out_not_refused() -> None:
    """An old bucket may hold them; a restored copy would look fresh and could re-accept a
    long-gone instance's id."""
    plan = plan_restore(
        [
            "master/minions/i-1",
            "master/minions_pre/i-2",
            "master/minions_denied/i-3",
            "master/minions_autosign/i-4",
            "master/minions_autosign/i-5",
        ]
    )
    assert plan.writes == ("master/minions/i-1",)
    assert plan.refused == []
    assert (plan.stubs_dropped, plan.keys_dropped) == (2, 2)
    assert Skipped("master/minions_autosign/i-4", Skip.STUB) in plan.skipped
    assert Skipped("master/minions_pre/i-2", Skip.UNMIRRORED_KEY) in plan.skipped


def test_a_key_that_is_also_a_directory_is_refused() -> None:
    """A file there would be the directory the other objects are written under."""
    plan = plan_restore(["master/minions", "master/minions/i-1", "master/master.pem"])
    assert plan.writes == ("master/master.pem", "master/minions/i-1")
    assert plan.refused == [Refusal("master/minions", "also the directory of other objects")]


def test_directories_parents_first_private_where_a_pem_is() -> None:
    """0700 for a directory holding a private key (a pki_dir, as Salt keeps it), else 0755."""
    plan = plan_restore(
        ["master/master.pem", "master/minions/i-1", "minion/minion.pem", "a/b/c/d", "top"]
    )
    assert plan.directories == (
        ("a", 0o755),
        ("master", 0o700),
        ("minion", 0o700),
        ("a/b", 0o755),
        ("master/minions", 0o755),
        ("a/b/c", 0o755),
    )


def test_nothing_to_write() -> None:
    assert plan_restore([]).writes == ()
    assert plan_restore(["master/minions_pre/i-1", "../x"]).writes == ()


_parts = st.sampled_from(["a", "b", "k.pem", "minions_pre", "minions_autosign", ".aws_ork", ".."])
_keys = st.lists(st.lists(_parts, min_size=1, max_size=4).map("/".join), max_size=12, unique=True)


@settings(max_examples=300, deadline=None)
@given(keys=_keys, seed=st.integers())
def test_property_every_key_written_or_skipped_once_and_order_free(
    keys: list[str], seed: int
) -> None:
    plan = plan_restore(keys)
    shuffled = list(keys)
    random.Random(seed).shuffle(shuffled)
    assert plan_restore(shuffled) == plan  # the listing's order changes nothing

    considered = {key for key in keys if not key.startswith(".aws_ork/")}
    decided = list(plan.writes) + [s.rel for s in plan.skipped]
    assert sorted(decided) == sorted(considered)  # each exactly once
    assert list(plan.writes) == sorted(plan.writes)
    assert all(safe_relpath(rel) for rel in plan.writes)
    dirs = [d for d, _ in plan.directories]
    assert not set(plan.writes) & set(dirs)  # no file where a directory goes
    for rel in plan.writes:
        parent = rel.rpartition("/")[0]
        assert not parent or parent in dirs  # every file's directory is made first
    for n, d in enumerate(dirs):
        parent = d.rpartition("/")[0]
        assert not parent or parent in dirs[:n]  # parents before children
