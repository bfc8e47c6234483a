"""ArchiveDir: naming and sanitising (hostile topics and ids), the size cap, never overwriting,
permissions, failures that cost no key change; then the real daemon through the moto server."""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aws_ork import defaults
from aws_ork.sqs.archive import (
    DIRECT,
    OTHER_TOPICS,
    Archive,
    file_name,
    safe_component,
    source_folder,
)
from aws_ork.sqs.queue import Message
from tests.daemon import queue_counts, run_aws_ork, send, states, write_config
from tests.messages import envelope, fixture, new_id, notification, sns_launch

#: 2026-11-23 10:15:30.123 UTC
NOW = 1795428930.123
TOPIC = "arn:aws:sns:us-west-2:123456789012:salt-master-asg-events"
SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


class Clock:
    """A clock the test moves: NOW, then a second later at every call (every batch)."""

    def __init__(self, start: float = NOW) -> None:
        self.now = start - 1

    def __call__(self) -> float:
        self.now += 1
        return self.now


def message(body: str, message_id: str = "0b5e3c1a-7d2f-4e8a-9c61-2f0e5d4b3a19") -> Message:
    return Message(message_id=message_id, receipt_handle="r", body=body)


def sns_body(topic_arn: object) -> str:
    doc = envelope(notification("autoscaling:EC2_INSTANCE_LAUNCH", new_id()))
    doc["TopicArn"] = topic_arn
    return json.dumps(doc)


def disk_usage(root: Path) -> tuple[int, int, int]:
    """(bytes of blocks, files, folders) under ``root``, root included, as os.stat says."""
    used, files, folders = os.stat(root).st_blocks * 512, 0, 0
    for path in root.rglob("*"):
        used += os.stat(path, follow_symlinks=False).st_blocks * 512
        files += path.is_file()
        folders += path.is_dir()
    return used, files, folders


def block(root: Path) -> int:
    """What one tiny file costs on this file system (its blocks, at least the 4 KiB floor)."""
    probe = root / ".probe"
    probe.write_bytes(b"x")
    try:
        return max(os.stat(probe).st_blocks * 512, defaults.ARCHIVE_FILE_BYTES)
    finally:
        probe.unlink()


def archived(root: Path) -> dict[str, bytes]:
    """{folder/name: content} of every file in the archive (hidden temp files too)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- naming ---


def test_file_name_is_the_utc_receive_time_then_the_message_id() -> None:
    assert file_name(NOW, "0b5e3c1a-7d2f") == "20261123T101530.123Z-0b5e3c1a-7d2f.json"


@pytest.mark.parametrize(
    ("body", "folder"),
    [
        (sns_body(TOPIC), "salt-master-asg-events"),
        (sns_body("arn:aws:sns:us-west-2:123456789012:../../etc"), "_._.._etc"),
        (sns_body("arn:aws:sns:us-west-2:123456789012:.hidden"), "_hidden"),
        (sns_body("arn:aws:sns:x:1:a/b\\c\0d"), "a_b_c_d"),
        (sns_body(""), "_"),
        (sns_body(["arn:aws:sns:us-west-2:123456789012:list"]), DIRECT),
        (sns_body(None), DIRECT),
        (
            json.dumps(notification("autoscaling:EC2_INSTANCE_LAUNCH", "i-0123456789abcdef0")),
            DIRECT,
        ),
        (json.dumps(fixture("eventbridge-asg-launch-successful")), DIRECT),
        (json.dumps({"Type": "Notification"}), DIRECT),  # no TopicArn: no envelope
        ("not JSON at all", DIRECT),
        ("[1, 2]", DIRECT),
        ("[" * 100_000, DIRECT),
        ('{"Type": "Notification", "TopicArn": "' + "x" * 300_000 + '"}', DIRECT),  # > SQS max
    ],
)
def test_source_folder(body: str, folder: str) -> None:
    assert source_folder(body) == folder


def test_only_allowed_topics_get_a_folder_of_their_own() -> None:
    allowed = [TOPIC]
    assert source_folder(sns_body(TOPIC), allowed) == "salt-master-asg-events"
    for other in (
        "arn:aws:sns:us-west-2:123456789012:made-up",
        TOPIC + "x",
        "",
        "arn:aws:sns:us-west-2:999999999999:salt-master-asg-events",
    ):
        assert source_folder(sns_body(other), allowed) == OTHER_TOPICS
        assert source_folder(sns_body(other), ()) == OTHER_TOPICS
    assert source_folder(sns_body(None), allowed) == DIRECT
    assert source_folder("junk", allowed) == DIRECT


def test_long_names_are_bounded() -> None:
    assert len(source_folder(sns_body("arn:aws:sns:r:1:" + "t" * 256))) == 100
    assert len(file_name(NOW, "m" * 10_000)) == len("20261123T101530.123Z-.json") + 100


@settings(max_examples=300, deadline=None)
@given(topic=st.text(), message_id=st.text())
def test_hostile_topics_and_ids_stay_one_component_inside_the_archive(
    topic: str, message_id: str
) -> None:
    for folder in (
        source_folder(sns_body(f"arn:aws:sns:us-west-2:123456789012:{topic}")),
        source_folder(sns_body(topic)),
        source_folder(topic),
    ):
        name = file_name(NOW, message_id)
        for part in (folder, name):
            assert part and set(part) <= SAFE and not part.startswith(".")
            assert len(part) <= 150
        root = Path("/srv/archive")
        path = root / folder / name
        assert os.path.normpath(path) == str(path)  # no "." or ".." anywhere
        assert path.parent.parent == root and path.parent.name == folder
    assert safe_component(topic, 20) == safe_component(safe_component(topic, 20), 20)


@settings(max_examples=50, deadline=None)
@given(topic=st.text(min_size=1), message_id=st.text(), body_tail=st.text())
def test_hostile_messages_are_saved_byte_for_byte_inside_the_archive(
    topic: str, message_id: str, body_tail: str
) -> None:
    body = sns_body(topic)[:-1] + f', "x": {json.dumps(body_tail, ensure_ascii=False)}}}'
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        archive = Archive(root, 0, clock=Clock())
        archive.save([message(body, message_id), message(body_tail, message_id)])
        archive.close()
        files = archived(root)
        assert sorted(files.values()) == sorted([body.encode(), body_tail.encode()])
        for rel in files:
            assert len(Path(rel).parts) == 2
            assert (root / rel).resolve().is_relative_to(root.resolve())


# --- files on disk ---


def test_bodies_are_saved_per_source_with_private_modes(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    old_umask = os.umask(0)  # the modes are ours, not the umask's
    try:
        archive = Archive(root, 0, [TOPIC], clock=Clock())
        snsbody, raw = sns_body(TOPIC), "caf\u00e9 \u2603 not JSON"
        archive.save([message(snsbody, "m-1"), message(raw, "m-2")])
    finally:
        os.umask(old_umask)
    assert archived(root) == {
        "direct/20261123T101530.123Z-m-2.json": raw.encode("utf-8"),
        "salt-master-asg-events/20261123T101530.123Z-m-1.json": snsbody.encode(),
    }
    for path in (root, root / "direct", root / "salt-master-asg-events"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in root.rglob("*.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert archive.total == disk_usage(root)[0]
    assert (archive.saved, archive.failed) == (2, 0)


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    taken = root / DIRECT / file_name(NOW, "m-1")
    taken.parent.mkdir(parents=True)
    taken.write_text("there first")
    archive = Archive(root, 0, clock=Clock())
    archive.save([message("new", "m-1")])
    assert taken.read_text() == "there first"
    assert (taken.parent / taken.name.replace(".json", ".1.json")).read_text() == "new"


def test_a_message_delivered_twice_is_saved_twice(tmp_path: Path) -> None:
    archive = Archive(tmp_path, 0, clock=Clock())
    twice = message("same body", "same-id")
    archive.save([twice])
    archive.save([twice])
    assert archived(tmp_path) == {
        "direct/20261123T101530.123Z-same-id.json": b"same body",
        "direct/20261123T101531.123Z-same-id.json": b"same body",
    }


def test_the_cap_removes_the_oldest_files_first_across_folders(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    one = block(tmp_path)
    base = disk_usage(root)[0]
    # the root, one folder and two files fit; a third file does not, nor a second folder
    # with two files
    probe = Archive(root, 0, [TOPIC], clock=Clock())
    probe.save([message("a", "probe")])
    folder = probe.total - base - one
    probe.close()
    (root / DIRECT / file_name(NOW, "probe")).unlink()
    cap = base + folder + 2 * one + one // 2
    archive = Archive(root, cap, [TOPIC], clock=Clock())
    archive.save([message("a" * 10, "1"), message("b" * 10, "2")])
    archive.save([message("c" * 10, "3")])  # over the cap: the oldest ("1") goes
    assert sorted(archived(root).values()) == [b"b" * 10, b"c" * 10]
    archive.save([message(sns_body(TOPIC), "4")])  # another folder too: the older files go
    assert list(archived(root)) == ["salt-master-asg-events/20261123T101532.123Z-4.json"]
    assert archive.total == disk_usage(root)[0] <= cap


def test_tiny_bodies_count_what_they_cost_the_disk_and_the_file_count_is_capped(
    tmp_path: Path,
) -> None:
    """1-byte bodies from made-up topics: each file costs a block, not a byte; they share one
    folder; the cap bounds the disk usage as os.stat measures it, and the number of files."""
    root = tmp_path / "archive"
    cap = 64 * block(tmp_path)
    archive = Archive(root, cap, [TOPIC], clock=Clock())
    for batch in range(30):
        archive.save(
            [
                message(
                    sns_body(f"arn:aws:sns:us-west-2:666666666666:t{batch}-{n}"), f"{batch}-{n}"
                )
                for n in range(10)
            ]
        )
        used, files, folders = disk_usage(root)
        assert used <= cap and archive.total == used
        assert files <= cap // defaults.ARCHIVE_FILE_BYTES
        assert folders == 1
    assert [p.name for p in root.iterdir()] == [OTHER_TOPICS]
    assert archive.max_files == cap // defaults.ARCHIVE_FILE_BYTES


def test_start_up_rescans_counts_trims_and_cleans_up(tmp_path: Path) -> None:
    clock = Clock()
    first = Archive(tmp_path, 0, clock=clock)
    first.save([message(str(n) * 10, f"m{n}") for n in range(5)])
    first.close()
    (tmp_path / DIRECT / ".0123abcd.tmp").write_text("a write cut short")
    (tmp_path / DIRECT / "README").write_text("not ours: never counted nor removed")
    (tmp_path / "notes.txt").write_text("not ours either")
    # a folder per made-up topic, as an older version made them
    made_up = tmp_path / "made-up-topic"
    made_up.mkdir()
    (made_up / file_name(NOW - 10, "old")).write_text("from an older version")

    again = Archive(tmp_path, 0, clock=clock)
    assert not (tmp_path / DIRECT / ".0123abcd.tmp").exists()
    foreign = sum(
        os.stat(p).st_blocks * 512 for p in (tmp_path / DIRECT / "README", tmp_path / "notes.txt")
    )
    assert again.total == disk_usage(tmp_path)[0] - foreign
    again.close()

    smaller = Archive(tmp_path, again.total - 2 * block(tmp_path), clock=clock)
    assert smaller.total == disk_usage(tmp_path)[0] - foreign
    assert not made_up.exists()  # its file was the oldest; the empty folder went with it
    assert sorted(archived(tmp_path).values()) == sorted(
        [
            b"1" * 10,
            b"2" * 10,
            b"3" * 10,
            b"4" * 10,
            b"not ours: never counted nor removed",
            b"not ours either",
        ]
    )


# --- failures and symlinks ---


def test_a_failed_write_is_one_error_line_and_no_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = Archive(tmp_path, 0, [TOPIC], clock=Clock())
    (tmp_path / DIRECT).write_text("a file where the folder should be")
    with caplog.at_level(logging.ERROR):
        archive.save([message("x", "m-1"), message("y", "m-2"), message(sns_body(TOPIC), "m-3")])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "2 messages not archived" in errors[0]
    assert (archive.saved, archive.failed) == (1, 2)
    assert list(archived(tmp_path)) == [
        "direct",
        "salt-master-asg-events/20261123T101530.123Z-m-3.json",
    ]


def test_a_planted_symlink_is_never_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, outside = tmp_path / "archive", tmp_path / "outside"
    outside.mkdir()
    archive = Archive(root, 0, clock=Clock())
    (root / DIRECT).symlink_to(outside)
    with caplog.at_level(logging.ERROR):
        archive.save([message("x", "m-1")])
    assert list(outside.iterdir()) == []
    assert archive.failed == 1 and "not archived" in caplog.text
    link = tmp_path / "link"
    link.symlink_to(outside)
    with pytest.raises(OSError, match="symlink"):
        Archive(link, 0)


# --- the daemon, through the moto server and a real salt-master ---


def archive_conf(tmp_path: Path, queue_url: str, master, archive: Path, **options):
    return write_config(
        tmp_path / "aws_ork.conf",
        queue_url=queue_url,
        master=master,
        ArchiveDir=archive,
        AllowedTopicArns=TOPIC,
        **options,
    )


def by_folder(root: Path) -> dict[str, Counter[bytes]]:
    out: dict[str, Counter[bytes]] = {}
    for rel, data in archived(root).items():
        out.setdefault(rel.split("/")[0], Counter())[data] += 1
    return out


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_daemon_archives_every_body_byte_for_byte(
    tmp_path, master, sqs, queue_url, dry_run
) -> None:
    launched = new_id()
    master.add_pending_key(launched)
    snsbody = sns_launch(launched)
    raw = json.dumps(notification("autoscaling:EC2_INSTANCE_LAUNCH", new_id()), indent=1)
    junk = "not JSON: caf\u00e9 \u2603 \U0001f600"
    send(sqs, queue_url, snsbody, raw, junk)
    root = tmp_path / "archive"

    result = run_aws_ork(
        archive_conf(tmp_path, queue_url, master, root),
        "--once",
        *(["--dry-run"] if dry_run else []),
    )

    assert result.returncode == 0, result.stderr
    assert by_folder(root) == {
        "salt-master-asg-events": Counter([snsbody.encode()]),
        DIRECT: Counter([raw.encode(), junk.encode()]),
    }
    assert all(len(Path(rel).parts) == 2 for rel in archived(root))
    assert states(master, launched) == {launched: "minions_pre" if dry_run else "minions"}
    if not dry_run:
        assert queue_counts(sqs, queue_url) == (0, 0)


def test_daemon_handles_messages_it_cannot_archive(tmp_path, master, sqs, queue_url) -> None:
    launched = new_id()
    master.add_pending_key(launched)
    root = tmp_path / "archive"
    root.mkdir(mode=0o700)
    (root / "salt-master-asg-events").write_text("a file where the folder should be")
    send(sqs, queue_url, sns_launch(launched))

    result = run_aws_ork(archive_conf(tmp_path, queue_url, master, root), "--once")

    assert result.returncode == 0, result.stderr
    assert states(master, launched) == {launched: "minions"}
    assert queue_counts(sqs, queue_url) == (0, 0)
    assert result.stderr.count("not archived") == 1
    assert list(root.iterdir()) == [root / "salt-master-asg-events"]


def test_daemon_refuses_to_start_on_an_archive_dir_that_is_a_symlink(
    tmp_path, master, queue_url
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    result = run_aws_ork(archive_conf(tmp_path, queue_url, master, tmp_path / "link"), "--once")
    assert result.returncode == 1
    assert "ArchiveDir" in result.stderr and "symlink" in result.stderr


def test_daemon_caps_the_disk_and_the_folders_for_tiny_bodies_from_made_up_topics(
    tmp_path, master, sqs, queue_url
) -> None:
    """400 tiny messages: 1-byte bodies and envelopes from 200 made-up topics. With
    ArchiveMaxMB = 1 the archive's blocks (os.stat) stay within 1 MB, the files within
    1 MB / 4 KiB, and the made-up topics share one folder."""
    root = tmp_path / "archive"
    bodies = []
    for n in range(200):
        bodies.append("x")
        bodies.append(sns_body(f"arn:aws:sns:us-west-2:666666666666:made-up-{n}"))
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": body}
                for i, body in enumerate(bodies[start : start + 10])
            ],
        )

    result = run_aws_ork(
        archive_conf(tmp_path, queue_url, master, root, ArchiveMaxMB=1), "--once", timeout=300
    )

    assert result.returncode == 0, result.stderr
    assert queue_counts(sqs, queue_url) == (0, 0)  # every message was received (and archived)
    used, files, folders = disk_usage(root)
    assert used <= 1024 * 1024, used
    assert 0 < files <= 1024 * 1024 // defaults.ARCHIVE_FILE_BYTES
    assert sorted(p.name for p in root.iterdir()) == [DIRECT, OTHER_TOPICS]
