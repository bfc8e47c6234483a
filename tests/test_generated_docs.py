"""The files made from aws_ork/options.py (data/aws_ork.conf, the README's option table, the
aws_ork.conf(5) man page) are what the declarations make today, and the man page renders."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aws_ork import docgen, options

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted(docgen.GENERATED, key=str), ids=str)
def test_generated_file_is_up_to_date(path: Path) -> None:
    current = (REPO / path).read_text(encoding="utf-8")
    assert docgen.GENERATED[path](current) == current, (
        f"{path} is stale: run python -m aws_ork.docgen"
    )


def test_every_option_is_in_every_generated_file() -> None:
    conf = (REPO / docgen.CONF).read_text()
    readme = (REPO / docgen.README).read_text()
    man = (REPO / docgen.MAN).read_text()
    for option in options.ALL:
        assert f"\n#{option.name} =" in conf, option.name
        assert f"\n| {option.name} | {option.shown_default} |" in readme, option.name
        assert f'\n.BI "{option.name} = "' in man, option.name


def test_check_names_a_stale_file_and_writing_makes_it_current(tmp_path: Path) -> None:
    for path in docgen.GENERATED:
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


def test_readme_without_the_markers_is_an_error_not_a_silent_pass(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="options:begin"):
        docgen.readme_text("# a README with no option table\n")


def test_man_page_renders_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    result = subprocess.run(
        [groff, "-man", "-ww", "-z", str(REPO / docgen.MAN)], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stderr == ""
    text = subprocess.run(
        [groff, "-man", "-Tutf8", "-P-cbou", str(REPO / docgen.MAN)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "SEE ALSO"):
        assert f"\n{heading}\n" in text, heading
    assert "aws_ork(8)" in text
