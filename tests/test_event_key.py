"""The secret that signs the reactor events (SaltEventKey), through the real CLI: a start and
``--check`` refuse an unsafe key file (exit 2, one line naming SaltEventKey), the first start
makes the file 0600 and the next ones reuse it, and a run that fires nothing makes none.

A key others can read lets a minion's owner sign forged events; one others can replace (a
symlink, group write, a directory) lets them choose the secret. Run against the moto server
and a real salt-master (its cachedir holds the default key file).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aws_ork.keys.eventkey import default_path
from tests.daemon import run_aws_ork, write_config
from tests.saltenv import SaltMaster

GOOD_KEY = "0123456789abcdef" * 4 + "\n"


def regular(path: Path, text: str = GOOD_KEY, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)


def symlink(path: Path) -> None:
    """A link to a safe key file: whoever can change the link chooses the secret."""
    target = path.with_name("target.key")
    regular(target)
    path.symlink_to(target)


def directory(path: Path) -> None:
    path.mkdir(mode=0o700)


UNSAFE: dict[str, Callable[[Path], None]] = {
    "symlink": symlink,
    "readable by others (0644)": lambda path: regular(path, mode=0o644),
    "group-writable (0620)": lambda path: regular(path, mode=0o620),
    "too short": lambda path: regular(path, "0123456789abcdef\n"),
    "not hex": lambda path: regular(path, "z" * 64 + "\n"),
    "upper-case hex": lambda path: regular(path, GOOD_KEY.upper()),
    "a directory": directory,
}


def config(tmp_path: Path, queue_url: str, master: SaltMaster, **options: Any) -> Path:
    return write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=master, **options)


def naming_the_option(result: Any) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "SaltEventKey" in line]


@pytest.mark.parametrize("mode", ["--once", "--check"])
@pytest.mark.parametrize("unsafe", list(UNSAFE))
def test_an_unsafe_key_file_is_a_config_error(tmp_path, queue_url, master, unsafe, mode):
    key = tmp_path / "event.key"
    UNSAFE[unsafe](key)
    before = key.read_text() if key.is_file() else None

    result = run_aws_ork(config(tmp_path, queue_url, master, SaltEventKey=key), mode)

    assert result.returncode == 2, result.stdout + result.stderr
    lines = naming_the_option(result)
    assert len(lines) == 1, result.stdout + result.stderr
    assert str(key) in lines[0]
    if mode == "--check":
        assert lines[0].startswith("FAIL SaltEventKey"), lines
    # refused as it is: not replaced, not re-moded, not followed
    assert key.is_symlink() == (unsafe == "symlink")
    if before is not None:
        assert key.read_text() == before


def test_the_first_start_makes_a_0600_key_and_the_next_reuses_it(tmp_path, queue_url, master):
    key = default_path(master.opts())
    key.unlink(missing_ok=True)
    conf = config(tmp_path, queue_url, master)

    first = run_aws_ork(conf, "--once")

    assert first.returncode == 0, first.stderr
    info = key.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    secret = key.read_text()
    assert len(secret.strip()) == 64
    assert secret.strip() not in first.stdout + first.stderr  # never logged

    check = run_aws_ork(conf, "--check")
    assert [line for line in check.stdout.splitlines() if "SaltEventKey" in line] == [
        f"ok   SaltEventKey {key}: a regular file, no group write, nothing for others"
    ]

    second = run_aws_ork(conf, "--once")

    assert second.returncode == 0, second.stderr
    assert key.read_text() == secret
    assert key.stat().st_ino == info.st_ino


def test_check_says_a_missing_key_will_be_made_and_makes_none(tmp_path, queue_url, master):
    key = tmp_path / "event.key"

    result = run_aws_ork(config(tmp_path, queue_url, master, SaltEventKey=key), "--check")

    assert naming_the_option(result) == [
        f"ok   SaltEventKey {key}: absent, made at the first start (mode 0600)"
    ]
    assert not os.path.lexists(key)


def test_check_fails_when_the_key_cannot_be_made(tmp_path, queue_url, master):
    key = tmp_path / "missing-dir" / "event.key"

    result = run_aws_ork(config(tmp_path, queue_url, master, SaltEventKey=key), "--check")

    assert result.returncode == 1, result.stdout
    lines = naming_the_option(result)
    assert len(lines) == 1 and lines[0].startswith(f"FAIL SaltEventKey {key}: cannot be created"), (
        lines
    )


@pytest.mark.parametrize("mode", ["--once", "--check"])
def test_a_key_under_pki_dir_is_a_config_error(tmp_path, queue_url, master, mode):
    """PkiDir is mirrored to S3: whoever reads the bucket would read the secret."""
    key = master.pki_root / "aws_ork-event.key"

    result = run_aws_ork(config(tmp_path, queue_url, master, SaltEventKey=key), mode)

    assert result.returncode == 2, result.stdout + result.stderr
    lines = naming_the_option(result)
    assert len(lines) == 1 and "is under PkiDir" in lines[0], result.stdout + result.stderr
    assert not os.path.lexists(key)


@pytest.mark.parametrize("how", ["SaltEvents = false", "--dry-run"])
def test_a_run_that_fires_nothing_makes_no_key(tmp_path, queue_url, master, how):
    key = default_path(master.opts())
    key.unlink(missing_ok=True)
    options = {"SaltEvents": "false"} if how.startswith("SaltEvents") else {}
    conf = config(tmp_path, queue_url, master, **options)
    args = ("--once", "--dry-run") if how == "--dry-run" else ("--once",)

    result = run_aws_ork(conf, *args)

    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(key)
    if how.startswith("SaltEvents"):  # nor does --check look for one
        assert naming_the_option(run_aws_ork(conf, "--check")) == []
