"""aws_ork installed next to a Salt the way ``salt-pip`` installs on a onedir master.

``salt-pip`` (salt/scripts.py ``salt_pip``, the same in 3006, 3007 and 3008) runs the onedir's
own ``python -m pip`` with ``--target=<onedir root>/extras-<python X.Y>`` added to an
``install`` and ``PYTHONPATH`` set to that directory; the onedir reads the extras directory
through a ``.pth`` file. pip's ``--target`` ignores what is installed already, so every
requirement is fetched again: ``salt-pip install aws_ork`` would put a second Salt (and a second
copy of its dependencies) into the extras. ``--no-deps`` installs aws_ork alone, next to the
Salt that runs the master (docs/compatibility.md).

Here the real ``salt.scripts.salt_pip`` of this tox env's Salt runs with ``sys.RELENV`` (how
Salt tells a onedir) pointing at a temp directory; the wheel is built offline from this
checkout, nothing is downloaded. The installed command runs with ``PYTHONPATH`` = the extras
(what the onedir's ``.pth`` does) from a directory outside the checkout.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aws_ork import __version__
from tests.daemon import write_config
from tests.saltenv import SALT_RELEASE, SaltMaster

ROOT = Path(__file__).resolve().parent.parent
#: What setup.py reads to build the wheel.
SOURCES = ("setup.py", "README.md", "LICENSE", "aws_ork", "data", "man")
EXTRAS = f"extras-{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """aws_ork's wheel, built offline from a copy of the checkout (pip builds in the source
    tree: a copy keeps build/ and egg-info out of the worktree)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("aws_ork-*.whl")
    return found


def salt_pip(onedir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Salt's own ``salt-pip`` entry point, in this env's Python, as if it were a onedir's."""
    config_dir = onedir / "etc"
    config_dir.mkdir(exist_ok=True)
    # salt-pip reads the minion config for its user (and its saltpip_* options in 3008)
    (config_dir / "minion").write_text(f"id: saltpip-test\nuser: {getpass.getuser()}\n")
    code = (
        "import pathlib, sys\n"
        f"sys.RELENV = pathlib.Path({str(onedir)!r})\n"
        f"sys.argv = ['salt-pip', *{list(args)!r}]\n"
        "import salt.scripts\n"
        f"salt.scripts.salt_pip({str(config_dir)!r})\n"
    )
    # no pip configuration of this machine (find-links, extra indexes): offline, the index is
    # only what a test names
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=onedir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``salt-pip install --no-deps aws_ork-<version>.whl``: the extras directory."""
    onedir = tmp_path_factory.mktemp("onedir")
    done = salt_pip(onedir, "install", "--no-index", "--no-deps", str(wheel))
    assert done.returncode == 0, done.stdout + done.stderr
    yield onedir / EXTRAS


def run_installed(extras: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``aws_ork`` command, with the extras on the path as the onedir has them."""
    env = {**os.environ, "PYTHONPATH": str(extras)}
    return subprocess.run(
        [str(extras / "bin" / "aws_ork"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_salt_pip_installs_aws_ork_alone_into_the_extras(installed: Path, tmp_path: Path) -> None:
    names = sorted(p.name for p in installed.iterdir())
    assert "aws_ork" in names and f"aws_ork-{__version__}.dist-info" in names
    assert (installed / "bin" / "aws_ork").is_file()
    # no second Salt, nor any other package: only aws_ork, its command and its data files
    assert not [n for n in names if n.lower().startswith("salt")], names
    assert set(names) <= {"aws_ork", f"aws_ork-{__version__}.dist-info", "bin", "share"}, names
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import aws_ork, salt.version; print(aws_ork.__file__); "
            "print(salt.__file__); print(salt.version.__version__)",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    aws_ork_file, salt_file, salt_version = where.stdout.split()
    assert Path(aws_ork_file).is_relative_to(installed)
    assert not Path(salt_file).is_relative_to(installed)  # the Salt that runs the master
    assert salt_version.startswith(f"{SALT_RELEASE[0]}.{SALT_RELEASE[1]}")


def test_without_no_deps_salt_pip_would_fetch_the_requirements_again(
    wheel: Path, tmp_path: Path
) -> None:
    """pip --target ignores the installed Salt: offline, the install fails on a requirement
    (online it would download a second Salt into the extras). Nothing is installed."""
    done = salt_pip(tmp_path, "install", "--no-index", str(wheel))
    assert done.returncode != 0
    assert "No matching distribution found for" in done.stdout + done.stderr
    assert not (tmp_path / EXTRAS / "aws_ork").exists()


def test_the_installed_command_runs_version_and_check(
    installed: Path, tmp_path: Path, queue_url: str, master: SaltMaster
) -> None:
    version = run_installed(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"aws_ork {__version__}"
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=master)
    check = run_installed(installed, "-c", str(conf), "--check", cwd=tmp_path)
    out = check.stdout
    assert check.returncode == 0, out + check.stderr
    assert f"ok   salt release {SALT_RELEASE[0]}.{SALT_RELEASE[1]} " in out, out
    assert f"ok   salt pki {master.pki_dir}\n" in out, out
    assert "FAIL" not in out, out
