"""The docs check: the operator's documentation says what is true and its links lead somewhere.

- every relative link and anchor of README.md, UPGRADING.md, CONTRIBUTING.md, CHANGELOG.md and
  docs/*.md resolves (anchors as GitHub makes them from headings; a page another branch is
  writing, :data:`PENDING`, may be linked before it exists, and is checked once it does);
- every option has its section in the configuration reference, every metric the daemon
  exports and every reason code it counts are in docs/operations.md;
- what the README states that a test can check is true: the option names and defaults it
  writes, its minimal config (valid, and no unsafe choice), the metric names, the exit status,
  the install commands (the dependencies setup.py declares, the unit's ExecStart), and the
  quick-start commands CI runs.

``python -m tests.test_docs`` runs the checks that need no boto3 and no Salt (the lint env has
neither, nor pytest); pytest runs them all, the exit status of the real command included.
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from aws_ork import config, docgen, flags, options
from aws_ork.events.model import Kind
from aws_ork.keys.result import Outcome
from tests.test_layers import parse

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
OPERATIONS = REPO / "docs" / "operations.md"

#: pages other branches are writing (relative to the checkout) -> who writes them. A link to
#: one passes while it does not exist; once it does, its anchors are checked like any page's.
PENDING: dict[str, str] = {
    "docs/compatibility.md": "issue 21, items 5-6: the Salt releases and salt-pip",
}


def doc_pages(root: Path) -> list[Path]:
    """The pages the check reads: the top-level Markdown files and docs/."""
    top = [root / name for name in ("README.md", "UPGRADING.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    return [page for page in top if page.exists()] + sorted((root / "docs").glob("*.md"))


def broken_links(root: Path, pages: Iterable[Path], pending: Iterable[str] = ()) -> list[str]:
    """``page: target: why`` for each relative link that leads nowhere."""
    waiting = {(root / name).resolve() for name in pending}
    problems = []
    for page in pages:
        for target in docgen.links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page.resolve()
            where = f"{page.relative_to(root)}: {target}"
            if not dest.exists():
                if dest not in waiting:
                    problems.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md":
                if anchor not in docgen.anchors(dest.read_text(encoding="utf-8")):
                    problems.append(f"{where}: no such anchor in {dest.relative_to(root)}")
    return problems


def test_every_relative_link_and_anchor_resolves() -> None:
    pages = doc_pages(REPO)
    assert {p.name for p in pages} >= {"README.md", "operations.md", "configuration.md"}
    broken = broken_links(REPO, pages, PENDING)
    assert broken == [], broken


def test_the_link_check_finds_a_missing_page_and_a_missing_anchor(tmp_path: Path) -> None:
    """The checker on made-up pages, so that it cannot pass vacuously."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Checking a setup (`--check`)\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#checking-a-setup---check) [ok](#the-top) [web](https://x.invalid/)\n"
        "# The top\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#checking-a-setup-check) [later](docs/c.md)\n"
        "`[in code](docs/none.md)`\n\n    [indented code](docs/none.md)\n"
    )
    found = broken_links(tmp_path, doc_pages(tmp_path), ["docs/c.md"])
    assert found == [
        "README.md: docs/b.md: no such file",
        "README.md: docs/a.md#checking-a-setup-check: no such anchor in docs/a.md",
    ]
    (tmp_path / "docs" / "c.md").write_text("# C\n")  # a pending page, once there, is checked
    (tmp_path / "docs" / "a.md").write_text("[c](c.md#nowhere)\n")
    assert "docs/a.md: c.md#nowhere: no such anchor in docs/c.md" in broken_links(
        tmp_path, doc_pages(tmp_path), ["docs/c.md"]
    )


def test_every_option_has_its_section_in_the_reference() -> None:
    reference = (REPO / docgen.REFERENCE).read_text(encoding="utf-8")
    missing = [o.name for o in options.ALL if f"\n### {o.name}\n" not in reference]
    assert missing == []


# --- metrics and reason codes (docs/operations.md) ---


def exported_metrics() -> set[str]:
    """Every sample name the metrics endpoint exports, read from the real collector over a
    Stats record in which every table has a row and the mirror is on."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from aws_ork.runtime.metrics import AwsOrkCollector
    from aws_ork.runtime.stats import KeyStats, MirrorStats, QueueStats, Stats

    row = {("launch", "accepted"): 1}
    stats = Stats(
        queue=QueueStats("https://sqs.invalid/q", 1, row, row, row, 0.0, 0.0, 60.0, 0),
        keys=KeyStats(),
        lifecycle_completed=0,
        salt_events_fired=0,
        salt_events_dropped=0,
        aws_errors={("sqs", "Throttling"): 1},
        mirror=MirrorStats(0, 0.0, 0, 1.0, None, 0),
    )

    class Source:
        def stats(self) -> Stats:
            return stats

    registry = CollectorRegistry()
    registry.register(AwsOrkCollector(Source()))
    text = generate_latest(registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def metric_table(text: str) -> set[str]:
    """The metric names of docs/operations.md's metrics table (its rows' first cells)."""
    return set(re.findall(r"^\| `(aws_ork_\w+)` \|", text, re.M))


def test_every_metric_is_in_the_operations_table_and_only_those() -> None:
    table, exported = metric_table(OPERATIONS.read_text()), exported_metrics()
    assert table == exported, (
        "not exported:",
        table - exported,
        "not in the table:",
        exported - table,
    )


def test_every_metric_name_the_docs_write_is_exported() -> None:
    """A name in the README or docs/ is one the endpoint exports (``aws_ork_mirror_*``: a
    family of them). Code blocks aside: a recipe's state id is no metric."""
    exported = exported_metrics()
    for page in doc_pages(REPO):
        prose = "\n".join(docgen.outside_code(page.read_text()))
        for name in re.findall(r"\baws_ork_[a-z_]+\*?", prose):
            if name.endswith("*"):
                assert any(m.startswith(name[:-1]) for m in exported), (page.name, name)
            else:
                assert name in exported, (page.name, name)


def counted_reasons(package: Path) -> set[str]:
    """The reason codes the daemon can count (the ``reason`` label), read from the code: each
    check's ``code``, the codes given to a verdict or a decision (``code=``, ``reason_code=``,
    the code argument of ``Verdict.refused``/``deferred`` and of ``retry``), the key outcomes."""
    found = {outcome.name.lower() for outcome in Outcome}
    for path in package.rglob("*.py"):
        for node in ast.walk(parse(path)):
            found |= _codes_in(node)
    return found - {""}


def _text(node: ast.AST | None) -> set[str]:
    return {node.value} if isinstance(node, ast.Constant) and isinstance(node.value, str) else set()


def _codes_in(node: ast.AST) -> set[str]:
    found: set[str] = set()
    if isinstance(node, ast.ClassDef):
        for item in node.body:
            if isinstance(item, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "code" for t in item.targets
            ):
                found |= _text(item.value)
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                if item.target.id == "reason_code":
                    found |= _text(item.value)
    if isinstance(node, ast.Call):
        found |= {
            value
            for keyword in node.keywords
            if keyword.arg in ("code", "reason_code")
            for value in _text(keyword.value)
        }
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        at = {"refused": 1, "deferred": 1, "retry": 2}.get(name)
        if at is not None and len(node.args) > at:
            found |= _text(node.args[at])
    if isinstance(node, ast.FunctionDef) and node.name == "retry":
        found |= {v for default in node.args.defaults for v in _text(default)}
    return found


def documented(text: str, opening: str) -> set[str]:
    """The backquoted words of the paragraph of ``text`` that starts with ``opening``."""
    start = text.index(opening)
    return set(re.findall(r"`(\w+)`", text[start : text.index("\n\n", start)]))


def test_the_reason_codes_and_kinds_are_the_ones_counted() -> None:
    text = OPERATIONS.read_text()
    assert documented(text, "`kind` is the event kind:") - {"kind"} == {k.value for k in Kind}
    reasons = documented(text, "`reason` is a short code:") - {"reason"}
    counted = counted_reasons(REPO / "aws_ork")
    assert reasons == counted, (
        "never counted:",
        reasons - counted,
        "undocumented:",
        counted - reasons,
    )


def test_the_reason_code_scan_finds_each_way_a_code_is_given(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "class C:\n    code = 'klass'\n    reason_code: str = 'field'\n"
        "def retry(n, reason, code='default'):\n    pass\n"
        "Verdict.refused('why', 'positional')\nVerdict.deferred('why', code='keyword')\n"
        "policy.retry(1, 'why', 'third')\nDecision(reason_code='decided')\nx = 'other'\n"
    )
    assert counted_reasons(tmp_path) - {o.name.lower() for o in Outcome} == {
        "klass",
        "field",
        "default",
        "positional",
        "keyword",
        "third",
        "decided",
    }


# --- what the README states ---


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_the_defaults_the_readme_states_are_the_defaults() -> None:
    """``- `Name = value` (default)``: writing that value changes nothing."""
    stated = re.findall(r"^- `(\w+) =([^`]*)` \(default", readme(), re.M)
    assert len(stated) >= 4
    for name, value in stated:
        assert name.lower() in config.OPTIONS, name
        assert config.from_mapping({name: value.strip()}, "README") == config.from_mapping(
            {}, "README"
        ), name


def test_every_option_the_readme_writes_exists() -> None:
    names = {o.name for o in options.ALL}
    written = re.findall(r"`(\w+) =", readme()) + re.findall(r"^(\w+) = ", readme(), re.M)
    assert written and set(written) <= names, set(written) - names


def minimal_config() -> dict[str, str]:
    block = re.search(r"## The minimal config\n\n```ini\n(.*?)```", readme(), re.S)
    assert block is not None, "the README's minimal config (an ini block)"
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(block.group(1))
    return dict(parser[config.SECTION])


def test_the_minimal_config_is_valid_safe_and_explicit_about_key_binding() -> None:
    values = minimal_config()
    assert "KeyBinding" in values  # explicit: off is a choice, and the default may go
    cfg = config.from_mapping(values, "README")
    assert config.require_safe(cfg) == []  # no unsafe choice, no config error


def test_the_exit_status_the_readme_states_is_the_commands() -> None:
    line = re.search(r"^Exit status: (.*?)\(", readme(), re.M | re.S)
    assert line is not None
    stated = re.findall(r"(\d) ([^;]+)", line.group(1))
    assert [(int(n), t.strip().split()[0]) for n, t in stated] == [
        (status, meaning.split()[0].rstrip(":").lower()) for status, meaning in flags.EXIT_STATUS
    ]


def test_the_command_exits_as_documented(tmp_path: Path, capsys) -> None:
    """0, 1 and 2 from the real command (flags.EXIT_STATUS is what the docs say)."""
    import pytest

    from aws_ork import cli

    with pytest.raises(SystemExit) as version:
        cli.main(["--version"])
    assert version.value.code == 0
    bad = tmp_path / "bad.conf"
    bad.write_text("[aws_ork]\nPollPause = soon\n")
    assert cli.main(["-c", str(bad)]) == 2
    assert f"aws_ork: {bad}: PollPause:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["--force"])
    assert usage.value.code == 2
    # a restore whose S3 cannot be reached is a runtime failure
    unreachable = tmp_path / "restore.conf"
    unreachable.write_text(
        f"[aws_ork]\nBucketUrl = s3://aws-ork-docs-test/pki/\nPkiDir = {tmp_path / 'pki'}\n"
        f"StateDir = {tmp_path / 'state'}\n"
    )
    monkey = pytest.MonkeyPatch()
    monkey.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard: nothing listens
    monkey.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkey.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        assert cli.main(["-c", str(unreachable), "--restore"]) == 1
        assert "aws_ork: restore failed:" in capsys.readouterr().err
    finally:
        monkey.undo()


def setup_requirements() -> list[str]:
    """The names in setup.py's install_requires."""
    tree = parse(REPO / "setup.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            assert isinstance(node.value, ast.List)
            specs = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
            return [re.split(r"[<>=!~\[ ;]", str(spec), maxsplit=1)[0] for spec in specs]
    raise AssertionError("setup.py has no install_requires")


def test_the_install_commands_match_setup_py_and_the_unit() -> None:
    """salt-pip gets every dependency but Salt and cryptography (the onedir's own), then aws_ork
    without its dependencies; the README's command path is the unit's ExecStart."""
    text = readme()
    deps = re.search(r"^    salt-pip install (?!--)(.*)$", text, re.M)
    assert deps is not None and "    salt-pip install --no-deps aws_ork\n" in text
    wanted = set(setup_requirements()) - {"salt", "cryptography"}
    assert set(deps.group(1).split()) == wanted, (deps.group(1), wanted)
    unit = (REPO / "data" / "aws_ork.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=.*$", unit, re.M)
    assert f"    {exec_start}\n" in text
    command = exec_start.split("=", 1)[1].split()[0]
    assert f"The command is then `{command}`" in text


def test_the_quick_start_commands_are_the_ones_ci_runs() -> None:
    text = readme()
    assert "\n    python3 -m pip install tox && python3 -m tox -e demo\n" in text
    assert "\n    python3 -m pip install tox && python3 -m tox\n" in text
    assert "\npython3 -m tox\n" in (REPO / ".ci" / "run").read_text()


def test_the_readme_is_an_entry_page() -> None:
    """The issue's bound: the README starts the operator off, docs/ holds the rest."""
    assert len(readme().splitlines()) <= 200


#: the checks ``python -m tests.test_docs`` runs (no boto3, no Salt, no pytest there)
LINT_CHECKS: tuple[Callable[[], None], ...] = (
    test_every_relative_link_and_anchor_resolves,
    test_every_option_has_its_section_in_the_reference,
    test_every_metric_is_in_the_operations_table_and_only_those,
    test_every_metric_name_the_docs_write_is_exported,
    test_the_reason_codes_and_kinds_are_the_ones_counted,
    test_the_defaults_the_readme_states_are_the_defaults,
    test_every_option_the_readme_writes_exists,
    test_the_minimal_config_is_valid_safe_and_explicit_about_key_binding,
    test_the_exit_status_the_readme_states_is_the_commands,
    test_the_install_commands_match_setup_py_and_the_unit,
    test_the_quick_start_commands_are_the_ones_ci_runs,
    test_the_readme_is_an_entry_page,
)


def main() -> int:
    """Each failed check on a line; exit 1 when there is one."""
    failed = 0
    for check in LINT_CHECKS:
        try:
            check()
        except AssertionError as exc:
            failed += 1
            print(f"docs check: {check.__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
