"""Strict validation: every invalid spec in ``fixtures/invalid/`` reports exactly the problems
its header declares, each at ``file.yaml:line:col`` with its key path, the offending line
with a caret under the bad value, and a suggested fix. All problems come at once.

A fixture declares its problems in leading comment lines::

    # expect: LINE:COL KEY.PATH | a substring of the message

(``-`` as the key path when there is none, as for YAML syntax errors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from regflow.cli.main import main
from regflow.errors import Problem, SpecError
from regflow.plan.compiler import check_file, compile_file

INVALID = Path(__file__).resolve().parent / "fixtures" / "invalid"
FIXTURES = sorted(INVALID.glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (\d+):(\d+) (\S+) \| (.+)$")


@dataclass(frozen=True)
class Expected:
    line: int
    col: int
    key_path: str
    message: str

    def where(self, path: Path) -> str:
        return f"{path}:{self.line}:{self.col}"


def expectations(path: Path) -> list[Expected]:
    out = []
    for text in path.read_text(encoding="utf-8").splitlines():
        if not text.startswith("#"):
            break
        m = _EXPECT.match(text)
        if m:
            key = "" if m.group(3) == "-" else m.group(3)
            out.append(Expected(int(m.group(1)), int(m.group(2)), key, m.group(4).strip()))
        else:
            assert not text.startswith("# expect"), f"malformed expectation in {path}: {text}"
    return out


def _errors(path: Path) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        compile_file(path)
    return list(info.value.errors)


def _matches(problem: Problem, exp: Expected, path: Path) -> bool:
    return (
        str(problem.location) == exp.where(path)
        and problem.key_path == exp.key_path
        and exp.message in problem.message
    )


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_expected_problem_is_reported_and_nothing_else(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} declares no '# expect:' lines"
    errors = _errors(path)
    unmatched = list(errors)
    for exp in expected:
        hit = next((p for p in unmatched if _matches(p, exp, path)), None)
        assert hit is not None, (
            f"expected {exp.where(path)} [{exp.key_path}] '{exp.message}'; got:\n"
            + "\n".join(p.format() for p in errors)
        )
        unmatched.remove(hit)
    assert not unmatched, "unexpected extra errors:\n" + "\n".join(p.format() for p in unmatched)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_problem_shows_the_line_a_caret_and_a_fix(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for problem in _errors(path):
        loc = problem.location
        assert loc is not None and loc.file == str(path)
        assert loc.line is not None and loc.col is not None
        assert problem.hint.strip(), f"no hint for: {problem.format()}"
        context = problem.context.splitlines()
        assert len(context) == 2, problem.format()
        gutter = f"{loc.line:>4} | "
        assert context[0] == gutter + lines[loc.line - 1]
        assert context[1].rstrip() == " " * (len(gutter) + loc.col - 1) + "^"
        text = problem.format()
        assert text.startswith(f"{path}:{loc.line}:{loc.col}: error: {problem.message}")
        if problem.key_path:
            assert f"(at {problem.key_path})" in text
        assert f"hint: {problem.hint}" in text


# Each error kind of the requirement, and a fixture (with a message) that proves it.
KINDS = {
    "unknown key": ("unknown_key_source", "unknown key 'colums'"),
    "unknown key in a node": ("unknown_key_node", "unknown key 'descripton'"),
    "unknown op": ("unknown_op", "unknown op 'filtr'"),
    "dangling input": ("dangling_input", "is neither a source nor a node"),
    "duplicate id": ("duplicate_id", "duplicate id 'big'"),
    "cycle with its path": ("cycle", "cycle in the node graph: a -> b -> c -> a"),
    "self cycle": ("self_cycle", "loop -> loop"),
    "unknown column in an expression": ("unknown_column_expr", "unknown column 'amout'"),
    "unknown column in a lambda body": ("unknown_column_expr", "unknown column 'tiny'"),
    "unknown column in a join": ("unknown_column_join", "unknown column 'usd_rat'"),
    "unknown column after an aggregate": ("unknown_column_aggregate", "unknown column 'amount'"),
    "unknown column in a source key": ("source_columns", "primary key column 'version'"),
    "bad expression": ("bad_expression", "cannot parse expression 'amount >'"),
    "bad type": ("bad_type", "unknown type 'varchar2'"),
    "decimal bounds": ("bad_type", "decimal(50,2) needs 1 <= precision <= 38"),
    "bad value": ("bad_values", "Input should be 'parquet' or 'csv'"),
    "missing key": ("bad_values", "missing required key 'path'"),
    "unknown template variable": ("template_var", "unknown template variable '{data_rot}'"),
    "wrong input count": ("input_count", "op 'join' takes 2 input(s), got 1"),
    "union columns": ("union_columns", "different columns"),
    "YAML syntax": ("yaml_syntax", "invalid YAML"),
    "YAML unclosed quote": ("yaml_unclosed_quote", "invalid YAML"),
    "duplicate YAML key": ("yaml_duplicate_key", "duplicate key 'path'"),
    "not a mapping": ("not_a_mapping", "must be a YAML mapping"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_error_kind_has_a_fixture(kind: str) -> None:
    name, message = KINDS[kind]
    assert any(message in e.message for e in expectations(INVALID / f"{name}.yaml")), kind


def test_there_are_enough_fixtures() -> None:
    assert len(FIXTURES) >= 15


def test_on_is_read_as_a_key_not_a_boolean() -> None:
    # YAML 1.1 reads `on:` as True; the join would then report "unknown key 'True'".
    path = INVALID / "unknown_column_join.yaml"
    errors = _errors(path)
    assert any(p.key_path == "nodes[0].on[0]" for p in errors)
    assert not any("True" in p.message for p in errors)


def test_all_problems_of_a_file_are_reported_together() -> None:
    path = INVALID / "multiple_errors.yaml"
    messages = [p.message for p in _errors(path)]
    for part in (
        "unknown key 'cob_colum'",
        "unknown template variable '{data_roots}'",
        "input 'fxx' of node 'with_fx'",
        "unknown column 'usd_rat'",
        "duplicate id 'usd'",
        "unknown op 'aggregat'",
        "cannot parse expression",
    ):
        assert any(part in m for m in messages), part
    # parse, graph and column problems come from different phases but one SpecError
    with pytest.raises(SpecError) as info:
        compile_file(path)
    assert str(info.value).startswith(f"{len(messages)} errors in pipeline spec:")


def test_a_duplicate_yaml_key_does_not_hide_other_problems() -> None:
    messages = [p.message for p in _errors(INVALID / "yaml_duplicate_key.yaml")]
    assert any("duplicate key 'where'" in m for m in messages)
    assert any("unknown column 'rate'" in m for m in messages)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_check_file_returns_the_same_problems(path: Path) -> None:
    plan, problems = check_file(path)
    assert plan is None
    assert [p for p in problems if p.severity == "error"] == _errors(path)


# ------------------------------------------------------------------ through the CLI
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_cli_validate_reports_every_location(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    for exp in expectations(path):
        assert f"{exp.where(path)}: error: " in captured.err
        assert exp.message in captured.err
    assert f"FAIL {path}" in captured.out


def test_cli_validate_a_folder_reports_every_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(INVALID)]) == 1
    captured = capsys.readouterr()
    for path in FIXTURES:
        assert f"FAIL {path}" in captured.out
        for exp in expectations(path):
            assert exp.where(path) in captured.err


def test_cli_validate_accepts_a_valid_spec(capsys: pytest.CaptureFixture[str]) -> None:
    valid = INVALID.parent / "golden" / "linear.yaml"
    assert main(["validate", str(valid)]) == 0
    captured = capsys.readouterr()
    assert f"ok  {valid}" in captured.out
    assert "error" not in captured.err
