"""Adjustment rule files: validation (file:line:col for each problem), overlap warnings,
splicing into the plan and the Airflow DAG, and effective dates on real Spark.

Every invalid rule in ``fixtures/adjust_invalid/`` declares its problems in leading comments::

    # folder: credit                      (optional: the adjustments/<folder>/ to put it in)
    # expect: LINE:COL message substring [... further substring] [| hint: hint substring]

and is validated, as ``regflow adjustments check FILE`` does, in a copy of the project (the
real LCR pipeline and the repository's sample rules).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regflow.adjust.loader import load_rule_file
from regflow.cli.adjust_check import validate_rules
from regflow.cli.main import main
from regflow.errors import AdjustmentError, Problem
from regflow.plan.build import build_plan
from regflow.plan.compiler import compile_file
from regflow.spec.models import LINEAGE_COLUMN as LID
from regflow.storage import META_FILE, SUCCESS_FILE, RunRef

ROOT = Path(__file__).resolve().parent.parent
INVALID = Path(__file__).resolve().parent / "fixtures" / "adjust_invalid"
FIXTURES = sorted(INVALID.glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (\d+):(\d+) (.+?)(?: \| hint: (.+))?$")
_FOLDER = re.compile(r"^# folder: (\S+)$")


@dataclass(frozen=True)
class Expected:
    line: int
    col: int
    message: str
    hint: str | None


def expectations(path: Path) -> tuple[str, list[Expected]]:
    folder, out = "lcr", []
    for text in path.read_text(encoding="utf-8").splitlines():
        if not text.startswith("#"):
            break
        if m := _EXPECT.match(text):
            out.append(Expected(int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)))
        elif m := _FOLDER.match(text):
            folder = m.group(1)
        elif text.startswith("# file: "):
            continue  # (see place)
        else:
            assert not text.startswith("# expect"), f"malformed expectation in {path}: {text}"
    return folder, out


def contains(text: str, pattern: str) -> bool:
    """``pattern``'s parts (separated by `` ... ``) occur in ``text``, in that order."""
    at = 0
    for part in pattern.split(" ... "):
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def make_project(root: Path, samples: bool = True) -> Path:
    """The LCR project (pipelines, operators) and, by default, the sample rules."""
    for name in ("pipelines", "operators"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "adjustments" / "lcr").mkdir(parents=True)
    if samples:
        for f in sorted((ROOT / "adjustments" / "lcr").glob("*.yaml")):
            shutil.copy(f, root / "adjustments" / "lcr" / f.name)
    return root


def place(project: Path, fixture: Path) -> Path:
    """Copy ``fixture`` into the project as a pull request adds it: named after its rule_id
    (``# file: NAME`` in its leading comments overrides)."""
    folder, _ = expectations(fixture)
    text = fixture.read_text(encoding="utf-8")
    named = re.search(r"^# file: (\S+)$", text, re.M)
    rule_id = re.search(r"^rule_id: ([A-Za-z0-9][A-Za-z0-9_.-]*)$", text, re.M)
    name = named.group(1) if named else f"{rule_id.group(1)}.yaml" if rule_id else fixture.name
    dst = project / "adjustments" / folder / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixture, dst)
    return dst


def errors_of(project: Path, rule_file: Path) -> list[Problem]:
    return validate_rules(project, [rule_file]).errors


# --------------------------------------------------------------------------- invalid rules
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_every_expected_problem_is_reported_at_its_place_and_nothing_else(tmp_path, fixture):
    project = make_project(tmp_path)
    dst = place(project, fixture)
    _, expected = expectations(fixture)
    assert expected, f"{fixture.name} declares no '# expect:' lines"
    errors = errors_of(project, dst)
    shown = "\n".join(p.format() for p in errors)
    unmatched = list(errors)
    for exp in expected:
        where = f"{dst}:{exp.line}:{exp.col}"
        hit = next(
            (
                p
                for p in unmatched
                if str(p.location) == where
                and contains(p.message, exp.message)
                and (exp.hint is None or exp.hint in p.hint)
            ),
            None,
        )
        assert hit is not None, f"expected {where} '{exp.message}' (hint {exp.hint}); got:\n{shown}"
        unmatched.remove(hit)
    assert not unmatched, "unexpected extra errors:\n" + "\n".join(p.format() for p in unmatched)
    # every problem shows the offending line of this file, with a caret under the column
    lines = dst.read_text().splitlines()
    for p in errors:
        assert p.location is not None and p.location.file == str(dst)
        gutter = f"{p.location.line:>4} | "
        first, caret = p.context.splitlines()
        assert first == gutter + lines[p.location.line - 1]
        assert caret.rstrip() == " " * (len(gutter) + p.location.col - 1) + "^"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_cli_check_fails_and_names_every_place(tmp_path, fixture, monkeypatch, capsys):
    project = make_project(tmp_path)
    dst = place(project, fixture)
    monkeypatch.setenv("REGFLOW_PROJECT", str(project))
    assert main(["adjustments", "check", str(dst)]) == 1
    out = capsys.readouterr().out
    assert "invalid" in out
    for exp in expectations(fixture)[1]:
        assert f"{dst}:{exp.line}:{exp.col}: error: " in out
        assert contains(out, exp.message)


# Each problem the contract names, and the fixture (with a message) that proves it.
KINDS = {
    "unknown key": ("unknown_key", "unknown key 'expiry'"),
    "unknown key in a condition": ("unknown_key_condition", "unknown key 'op'"),
    "missing field": ("missing_reason", "missing required key 'reason'"),
    "missing field in a condition": ("unknown_key_condition", "missing required key 'operator'"),
    "missing approval": ("missing_approval", "missing required key 'approval'"),
    "unknown stage": ("unknown_stage", "has no node 'clasify'"),
    "field not in the stage's schema": ("field_not_in_schema", "'weighted_amount' does not exist"),
    "string column compared with a number": ("value_type_mismatch", "value 5 does not fit"),
    "number set on a string column": ("value_type_mismatch", "value 3 does not fit"),
    "add on a string column": ("arithmetic_on_string", "'add' needs a numeric field"),
    "multiply on a string column": ("arithmetic_on_string", "'multiply' needs a numeric field"),
    "between with unordered bounds": ("between_unordered", "bounds must be ordered"),
    "between with one bound": ("between_one_bound", "'between' needs two bounds"),
    "in with an empty list": ("in_empty_list", "'in' needs a non-empty list"),
    "effective_date after expiry_date": ("effective_after_expiry", "is after expiry_date"),
    "maker-checker": ("maker_checker", "maker-checker"),
    "maker-checker, fullwidth letters": ("identity_fullwidth", "maker-checker"),
    "approver with an invisible character": ("identity_invisible", "U+200B ZERO WIDTH SPACE"),
    "approver with a look-alike letter": ("identity_confusable", "U+0430 CYRILLIC SMALL"),
    "blank approver": ("identity_blank", "is blank"),
    "duplicate rule_id": ("duplicate_rule_id", "is already used by"),
    "duplicate rule_id in an invalid file": ("duplicate_rule_id_invalid_file", "already used"),
    "file name not the rule_id": ("misnamed_file", "differs from its rule_id"),
    "key column deal_id": ("key_column_deal_id", "'deal_id' is a key"),
    "lineage column": ("key_column_deal_id", "'_lineage_id' is a key"),
    "key column legal_entity": ("key_column_legal_entity", "'legal_entity' is a key"),
    "key column before an aggregation": ("key_column_before", "'deal_id' is a key ... before"),
    "wrong pipeline folder": ("wrong_folder", "sits in adjustments/credit/"),
    "unknown pipeline": ("unknown_pipeline", "no pipeline 'lcrr'"),
    "ordering on text": ("ordering_on_text", "'>' on string field"),
    "unknown operator": ("operator_misuse", "Input should be '='"),
    "no adjustments": ("no_adjustments", "at least one adjustment"),
    "before a source": ("before_a_source", "nothing runs before it"),
    "bad rule id": ("bad_rule_id", "may use letters"),
    "plan problems of an invalid file": ("file_and_plan_problems_at_once", "'ratng' does not"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_problem_kind_has_a_fixture(kind):
    name, message = KINDS[kind]
    assert any(contains(e.message, message) for e in expectations(INVALID / f"{name}.yaml")[1])


def test_a_duplicate_rule_id_is_reported_at_the_new_file_whatever_the_file_order(tmp_path):
    """CI checks the files of a pull request: the new file must fail, also when it sorts
    before the file that already holds the id."""
    project = make_project(tmp_path)
    existing = project / "adjustments" / "lcr" / "ADJ-2026-0001.yaml"
    for name in ("0/ADJ-2026-0001.yaml", "zz/ADJ-2026-0001.yaml"):
        new = project / "adjustments" / "lcr" / name
        new.parent.mkdir()
        new.write_text(existing.read_text().replace("reason: ", "reason: A copy. "))
        errors = errors_of(project, new)
        assert [str(p.location) for p in errors] == [f"{new}:2:10"], name
        assert "rule_id 'ADJ-2026-0001' is already used by" in errors[0].message
        assert f"{existing}:2:10" in errors[0].message  # names the other file, at its line
        # and the old file, checked on its own, names the new one
        old_errors = errors_of(project, existing)
        assert [str(p.location) for p in old_errors] == [f"{existing}:2:10"]
        assert f"{new}:2:10" in old_errors[0].message
        new.unlink()
    assert errors_of(project, existing) == []


def test_the_sample_rules_are_valid(tmp_path):
    project = make_project(tmp_path)
    check = validate_rules(project)
    assert check.errors == []
    assert sorted(r.rule.rule_id for r in check.rules) == [
        "ADJ-2026-0001",
        "ADJ-2026-0002",
        "ADJ-2026-0003",
    ]


def test_the_pull_request_author_may_not_approve(tmp_path):
    project = make_project(tmp_path)
    f = project / "adjustments" / "lcr" / "ADJ-2026-0003.yaml"
    errors = validate_rules(project, [f], author="E.Controller").errors
    assert len(errors) == 1 and "maker-checker" in errors[0].message
    line = next(i for i, t in enumerate(f.read_text().splitlines(), 1) if "approved_by" in t)
    assert str(errors[0].location) == f"{f}:{line}:16"
    assert validate_rules(project, [f], author="someone.else").errors == []
    # the author is compared in the same canonical form as the rule's names
    assert len(validate_rules(project, [f], author="\uff25.controller").errors) == 1


@pytest.mark.parametrize(
    "fixture", ["identity_invisible", "identity_confusable", "identity_blank", "identity_fullwidth"]
)
def test_a_disguised_approver_stops_the_run_and_the_dag(tmp_path, fixture):
    """`regflow run` and the DAG build their plan with build_plan: the same refusal there."""
    project = make_project(tmp_path)
    bad = place(project, INVALID / f"{fixture}.yaml")
    with pytest.raises(AdjustmentError) as info:
        build_plan(project / "pipelines" / "lcr.yaml", project / "adjustments" / "lcr")
    assert f"{bad}:13:16" in str(info.value)


def test_keys_are_those_of_the_rows_the_rule_sees(tmp_path):
    """Before an aggregation the rows are deals: a deal's entity may be corrected there."""
    project = make_project(tmp_path, samples=False)
    f = place(project, INVALID / "key_column_before.yaml")
    text = f.read_text().replace("  - {field: deal_id, operation: set, value: D000002}\n", "")
    f.write_text(text)
    assert errors_of(project, f) == []
    # after it, legal_entity is the group key
    f.write_text(text.replace("position: before\n", ""))
    messages = [p.message for p in errors_of(project, f)]
    assert any("'legal_entity' is a key or lineage column after" in m for m in messages)


INV = """\
pipeline: inv
sources:
  items:
    path: /nowhere
    primary_key: [item_id]
    schema: {item_id: string, qty: bigint, n: int, px: "decimal(38,6)"}
nodes:
  - id: prep
    op: calc
    inputs: [items]
    columns: {w: "px * 2"}
"""


@pytest.mark.parametrize(
    ("adjustment", "error"),
    [
        ("{field: qty, operation: add, value: 1.5}", "'add' on integer field 'qty'"),
        ("{field: n, operation: multiply, value: 1.5}", "'multiply' on integer field 'n'"),
        ("{field: qty, operation: add, value: 2}", None),
        ("{field: n, operation: multiply, value: 3}", None),
        # px's values use all 6 decimals of decimal(38,6): x 1.5 would round them (issue 17)
        ("{field: px, operation: multiply, value: 1.5}", "'multiply' by 1.5 would round field"),
        ("{field: px, operation: multiply, value: 4}", None),
        ("{field: px, operation: add, value: 0.25}", None),
    ],
)
def test_arithmetic_on_an_integer_field_needs_a_whole_number(tmp_path, adjustment, error):
    """The result is cast back to the field's type: 5 + 1.5 would silently become 6."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "inv.yaml").write_text(INV)
    folder = tmp_path / "adjustments" / "inv"
    folder.mkdir(parents=True)
    f = folder / "ADJ-I-1.yaml"
    f.write_text(
        RULE.format(
            rule_id="ADJ-I-1", conditions="  - {field: qty, operator: is not null}", field="x"
        )
        .replace("pipeline: lcr", "pipeline: inv")
        .replace("stage: weigh", "stage: prep")
        .replace("  - {field: x, operation: multiply, value: 2}", f"  - {adjustment}")
    )
    errors = errors_of(tmp_path, f)
    if error is None:
        assert errors == []
    else:
        (err,) = errors
        assert error in err.message
        assert str(err.location) == f"{f}:7:{adjustment.index('value: ') + 12}"


# --------------------------------------------------------------------------- overlaps
RULE = """\
rule_id: {rule_id}
pipeline: lcr
stage: weigh
conditions:
{conditions}
adjustments:
  - {{field: {field}, operation: multiply, value: 2}}
effective_date: 2026-01-01
approval:
  requested_by: a.analyst
  approved_by: b.checker
  timestamp: 2026-01-02T09:00:00Z
reason: overlap test
"""


def write_rule(folder: Path, rule_id: str, conditions: list[str], field="weighted_amount") -> Path:
    path = folder / f"{rule_id}.yaml"
    body = "\n".join(f"  - {c}" for c in conditions)
    path.write_text(RULE.format(rule_id=rule_id, conditions=body, field=field))
    return path


@pytest.mark.parametrize(
    ("a", "b", "field_b", "overlap"),
    [
        (
            ['{field: legal_entity, operator: "=", value: LE001}'],
            ["{field: legal_entity, operator: in, value: [LE001, LE002]}"],
            "weighted_amount",
            True,
        ),
        (
            ['{field: legal_entity, operator: "=", value: LE001}'],
            ['{field: bucket, operator: "=", value: OUTFLOW}'],
            "weighted_amount",
            True,  # different fields: a row can match both
        ),
        (
            ['{field: legal_entity, operator: "=", value: LE001}'],
            ['{field: legal_entity, operator: "=", value: LE002}'],
            "weighted_amount",
            False,
        ),
        (
            ["{field: legal_entity, operator: in, value: [LE001, LE003]}"],
            ["{field: legal_entity, operator: in, value: [LE002, LE004]}"],
            "weighted_amount",
            False,
        ),
        (
            ["{field: amount_usd, operator: between, value: [0, 100]}"],
            ["{field: amount_usd, operator: between, value: [101, 200]}"],
            "weighted_amount",
            False,
        ),
        (
            ['{field: legal_entity, operator: "=", value: LE001}'],
            ['{field: legal_entity, operator: "=", value: LE001}'],
            "factor",
            False,  # same rows, but different fields written
        ),
    ],
    ids=["eq-vs-in", "different-fields", "disjoint-eq", "disjoint-in", "disjoint-between", "other"],
)
def test_overlap_warnings(tmp_path, a, b, field_b, overlap):
    project = make_project(tmp_path, samples=False)
    folder = project / "adjustments" / "lcr"
    first = write_rule(folder, "ADJ-T-0001", a)
    second = write_rule(folder, "ADJ-T-0002", b, field=field_b)
    check = validate_rules(project)
    assert check.errors == []
    warnings = [p for p in check.problems if p.severity == "warning"]
    if not overlap:
        assert warnings == []
        return
    # at both files (either may be the one a pull request changes), naming both rules
    assert sorted(str(w.location.file) for w in warnings) == sorted([str(first), str(second)])
    for w in warnings:
        assert "ADJ-T-0001" in w.message and "ADJ-T-0002" in w.message
        assert "weighted_amount" in w.message and "ADJ-T-0002 applies last" in w.message
    for f in (first, second):
        (only,) = [p for p in validate_rules(project, [f]).problems if p.severity == "warning"]
        assert only.location is not None and only.location.file == str(f)
    # a warning does not stop the plan: it is carried in it
    plan = build_plan(project / "pipelines" / "lcr.yaml", folder)
    assert any("ADJ-T-0001" in x and "ADJ-T-0002" in x for x in plan.warnings)


# --------------------------------------------------------------------------- splicing
BEFORE_WEIGH = """\
rule_id: ADJ-2026-0004
pipeline: lcr
stage: weigh
position: before
conditions:
  - {field: bucket, operator: "=", value: INFLOW}
adjustments:
  - {field: factor, operation: multiply, value: 2}
effective_date: 2026-01-01
approval: {requested_by: a.analyst, approved_by: b.checker, timestamp: 2026-01-02T09:00:00Z}
reason: double inflow factors
"""


@pytest.fixture()
def spliced(tmp_path):
    project = make_project(tmp_path)
    (project / "adjustments" / "lcr" / "ADJ-2026-0004.yaml").write_text(BEFORE_WEIGH)
    return project


def consumers(plan, name: str) -> list[str]:
    return [n.id for n in plan.nodes if name in n.inputs]


def test_adjust_nodes_are_wired_in(spliced):
    spec = spliced / "pipelines" / "lcr.yaml"
    base = compile_file(spec)
    plan = build_plan(spec, spliced / "adjustments" / "lcr")
    adjust = {n.id: n for n in plan.adjustment_nodes()}
    assert sorted(adjust) == [
        "classify__adjusted",
        "entity_buckets__adjusted",
        "weigh__adjusted",
        "weigh__adjusted_before",
    ]
    assert {k: [r["rule_id"] for r in n.params["rules"]] for k, n in adjust.items()} == {
        "classify__adjusted": ["ADJ-2026-0001"],
        "weigh__adjusted_before": ["ADJ-2026-0004"],
        "weigh__adjusted": ["ADJ-2026-0002"],
        "entity_buckets__adjusted": ["ADJ-2026-0003"],
    }
    inputs = {n.id: n.inputs for n in plan.nodes}
    assert inputs["classify__adjusted"] == ("classify",)
    assert inputs["weigh_factors"] == ("classify__adjusted", "lcr_categories")
    assert inputs["weigh__adjusted_before"] == ("weigh_factors",)
    assert inputs["weigh"] == ("weigh__adjusted_before",)
    assert inputs["weigh__adjusted"] == ("weigh",)
    assert inputs["entity_buckets"] == ("weigh__adjusted",)
    assert inputs["entity_buckets__adjusted"] == ("entity_buckets",)
    assert inputs["entity_lcr"] == ("entity_buckets__adjusted",)
    # nothing reads a node's unadjusted output but its adjust node
    for name in ("classify", "weigh", "entity_buckets"):
        assert consumers(plan, name) == [f"{name}__adjusted"]
    assert consumers(plan, "weigh_factors") == ["weigh__adjusted_before"]
    # an adjust node keeps the schema of the rows it adjusts
    for n in adjust.values():
        assert n.schema == plan.schema_of(n.inputs[0])
        assert n.lineage == "rowwise"
    # the other nodes are those of the spec, with the same schemas
    assert {n.id for n in plan.nodes} - set(adjust) == {n.id for n in base.nodes}
    for n in base.nodes:
        assert plan.node(n.id).schema == n.schema
    # stages: the same tasks; row-wise adjust nodes join the chain they sit in (the deal stage
    # ends at weigh's adjustments, which the warehouse star reads)
    assert [s.id for s in base.stages] == ["weigh", "entity_buckets", "entity_lcr", "lcr_star"]
    assert [s.id for s in plan.stages] == [
        "weigh__adjusted",
        "entity_buckets",
        "entity_lcr",
        "lcr_star",
    ]
    deal, eb, el, _star = plan.stages
    assert eb.nodes == ("entity_buckets",)
    assert deal.nodes == (
        "deals_fx",
        "deals_usd",
        "classify",
        "classify__adjusted",
        "weigh_factors",
        "weigh__adjusted_before",
        "weigh",
        "weigh__adjusted",
    )
    assert el.nodes == ("entity_buckets__adjusted", "entity_lcr")
    assert el.inputs == ("entity_buckets",) and el.upstream == ("entity_buckets",)
    assert eb.outputs == ("entity_buckets",) and el.outputs == ("entity_lcr",)
    assert not plan.node("entity_buckets__adjusted").persisted


def test_rules_at_one_point_are_ordered_by_rule_id_not_by_file(tmp_path):
    project = make_project(tmp_path, samples=False)
    folder = project / "adjustments" / "lcr"
    (folder / "a.yaml").write_text(
        RULE.format(
            rule_id="ADJ-9", conditions="  - {field: bucket, operator: is null}", field="factor"
        )
    )
    (folder / "b.yaml").write_text(
        RULE.format(
            rule_id="ADJ-1", conditions="  - {field: bucket, operator: is null}", field="factor"
        )
    )
    plan = build_plan(project / "pipelines" / "lcr.yaml", folder)
    (node,) = plan.adjustment_nodes()
    assert [r["rule_id"] for r in node.params["rules"]] == ["ADJ-1", "ADJ-9"]


def test_changing_a_rule_changes_the_hashes_downstream_only(spliced):
    spec = spliced / "pipelines" / "lcr.yaml"
    folder = spliced / "adjustments" / "lcr"
    before = build_plan(spec, folder)
    f = folder / "ADJ-2026-0003.yaml"
    f.write_text(f.read_text().replace("value: 250000000", "value: 500000000"))
    after = build_plan(spec, folder)
    assert before.adjustment_set_hash not in ("", "none")
    assert after.adjustment_set_hash != before.adjustment_set_hash
    assert after.data_hash != before.data_hash
    changed = {n.id for n in after.nodes if n.data_hash != before.node(n.id).data_hash}
    assert changed == {"entity_buckets__adjusted", "entity_lcr", "lcr_star"}
    # the same rules again give the same hashes (stable, not random)
    f.write_text(f.read_text().replace("value: 500000000", "value: 250000000"))
    again = build_plan(spec, folder)
    assert (again.adjustment_set_hash, again.data_hash) == (
        before.adjustment_set_hash,
        before.data_hash,
    )


def test_an_empty_or_missing_folder_means_no_adjust_nodes(tmp_path):
    project = make_project(tmp_path, samples=False)
    spec = project / "pipelines" / "lcr.yaml"
    base = compile_file(spec)
    for folder in (project / "adjustments" / "lcr", project / "nowhere"):
        plan = build_plan(spec, folder)
        assert plan.adjustment_nodes() == []
        assert plan.adjustment_set_hash == "none"
        assert plan.data_hash == base.data_hash
        assert [n.id for n in plan.nodes] == [n.id for n in base.nodes]


def test_an_invalid_rule_stops_the_plan_with_its_location(tmp_path):
    project = make_project(tmp_path)
    bad = place(project, INVALID / "field_not_in_schema.yaml")
    with pytest.raises(AdjustmentError) as info:
        build_plan(project / "pipelines" / "lcr.yaml", project / "adjustments" / "lcr")
    assert f"{bad}:8:13" in str(info.value)


def test_a_run_reports_a_files_problems_and_its_plan_problems_at_once_in_file_order(tmp_path):
    project = make_project(tmp_path)
    fixture = INVALID / "file_and_plan_problems_at_once.yaml"
    bad = place(project, fixture)
    with pytest.raises(AdjustmentError) as info:
        build_plan(project / "pipelines" / "lcr.yaml", project / "adjustments" / "lcr")
    _, expected = expectations(fixture)
    got = [(p.location.line, p.location.col) for p in info.value.errors if p.location]
    assert all(p.location and p.location.file == str(bad) for p in info.value.errors)
    assert got == [(e.line, e.col) for e in expected]  # (the fixture lists them in order)
    assert "does not exist after 'weigh'" in str(info.value)


DAG_PROBE = textwrap.dedent("""
    import json, sys
    from regflow.plan.build import build_plan
    from regflow.render.airflow_dag import build_dag
    dag = build_dag(build_plan(sys.argv[1], sys.argv[2]))
    print(json.dumps({t.task_id: {"doc": t.doc_md, "label": t.task_display_name}
                      for t in dag.tasks}))
""")


@pytest.mark.slow
def test_the_airflow_dag_shows_the_rules_of_each_stage(spliced, tmp_path):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DAG_PROBE,
            str(spliced / "pipelines" / "lcr.yaml"),
            str(spliced / "adjustments" / "lcr"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tasks = json.loads(proc.stdout.strip().splitlines()[-1])
    # the deal stage's task is 'weigh' with or without rules spliced at its end
    assert sorted(tasks) == [
        "entity_buckets", "entity_lcr", "lcr_star", "load_lcr_star", "publish", "weigh"
    ]  # fmt: skip
    eb, el = tasks["weigh"], tasks["entity_lcr"]
    for rid in ("ADJ-2026-0001", "ADJ-2026-0002", "ADJ-2026-0004"):
        assert f"`{rid}`" in eb["doc"]
        assert rid in eb["label"]
        assert rid not in el["doc"] and rid not in el["label"]
    assert "`ADJ-2026-0003`" in el["doc"] and "ADJ-2026-0003" in el["label"]
    assert "ADJ-2026-0003" not in eb["doc"] and "ADJ-2026-0003" not in eb["label"]
    assert eb["label"].startswith("weigh") and el["label"].startswith("entity_lcr")
    assert "ADJ-" not in tasks["entity_buckets"]["label"]
    # the docs list the adjust nodes among the stage's nodes, and where each rule applies
    assert "`classify__adjusted`" in eb["doc"] and "`weigh__adjusted_before`" in eb["doc"]
    assert "`entity_buckets__adjusted`" in el["doc"]
    assert "before `weigh`" in eb["doc"] and "after `entity_buckets`" in el["doc"]
    assert tasks["publish"]["label"] == "publish"


# --------------------------------------------------------------------------- effective dates
TINY = """\
pipeline: tiny_adj
params: {data_root: .}
sources:
  items:
    path: "{data_root}/items"
    primary_key: [item_id]
    schema: {item_id: string, grp: string, v: "decimal(38,6)"}
nodes:
  - id: prep
    op: calc
    inputs: [items]
    columns: {w: "v * 2"}
  - id: total
    op: aggregate
    inputs: [prep]
    group_by: [item_id, grp]
    measures: {v: {sum: v}}
"""

TINY_RULE = """\
rule_id: {rule_id}
pipeline: tiny_adj
stage: prep
conditions:
  - {{field: item_id, operator: "=", value: {item}}}
adjustments:
  - {{field: v, operation: add, value: {add}}}
effective_date: {effective}
{expiry}approval:
  requested_by: a.analyst
  approved_by: b.checker
  timestamp: 2026-01-02T09:00:00Z
reason: date boundary test
"""

# rule id -> (item it adjusts, amount added, effective_date, expiry_date)
TINY_RULES = {
    "T-1": ("a", 100, "2026-04-01", None),  # effective from 04-01
    "T-2": ("b", 10, "2026-03-31", None),  # effective from 03-31, open-ended
    "T-3": ("c", 1000, "2026-01-01", "2026-03-31"),  # last day 03-31
    "T-4": ("d", 10000, "2026-01-01", "2026-03-30"),  # last day 03-30
    "T-5": ("zzz", 1, "2026-01-01", None),  # in force, matches no row
}
BASE = {"a": 1, "b": 2, "c": 3, "d": 4}
GROUPS = {"a": "g1", "b": "g1", "c": "g2", "d": "g2"}

# Before the aggregation the rows are items: their group is an attribute a rule may change.
BEFORE_TOTAL = """\
rule_id: T-6
pipeline: tiny_adj
stage: total
position: before
conditions:
  - {field: grp, operator: "=", value: g1}
  - {field: v, operator: ">", value: 5}
adjustments:
  - {field: grp, operation: set, value: g9}
effective_date: 2026-01-01
approval: {requested_by: a.analyst, approved_by: b.checker, timestamp: 2026-01-02T09:00:00Z}
reason: regroup large g1 items
"""


def expected_status(rule_id: str, cob: str) -> tuple[str, str]:
    _, _, effective, expiry = TINY_RULES[rule_id]
    if cob < effective:
        return "skipped", "not yet effective"
    if expiry is not None and cob > expiry:
        return "skipped", "expired"
    return "applied", ""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    (root / "pipelines").mkdir()
    (root / "operators").mkdir()
    spec = root / "pipelines" / "tiny_adj.yaml"
    spec.write_text(TINY)
    (root / "items").mkdir()
    pq.write_table(
        pa.table(
            {
                "item_id": list(BASE),
                "grp": list(GROUPS.values()),
                "v": pa.array([Decimal(v) for v in BASE.values()], pa.decimal128(38, 6)),
            }
        ),
        root / "items" / "part-0.parquet",
    )
    folder = root / "adjustments" / "tiny_adj"
    folder.mkdir(parents=True)
    for rid, (item, add, effective, expiry) in TINY_RULES.items():
        (folder / f"{rid}.yaml").write_text(
            TINY_RULE.format(
                rule_id=rid,
                item=item,
                add=add,
                effective=effective,
                expiry=f"expiry_date: {expiry}\n" if expiry else "",
            )
        )
    (folder / "T-6.yaml").write_text(BEFORE_TOTAL)
    return root, build_plan(spec, folder)


def read(path: Path) -> pa.Table:
    files = sorted(str(p) for p in path.glob("*.parquet"))
    return pq.ParquetDataset(files, partitioning=None).read()


@pytest.mark.slow
@pytest.mark.parametrize("cob", ["2026-03-31", "2026-04-01"])
def test_effective_and_expiry_dates_are_inclusive(tiny, spark, cob, engine):
    from regflow.runtime.executor import run_stage

    root, plan = tiny
    assert plan.warnings == ()  # disjoint '=' conditions: no overlap warning
    (stage,) = plan.stages
    assert stage.nodes == ("prep", "prep__adjusted", "total__adjusted_before", "total")
    report = run_stage(
        plan,
        stage.id,
        cob=cob,
        run_id="r1",
        root=root / "storage",
        params={"data_root": str(root)},
        spark=spark,
        log=lambda m: None,
        policy=engine,
    )
    run = RunRef(root / "storage", "tiny_adj", cob, "r1")
    applies = {rid: expected_status(rid, cob)[0] == "applied" for rid in TINY_RULES}
    # 03-31: T-2 (first day) and T-3 (last day) apply; T-1 (day before) and T-4 (day after
    # its expiry) do not. 04-01: T-1 (first day) and T-2; T-3 is a day past its expiry.
    assert {r for r, ok in applies.items() if ok} == (
        {"T-2", "T-3", "T-5"} if cob == "2026-03-31" else {"T-1", "T-2", "T-5"}
    )
    expected_v = dict(BASE)
    for rid, (item, add, _, _) in TINY_RULES.items():
        if applies[rid] and item in expected_v:
            expected_v[item] += add
    # T-6, before total, sees the rows after prep's rules: g1 items whose v is now over 5
    moved = {k for k in BASE if GROUPS[k] == "g1" and expected_v[k] > 5}
    assert moved == ({"b"} if cob == "2026-03-31" else {"a", "b"})
    expected_grp = {k: "g9" if k in moved else g for k, g in GROUPS.items()}
    total = {(r["item_id"], r["grp"]): r["v"] for r in read(run.node_dir("total")).to_pylist()}
    assert total == {(k, expected_grp[k]): Decimal(v) for k, v in expected_v.items()}
    before_audit = read(run.node_dir("total__adjusted_before.audit")).to_pylist()
    members = {r[LID]: r["item_id"] for r in read(run.node_dir("total.lineage")).to_pylist()}
    assert sorted(
        (a["rule_id"], members[a[LID]], a["field"], a["old_value"], a["new_value"])
        for a in before_audit
    ) == [("T-6", k, "grp", "g1", "g9") for k in sorted(moved)]
    for a in before_audit:
        assert (a["stage"], a["position"]) == ("total", "before")

    # the audit: one row per adjusted row, at <node>__adjusted.audit
    audit_dir = run.node_dir("prep__adjusted.audit")
    assert (run.node_root("prep__adjusted.audit") / SUCCESS_FILE).exists()  # its marker
    audit = read(audit_dir).to_pylist()
    got = sorted((a["rule_id"], members[a[LID]], a["old_value"], a["new_value"]) for a in audit)
    want = sorted(
        (rid, item, f"{BASE[item]}.000000", f"{BASE[item] + add}.000000")
        for rid, (item, add, _, _) in TINY_RULES.items()
        if applies[rid] and item in BASE
    )
    assert got == want
    for a in audit:
        assert a["field"] == "v"
        assert (a["pipeline"], str(a["cob"]), a["run_id"]) == ("tiny_adj", cob, "r1")
        assert (a["stage"], a["position"]) == ("prep", "after")
        assert a["spec_hash"] == plan.data_hash
        assert a["adjustment_set_hash"] == plan.adjustment_set_hash != "none"

    # its metadata: every rule of the node, applied (with rows matched) or skipped (why)
    meta = json.loads((audit_dir / META_FILE).read_text())
    assert meta["rows"] == len(want) and meta["kind"] == "audit"
    entries = {r["rule_id"]: r for r in meta["rules"]}
    assert sorted(entries) == sorted(TINY_RULES)
    for rid, (item, _, effective, expiry) in TINY_RULES.items():
        status, why = expected_status(rid, cob)
        e = entries[rid]
        assert e["status"] == status, rid
        if status == "applied":
            assert e["rows_matched"] == (1 if item in BASE else 0), rid
            assert not e["reason"]
        else:
            assert e["rows_matched"] == 0
            assert why in e["reason"]
            assert (effective if why == "not yet effective" else expiry) in e["reason"]
    # the stage report carries the same entries
    assert {r["rule_id"]: (r["status"], r["rows_matched"]) for r in report.adjustments} == {
        **{k: (v["status"], v["rows_matched"]) for k, v in entries.items()},
        "T-6": ("applied", len(moved)),
    }
    assert {r["rule_id"]: r["node"] for r in report.adjustments} == {
        **{rid: "prep__adjusted" for rid in TINY_RULES},
        "T-6": "total__adjusted_before",
    }


def test_load_rule_file_round_trips_the_runtime_dict():
    lr, problems = load_rule_file(ROOT / "adjustments" / "lcr" / "ADJ-2026-0002.yaml")
    assert problems == [] and lr is not None
    d = lr.rule.runtime_dict()
    assert type(lr.rule).model_validate(d) == lr.rule
    assert d["expiry_date"] is None and d["position"] == "after"
