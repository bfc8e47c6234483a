"""Shared fixtures: one moto server per test session, clean AWS environment for every test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest

from tests.awsenv import MotoServer, start_moto
from tests.daemon import write_config
from tests.saltenv import SaltMaster, start_master
from tests.snssign import SigningIdentity, make_signing_identity
from tests.tcpproxy import TcpProxy

AWS_VARIABLES = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")

#: cert_dir, identity, fleet: signed envelopes and a managed group for the trust tests
pytest_plugins = ["tests.trustenv"]


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server on 127.0.0.1, its endpoint exported for boto3 in this process and children."""
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    saved = {k: os.environ.get(k) for k in (*server.env(), *AWS_VARIABLES)}
    for name in AWS_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(server.env())
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def sqs(moto: MotoServer):
    return boto3.client("sqs", region_name="us-west-2")


@pytest.fixture
def s3(moto: MotoServer):
    return boto3.client("s3", region_name="us-west-2")


@pytest.fixture
def ec2(moto: MotoServer):
    return boto3.client("ec2", region_name="us-west-2")


@pytest.fixture
def queue_url(sqs) -> str:
    """A fresh queue per test, so tests sharing the server never see each other's messages."""
    name = f"aws-ork-test-{uuid.uuid4().hex[:12]}"
    return sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]


@pytest.fixture
def bucket(s3) -> str:
    name = f"aws-ork-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    return name


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CertCacheDir shared by the tests of one module."""
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="module")
def identity(cert_dir: Path) -> SigningIdentity:
    """A signing key whose certificate (us-west-2) is in ``cert_dir``: nothing is fetched."""
    return make_signing_identity(cert_dir, "us-west-2")


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaltMaster]:
    """A real salt-master shared by the tests of one module (they use distinct minion ids)."""
    salt_master = start_master(tmp_path_factory.mktemp("master"))
    yield salt_master
    salt_master.stop()


@pytest.fixture
def conf(tmp_path: Path, queue_url: str, master: SaltMaster) -> Path:
    """An aws_ork.conf for this test's queue and the ``master`` fixture; no S3 mirror."""
    return write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=master)


@pytest.fixture
def bucket_conf(tmp_path: Path, queue_url: str, master: SaltMaster, bucket: str) -> Path:
    """The same, with the pki mirrored to this test's ``bucket`` (under ``pki/``)."""
    return write_config(
        tmp_path / "aws_ork.conf", queue_url=queue_url, master=master, bucket=bucket
    )


@pytest.fixture
def sqs_proxy(moto: MotoServer) -> Iterator[TcpProxy]:
    """A cuttable TCP proxy to moto: point a daemon's AWS_ENDPOINT_URL_SQS at it to cut SQS."""
    target = urlparse(moto.url)
    assert target.hostname is not None and target.port is not None
    proxy = TcpProxy(target.hostname, target.port)
    proxy.start()
    yield proxy
    proxy.stop()
