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
from tests.saltenv import SALT_RELEASE, SaltMaster, start_master
from tests.snssign import SigningIdentity, make_signing_identity
from tests.tcpproxy import TcpProxy

AWS_VARIABLES = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")

#: cert_dir, identity, fleet: signed envelopes and a managed group for the trust tests;
#: bound_daemon, minions, metrics_port: the key binding tests'
pytest_plugins = ["tests.trustenv", "tests.bindingenv"]

#: The tests marked ``saltline``: what a Salt release can change, run on every supported Salt
#: line (tox envs salt3006 and salt3007; py311, the newest, runs everything). A real
#: salt-master and salt-minions each time: key changes, pre-authorisation (autosign stubs),
#: key binding, end to end, reactor and auth events, --check, restore, clusters (3007 on), the
#: salt-pip install. A module named alone: all its tests; else the tests named. A name the
#: module no longer defines fails the run (the selection never shrinks unseen).
SALTLINE: dict[str, tuple[str, ...]] = {
    "test_saltenv.py": (),
    "test_saltcompat.py": (),
    "test_salt_pip.py": (),
    "test_keys.py": (),
    "test_binding.py": (),
    "test_key_binding.py": (),
    "test_key_preaccept.py": (),
    "test_end_to_end.py": (),
    "test_daemon.py": (
        "test_launch_accepts_exactly_that_pending_key",
        "test_terminate_deletes_the_key_in_every_state",
        "test_launch_before_the_key_pre_authorises_the_minion",
        "test_glob_and_path_ids_touch_nothing",
    ),
    "test_sweep.py": (
        "test_under_key_binding_the_sweep_accepts_only_the_key_the_instance_published",
        "test_under_key_binding_by_key_the_sweep_stores_the_published_key_over_an_impostors",
    ),
    "test_reactor_events.py": (
        "test_launch_accept_preauthorise_and_terminate_are_fired",
        "test_acceptance_by_salt_through_a_stub_is_fired_with_the_launch_context",
        "test_a_bound_key_accepted_by_the_arrivals_thread_is_fired",
        "test_a_published_key_stored_by_the_key_tag_watcher_is_fired",
        "test_the_readme_chat_reactor_posts_each_decision",
    ),
    "test_lifecycle.py": (
        "test_launch_preauthorised_by_stub_is_completed_when_salt_uses_the_stub",
    ),
    "test_preflight.py": ("test_a_healthy_setup_passes_every_check_without_a_warning",),
    "test_backup.py": ("test_restore_brings_back_a_master_whose_minion_still_answers",),
    "test_masters.py": (
        "test_a_cluster_minion_preauthorised_by_one_member_is_accepted_by_the_other",
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the SALTLINE tests ``saltline``; mark ``slow`` those and every test that uses the
    ``master`` fixture (they start real salt processes)."""
    stale = {module for module in SALTLINE if not (Path(__file__).parent / module).is_file()}
    for item in items:
        if "master" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        module = Path(str(item.fspath)).name
        if module not in SALTLINE:
            continue
        defined = vars(item.module) if isinstance(item, pytest.Function) else {}
        stale.update(f"{module}::{n}" for n in SALTLINE[module] if n not in defined)
        name = item.name.split("[", 1)[0]
        if not SALTLINE[module] or name in SALTLINE[module]:
            item.add_marker(pytest.mark.saltline)
            item.add_marker(pytest.mark.slow)
    # Salt 3006 has no master cluster: its cluster tests are not run there, and said so as
    # deselected (never a skip counted beside the passes)
    unrunnable = [
        item
        for item in items
        if SALT_RELEASE < (3007, 0)
        and Path(str(item.fspath)).name == "test_masters.py"
        and "cluster" in item.name
    ]
    if unrunnable:
        config.hook.pytest_deselected(items=unrunnable)
        items[:] = [item for item in items if item not in unrunnable]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py SALTLINE names no test: {sorted(stale)}")


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
