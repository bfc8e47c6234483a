"""``--restore`` against a hostile bucket: whoever can write it gets nothing outside PkiDir.

Through the moto server's S3 and the real CLI (a subprocess): objects put with boto3 and
the metadata the mirror uses (``mode``, ``type: symlink``); then a hypothesis property over
random keys, link targets and links already on disk, on :func:`restore` with a fake bucket.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aws_ork.base.errors import MirrorError
from aws_ork.mirror.bucket import Download
from aws_ork.mirror.restore import link_destination, restore, safe_mode
from tests.daemon import run_aws_ork

EVIL = b"* * * * * root touch /tmp/pwned\n"


def put(
    s3: Any,
    bucket: str,
    rel: str,
    body: bytes | str,
    *,
    mode: str | None = "0644",
    link: bool = False,
) -> None:
    metadata = {} if mode is None else {"mode": mode}
    if link:
        metadata["type"] = "symlink"
    s3.put_object(
        Bucket=bucket,
        Key=f"pki/{rel}",
        Body=body.encode() if isinstance(body, str) else body,
        Metadata=metadata,
    )


def config(tmp_path: Path, bucket: str, pki: Path) -> Path:
    conf = tmp_path / "c.conf"
    conf.write_text(
        f"[aws_ork]\nBucketUrl = s3://{bucket}/pki/\nPkiDir = {pki}\n"
        f"StateDir = {tmp_path / 'state'}\n"
    )
    return conf


def entries(top: Path) -> set[str]:
    """Everything under top (files, directories, links), links not followed."""
    found = set()
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            found.add(Path(dirpath, name).relative_to(top).as_posix())
    return found


def links_in(root: Path) -> dict[str, str]:
    return {rel: os.readlink(root / rel) for rel in entries(root) if (root / rel).is_symlink()}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def refused_count(stdout: str) -> int:
    line = next(line for line in stdout.splitlines() if "objects refused" in line)
    return int(line.split()[0])


# --- the attack of the issue: two links that reach out through each other, then --force ----------


def test_links_chained_out_of_pki_are_refused_and_force_writes_nothing_outside(
    tmp_path, s3, bucket
):
    etc = tmp_path / "etc"
    pki = etc / "salt" / "pki"  # d/X would be etc: d/X/cron.d/evil -> etc/cron.d/evil
    put(s3, bucket, "master/master.pub", "pub")
    put(s3, bucket, "d/e1/e2/S1", "../..", link=True)
    put(s3, bucket, "d/X", "e1/e2/S1/../../..", link=True)
    conf = config(tmp_path, bucket, pki)

    first = run_aws_ork(conf, "--restore")

    assert first.returncode == 1, first.stdout + first.stderr
    assert refused_count(first.stdout) == 2
    assert "restored 1 files" in first.stdout
    assert first.stderr.count("WARNING") == 2
    assert "'d/X'" in first.stderr and "'e1/e2/S1/../../..'" in first.stderr
    assert links_in(pki) == {}
    assert (pki / "master" / "master.pub").read_text() == "pub"

    put(s3, bucket, "d/X/cron.d/evil", EVIL)
    forced = run_aws_ork(conf, "--restore", "--force")

    assert forced.returncode == 1, forced.stdout + forced.stderr
    assert refused_count(forced.stdout) == 2  # S1 again; X is now also a directory
    assert entries(etc) - {"salt"} == {f"salt/pki/{rel}" for rel in entries(pki)} | {"salt/pki"}
    assert not (etc / "cron.d").exists()
    assert links_in(pki) == {}
    evil = pki / "d" / "X" / "cron.d" / "evil"  # inside PkiDir, through real directories
    assert evil.read_bytes() == EVIL and not evil.is_symlink()


@pytest.mark.parametrize("on_disk", ["absolute", "chain"])
def test_force_does_not_write_through_links_already_in_pki(tmp_path, s3, bucket, on_disk):
    """Links on disk (put there by hand, or by a restore before this fix) are never followed:
    the objects below them are refused."""
    etc = tmp_path / "etc"
    outside = etc / "outside"
    outside.mkdir(parents=True)
    pki = etc / "salt" / "pki"
    pki.mkdir(parents=True)
    if on_disk == "absolute":
        (pki / "master").symlink_to(outside)
        below = ["master/minions/i-0123456789abcdef0", "master/master.pem", "master/cron.d/evil"]
    else:  # what the restore before this fix left from the two-link bucket
        (pki / "d" / "e1" / "e2").mkdir(parents=True)
        (pki / "d" / "e1" / "e2" / "S1").symlink_to("../..")
        (pki / "d" / "X").symlink_to("e1/e2/S1/../../../outside")
        below = ["d/X/cron.d/evil", "d/X/evil"]
    before = links_in(pki)
    for rel in below:
        put(s3, bucket, rel, EVIL)
    put(s3, bucket, "minion/minion.pub", "pub")
    conf = config(tmp_path, bucket, pki)

    refused = run_aws_ork(conf, "--restore")  # the link counts as content: --force needed
    assert refused.returncode == 2, refused.stdout + refused.stderr

    forced = run_aws_ork(conf, "--restore", "--force")

    assert forced.returncode == 1, forced.stdout + forced.stderr
    assert refused_count(forced.stdout) == len(below)
    assert "in PkiDir is a symlink" in forced.stderr
    assert entries(outside) == set()
    assert links_in(pki) == before  # left alone, not followed
    assert (pki / "minion" / "minion.pub").read_text() == "pub"
    assert "restored 1 files" in forced.stdout


# --- symlink objects ------------------------------------------------------------------------------


def test_link_targets_that_leave_pki_or_name_no_restored_file_are_refused(tmp_path, s3, bucket):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.pem").write_text("theirs")
    pki = tmp_path / "pki"
    put(s3, bucket, "master/aws.pem", "key", mode="0400")
    put(s3, bucket, "master/master.pem", "aws.pem", link=True)  # Salt 3008: restored
    put(s3, bucket, "minion/master.pem", "../master/aws.pem", link=True)  # in tree: restored
    hostile = {
        "master/abs.pem": str(outside / "x.pem"),  # absolute
        "master/up.pem": "../../outside/x.pem",  # .. out of PkiDir
        "master/deep.pem": "../" * 12 + "etc/passwd",
        "master/back.pem": "aws.pem/../../../outside/x.pem",  # .. after a name
        "master/dot.pem": "./aws.pem",
        "master/chain.pem": "master.pem",  # a link to a link
        "master/missing.pem": "nothere.pem",  # no such object
        "master/dir.pem": "../master",  # a directory
        "master/empty.pem": "",
    }
    for rel, target in hostile.items():
        put(s3, bucket, rel, target, link=True)
    put(s3, bucket, "master/bytes.pem", b"\xff\xfe", link=True)  # not UTF-8
    conf = config(tmp_path, bucket, pki)

    result = run_aws_ork(conf, "--restore")

    assert result.returncode == 1, result.stdout + result.stderr
    assert refused_count(result.stdout) == len(hostile) + 1
    assert result.stderr.count("WARNING") == len(hostile) + 1
    assert "is absolute" in result.stderr and "leaves PkiDir" in result.stderr
    assert "not a file restored with it" in result.stderr
    assert links_in(pki) == {
        "master/master.pem": "aws.pem",
        "minion/master.pem": "../master/aws.pem",
    }
    assert (pki / "master" / "master.pem").read_text() == "key"
    assert entries(pki) == {
        "master",
        "minion",
        "master/aws.pem",
        "master/master.pem",
        "minion/master.pem",
    }
    assert (outside / "x.pem").read_text() == "theirs"
    assert "restored 3 files" in result.stdout


def test_a_link_over_a_local_file_replaces_it_and_does_not_write_through_it(tmp_path, s3, bucket):
    """With --force a local symlink where the mirror has a file is replaced by the file."""
    outside = tmp_path / "outside.pem"
    outside.write_text("theirs")
    pki = tmp_path / "pki"
    (pki / "master").mkdir(parents=True)
    (pki / "master" / "master.pem").symlink_to(outside)
    put(s3, bucket, "master/master.pem", "ours", mode="0400")
    result = run_aws_ork(config(tmp_path, bucket, pki), "--restore", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert outside.read_text() == "theirs"
    assert not (pki / "master" / "master.pem").is_symlink()
    assert (pki / "master" / "master.pem").read_text() == "ours"


# --- modes ----------------------------------------------------------------------------------------


def test_modes_are_clamped_never_setuid_or_writable_by_others(tmp_path, s3, bucket):
    pki = tmp_path / "pki"
    stored = {
        "master/evil.pem": ("4777", 0o600),
        "master/ro.pem": ("0400", 0o400),
        "master/wo.pem": ("0200", 0o600),
        "master/minions/i-0123456789abcdef0": ("0666", 0o644),
        "master/minions/i-0fedcba9876543210": ("1777", 0o644),
        "master/tool": ("6755", 0o644),
        "master/master.pub": ("0644", 0o644),
        "master/none": (None, 0o600),
    }
    for rel, (mode, _) in stored.items():
        put(s3, bucket, rel, "x", mode=mode)

    result = run_aws_ork(config(tmp_path, bucket, pki), "--restore")

    assert result.returncode == 0, result.stdout + result.stderr  # clamped, not refused
    assert {rel: mode_of(pki / rel) for rel in stored} == {
        rel: want for rel, (_, want) in stored.items()
    }
    assert "5 file modes clamped" in result.stdout
    assert result.stderr.count("clamped to") == 5
    assert mode_of(pki) == 0o700 and mode_of(pki / "master") == 0o700
    assert mode_of(pki / "master" / "minions") == 0o755


def test_safe_mode() -> None:
    assert safe_mode("k.pem", 0o4777) == 0o600
    assert safe_mode("k.pem", 0o000) == 0o400
    assert safe_mode("k.pem", None) == 0o600
    assert safe_mode("minions/i-1", 0o666) == 0o644
    assert safe_mode("minions/i-1", 0o7777) == 0o644
    assert safe_mode("minions/i-1", None) == 0o600


def test_link_destination() -> None:
    assert link_destination("master/master.pem", "aws.pem") == "master/aws.pem"
    assert link_destination("a/b/l", "../../x") == "x"
    assert link_destination("a/b/l", "../../../x") is None
    assert link_destination("a/l", "/etc/passwd") is None
    assert link_destination("a/l", "b/../x") is None
    assert link_destination("a/l", "..") is None
    assert link_destination("a/l", "./x") is None
    assert link_destination("a/l", "x/") is None
    assert link_destination("a/l", "x\0") is None


# --- property: whatever the bucket and the disk hold, nothing is written outside PkiDir ---------

OUT = "@OUT"  # stands for the absolute path of the directory outside PkiDir
_names = st.sampled_from(["a", "b", "k.pem", "X", "..", ".", ""])
_rels = st.lists(_names, min_size=1, max_size=4).map("/".join)
_targets = st.one_of(
    _rels,
    _rels.map(lambda rel: "/" + rel),
    st.sampled_from(
        [
            OUT,
            OUT + "/k.pem",
            "../outside",
            "../../outside",
            "../../../outside",
            "X/../..",
            "a/X/../../..",
            "../k.pem",
            "k.pem",
        ]
    ),
)
_objects = st.dictionaries(
    _rels,
    st.one_of(
        st.tuples(st.just("file"), st.integers(0, 0o7777)), st.tuples(st.just("link"), _targets)
    ),
    max_size=8,
)
_on_disk = st.dictionaries(
    st.sampled_from(["a", "X", "a/b", "a/X", "b/k.pem"]),
    st.sampled_from([OUT, "../outside", "../../outside", "..", "a"]),
    max_size=3,
)


class FakeTree:
    """The bucket as restore reads it: a dict of {key: ("file", mode) | ("link", target)}."""

    target = "s3://fake/pki/"

    def __init__(self, objects: dict[str, tuple[str, Any]], outside: Path) -> None:
        self.objects = objects
        self.outside = str(outside)

    def list(self) -> dict[str, str]:
        return {rel: "etag" for rel in self.objects}

    def get(self, relpath: str) -> Download:
        kind, value = self.objects[relpath]
        if kind == "link":
            return Download(value.replace(OUT, self.outside).encode(), 0o777, symlink=True)
        return Download(EVIL, value)


def _restore(tree: FakeTree, pki: Path) -> None:
    try:
        restore(tree, pki, force=True)
    except MirrorError as exc:
        assert "no objects to restore" in str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=_objects, second=_objects, on_disk=_on_disk)
def test_property_nothing_is_written_outside_pki(
    first: dict[str, tuple[str, Any]], second: dict[str, tuple[str, Any]], on_disk: dict[str, str]
) -> None:
    with tempfile.TemporaryDirectory() as td:
        top = Path(td)
        pki, outside = top / "pki", top / "outside"
        outside.mkdir()
        pki.mkdir()
        for rel, target in on_disk.items():
            path = pki / rel
            if path.parent.is_symlink() or os.path.lexists(path):
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target.replace(OUT, str(outside)))
        old_links = links_in(pki)

        # a first restore, then one with --force on what it left (the two-step attack)
        _restore(FakeTree(first, outside), pki)
        _restore(FakeTree({**first, **second}, outside), pki)

        assert entries(top) - {"pki", "outside"} == {f"pki/{rel}" for rel in entries(pki)}
        assert entries(outside) == set()
        real_pki = os.path.realpath(pki)
        for rel in entries(pki):
            path = pki / rel
            if path.is_symlink():
                if old_links.get(rel) == os.readlink(path):
                    continue  # there before: left alone
                real = os.path.realpath(path)
                assert real.startswith(real_pki + os.sep) and os.path.isfile(real), rel
                assert not os.readlink(path).startswith("/")
            else:
                assert os.path.realpath(path) == os.path.join(real_pki, rel)
                mode = mode_of(path)
                assert not mode & 0o7022, (rel, oct(mode))
                if path.is_file() and rel.endswith(".pem"):
                    assert mode in (0o400, 0o600)
