"""Run the real ``aws_ork`` command against the moto server and a real salt-master."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aws_ork.config import KEY_BINDING_OFF
from tests.saltenv import SaltMaster

#: The one start-up WARNING of a config with KeyBinding = off (write_config's default): the
#: checks that a log holds no WARNING exempt exactly this line, and nothing else.
KEY_BINDING_OFF_WARNING = re.compile(
    r" WARNING aws_ork(\.\w+)*: " + re.escape(KEY_BINDING_OFF) + "$"
)


def is_key_binding_off_warning(line: str) -> bool:
    """Is ``line`` (a daemon log line) the start-up WARNING of KeyBinding = off?"""
    return KEY_BINDING_OFF_WARNING.search(line) is not None


def write_config(
    path: Path,
    *,
    queue_url: str,
    master: SaltMaster,
    bucket: str | None = None,
    prefix: str = "pki/",
    **options: Any,
) -> Path:
    """An aws_ork.conf for this master and queue. Extra options as Name=value keywords.

    The trust checks (signatures, EC2 lookup) are off unless a test turns them on: the tests
    of those checks set them explicitly. So is completing lifecycle actions (moto answers
    CompleteLifecycleAction with HTTP 500): tests/test_lifecycle.py sets LifecycleHooks and
    sends those calls to tests/asgproxy.py. KeyBinding (required, no default) is off, as the
    tests without binding mean; the tests of binding set KeyBinding = tag.
    """
    values: dict[str, Any] = {
        "QueueUrl": queue_url,
        "SaltMasterConfig": master.config_file,
        "PkiDir": master.pki_root,
        "StateDir": path.parent / "state",
        "VerifySignatures": "false",
        "VerifyInstances": "false",
        "LifecycleHooks": "",
        "KeyBinding": "off",
    }
    if bucket:
        values["BucketUrl"] = f"s3://{bucket}/{prefix}"
    values.update(options)
    lines = ["[aws_ork]"] + [f"{name} = {value}" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def salt_config(
    tmp_path: Path,
    master: SaltMaster,
    options: dict[str, Any],
    included: dict[str, Any] | None = None,
) -> Path:
    """A copy of the ``master`` fixture's config with ``options``, and ``included`` in a
    master.d/*.conf file beside it (Salt's default_include)."""
    directory = tmp_path / "salt"
    (directory / "master.d").mkdir(parents=True)
    (directory / "master").write_text(json.dumps({**master.config, **options}))
    if included is not None:
        (directory / "master.d" / "extra.conf").write_text(json.dumps(included))
    return directory / "master"


def accepting_value(tmp_path: Path, option: str) -> Any:
    """A value of ``option`` that makes Salt accept keys by itself (a path need not exist:
    Salt reads it at each authentication)."""
    return True if option in ("auto_accept", "open_mode") else str(tmp_path / option)


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "aws_ork", "-c", str(config), *args]


def run_aws_ork(
    config: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run aws_ork to completion (normally with --once); output captured as text.

    ``env`` adds to (and overrides) this process's environment.
    """
    return subprocess.run(
        command(config, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start_aws_ork(
    config: Path, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start aws_ork in the background, its output going to ``log``.

    ``env`` adds to (and overrides) this process's environment.
    """
    with open(log, "wb") as out:
        return subprocess.Popen(
            command(config, *args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def stop_aws_ork(proc: subprocess.Popen, timeout: float = 30) -> int | None:
    """SIGTERM a daemon started with start_aws_ork; SIGKILL it if it has not exited after
    ``timeout`` seconds. Its exit status (None if it had to be killed)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def send(sqs: Any, queue_url: str, *bodies: str) -> None:
    """Send each body to the queue as one message, in order."""
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


def states(master: SaltMaster, *ids: str) -> dict[str, str | None]:
    """{id: its key state ("minions", "minions_pre", ...) or None}, from one key listing."""
    listing = master.key_states()
    return {i: next((s for s, names in listing.items() if i in names), None) for i in ids}


def queue_counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages in the queue."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def bucket_objects(
    s3: Any, bucket: str, prefix: str = "pki/", *, memories: bool = False
) -> dict[str, str]:
    """{relative path: ETag} of the pki mirror; with ``memories``, aws_ork's own objects
    under ``.aws_ork/`` (the StateDir memories) too."""
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) :]
            if memories or not rel.startswith(".aws_ork/"):
                out[rel] = obj["ETag"].strip('"')
    return out


#: key directories the S3 mirror leaves out (pending and denied keys, autosign stubs)
UNMIRRORED = ("minions_pre", "minions_denied", "minions_autosign")


def tree_md5s(root: Path) -> dict[str, str]:
    """What the S3 mirror of root must hold: {relative path: md5} of every regular file
    under root, and of every symlink to a file inside root (mirrored as an object holding
    its relative target), less the files in the key directories the mirror leaves out."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        if p.parent.name in UNMIRRORED:
            continue
        if p.is_symlink():
            real = p.resolve()
            if real.is_file() and real.is_relative_to(root.resolve()):
                target = os.path.relpath(real, p.parent.resolve())
                out[p.relative_to(root).as_posix()] = hashlib.md5(target.encode()).hexdigest()
        elif p.is_file():
            out[p.relative_to(root).as_posix()] = hashlib.md5(p.read_bytes()).hexdigest()
    return out
