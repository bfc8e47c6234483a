"""The S3 mirror in-process against the moto server: content, deletions, ACL, failures."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from aws_ork.config import BucketUrl
from aws_ork.errors import MirrorError
from aws_ork.syncer import S3Mirror
from tests.daemon import bucket_objects, tree_md5s


def make_tree(root: Path) -> None:
    (root / "master" / "minions").mkdir(parents=True)
    (root / "master" / "master.pub").write_text("pub")
    (root / "master" / "minions" / "i-0123456789abcdef0").write_text("key0")


@pytest.fixture
def mirror(tmp_path, bucket):
    client = boto3.client("s3", region_name="us-west-2")
    sent: list[dict] = []
    client.meta.events.register("provide-client-params.s3.PutObject",
                                lambda params, **_: sent.append(dict(params)))
    make_tree(tmp_path / "pki")
    syncer = S3Mirror(client, BucketUrl(bucket, "pki/"), tmp_path / "pki")
    syncer.sent = sent  # type: ignore[attr-defined]
    return syncer


def test_mirror_uploads_with_acl_then_only_changes(mirror, s3, bucket):
    first = mirror.sync()
    assert (first.uploaded, first.deleted) == (2, 0)
    assert bucket_objects(s3, bucket) == tree_md5s(mirror.pki_dir)
    assert {p["ACL"] for p in mirror.sent} == {"bucket-owner-full-control"}

    (mirror.pki_dir / "master" / "minions" / "i-0123456789abcdef0").unlink()
    (mirror.pki_dir / "master" / "minions" / "i-0123456789abcdef1").write_text("key1")
    second = mirror.sync()
    assert (second.uploaded, second.deleted, second.unchanged) == (1, 1, 1)
    assert bucket_objects(s3, bucket) == tree_md5s(mirror.pki_dir)


def test_unreachable_bucket_is_a_mirror_error(tmp_path):
    make_tree(tmp_path)
    client = boto3.client("s3", region_name="us-west-2", endpoint_url="http://127.0.0.1:9",
                          config=boto3.session.Config(retries={"max_attempts": 1},
                                                      connect_timeout=1))
    with pytest.raises(MirrorError):
        S3Mirror(client, BucketUrl("some-bucket", ""), tmp_path).sync()
