"""The files made from aws_ork/options.py and aws_ork/flags.py (data/aws_ork.conf, the
configuration reference docs/configuration.md, the flags' tables of docs/operations.md, the
aws_ork.conf(5) and aws_ork(8) man pages) are what the declarations make today, and the man
pages render without a warning."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aws_ork import docgen, flags, options

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted(docgen.GENERATED, key=str), ids=str)
def test_generated_file_is_up_to_date(path: Path) -> None:
    current = (REPO / path).read_text(encoding="utf-8")
    assert docgen.GENERATED[path](REPO, current) == current, (
        f"{path} is stale: run python -m aws_ork.docgen"
    )


def test_every_option_is_in_every_generated_file() -> None:
    conf = (REPO / docgen.CONF).read_text()
    reference = (REPO / docgen.REFERENCE).read_text()
    man = (REPO / docgen.MAN).read_text()
    for option in options.ALL:
        mark = "" if option.preset else "#"  # a preset option is set, not commented out
        assert f"\n{mark}{option.name} =" in conf, option.name
        assert f"\n### {option.name}\n" in reference, option.name
        assert f"Default: {option.shown_default}." in reference, option.name
        assert f'\n.BI "{option.name} = "' in man, option.name


def test_every_flag_is_in_the_man_page_and_the_operations_table() -> None:
    man = (REPO / docgen.MAN8).read_text()
    operations = (REPO / docgen.OPERATIONS).read_text()
    for action in flags.build_parser()._actions:
        for name in action.option_strings:
            assert f"\\fB{name.replace('-', chr(92) + '-')}\\fR" in man, name
            assert name in operations, name
    for status, _ in flags.EXIT_STATUS:
        assert f"\n.B {status}\n" in man, status
        assert f"\n| {status} | " in operations, status


def test_the_state_files_aws_ork_8_names_are_the_daemons() -> None:
    """docgen writes three file names itself (their modules import botocore, which the lint
    env that runs docgen lacks): they must be the names the daemon uses."""
    from aws_ork.lifecycle.waits import LIFECYCLE_WAITS_FILE
    from aws_ork.mirror import manifest, memories

    named = {name for name, _ in docgen.STATE_FILES}
    assert {manifest.FILE_NAME, memories.MANIFEST_FILE, LIFECYCLE_WAITS_FILE} <= named
    man = (REPO / docgen.MAN8).read_text()
    for name in named:
        assert f"\n.I {name}\n" in man, name


def test_check_names_a_stale_file_and_writing_makes_it_current(tmp_path: Path) -> None:
    # the reference links into the other pages of docs/: copy them all
    for path in [*docgen.GENERATED, *(p.relative_to(REPO) for p in (REPO / "docs").glob("*.md"))]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    run = [sys.executable, "-m", "aws_ork.docgen", "--root", str(tmp_path)]
    assert subprocess.run([*run, "--check"], cwd=REPO).returncode == 0
    conf = tmp_path / docgen.CONF
    conf.write_text(conf.read_text().replace("#PollPause = 0", "#PollPause = 5"))
    checked = subprocess.run([*run, "--check"], cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 1
    assert str(docgen.CONF) in checked.stderr and "stale" in checked.stderr
    assert "#PollPause = 5" in conf.read_text()  # --check writes nothing
    assert subprocess.run(run, cwd=REPO, capture_output=True).returncode == 0
    assert conf.read_text() == (REPO / docgen.CONF).read_text()


def test_operations_without_the_markers_is_an_error_not_a_silent_pass() -> None:
    with pytest.raises(ValueError, match="flags:begin"):
        docgen.operations_text("# a page with no table of flags\n")


MAN_PAGES = {
    docgen.MAN: ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "SEE ALSO"),
    docgen.MAN8: (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "EXIT STATUS",
        "SIGNALS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
    ),
}


@pytest.mark.parametrize("page", sorted(MAN_PAGES, key=str), ids=str)
def test_man_page_renders_without_warnings(page: Path) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    result = subprocess.run(
        [groff, "-man", "-ww", "-z", str(REPO / page)], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stderr == ""
    text = subprocess.run(
        [groff, "-man", "-Tutf8", "-P-cbou", str(REPO / page)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for heading in MAN_PAGES[page]:
        assert f"\n{heading}\n" in text, heading
    other = "aws_ork.conf(5)" if page == docgen.MAN8 else "aws_ork(8)"
    assert other in text


def test_setup_installs_both_man_pages() -> None:
    setup = (REPO / "setup.py").read_text()
    assert '("share/man/man5", ["man/aws_ork.conf.5"])' in setup
    assert '("share/man/man8", ["man/aws_ork.8"])' in setup
