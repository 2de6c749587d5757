"""The LCR pipeline with the repository's three sample rules, on 10k generated deals, against
an independent computation: the reference of tests/lcr_reference.py with the rules applied by
hand, as the rule files and the contract describe them. Then ``adjustments check`` on a change
of one rule: what it recomputes, what it reuses, and the deltas it reports.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lcr_reference import (
    BUCKET_COLUMNS,
    LCR_CATEGORIES,
    classify_reference,
    compute_lcr_reference,
    lcr_from_buckets,
    read_partition,
)
from runtime_helpers import run_all_stages

from regflow.adjust.loader import load_rule_file
from regflow.cli.adjust_preview import preview
from regflow.cli.main import main
from regflow.plan.build import build_plan
from regflow.spec.models import LINEAGE_COLUMN as LID
from regflow.storage import META_FILE, RunRef, publish_run

ROOT = Path(__file__).resolve().parent.parent
COB = dt.date(2026, 3, 31)
AMOUNTS = [
    "l1",
    "l2a",
    "l2b",
    "adj_15",
    "adj_40",
    "hqla",
    "outflows",
    "inflows",
    "capped_inflows",
    "net_outflows",
]
CENT = Fraction(1, 100)

# The sample rules, restated from adjustments/lcr/*.yaml (all in force on 2026-03-31).
RULE1_RATINGS = ("BBB+", "BBB", "BBB-")  # CORP_BOND and rating in these -> NON_HQLA
RULE2 = ("LE002", "OUTFLOW", Fraction(105, 100))  # weighted_amount x 1.05
RULE3 = ("LE003", 250_000_000)  # outflows + 250m, after entity_buckets


# --------------------------------------------------------------------------- the oracle
@dataclass
class Expected:
    rows: dict[str, dict[str, Fraction | None]]  # entity (and GROUP) -> lcr_from_buckets
    buckets_before_rule3: dict[str, dict[str, Fraction]]
    rule1_old: Counter  # category before rule 1 of every deal it matches
    rule2_old: list[Fraction]  # weighted amounts before rule 2 of every deal it matches


def expected_lcr(
    data_root: Path, rule1: bool = True, rule2: bool = True, rule3_add: int | None = RULE3[1]
) -> Expected:
    tag = f"cob={COB.isoformat()}"
    deals = read_partition(data_root / "deals" / tag).to_pandas()
    fx = read_partition(data_root / "fx_rates" / tag).to_pylist()
    rate = {r["currency"]: Fraction(r["usd_rate"]) for r in fx}
    category = classify_reference(deals, COB)
    m1 = (deals["product_type"] == "CORP_BOND") & deals["rating"].isin(RULE1_RATINGS)
    rule1_old = Counter(category[m1]) if rule1 else Counter()
    if rule1:
        category = category.where(~m1, "NON_HQLA")
    buckets: dict[str, dict[str, Fraction]] = {}
    rule2_old = []
    for entity, cur, amount, cat in zip(
        deals["legal_entity"], deals["currency"], deals["amount"], category, strict=True
    ):
        bucket, factor = LCR_CATEGORIES[cat]
        weighted = Fraction(amount) * rate[cur] * Fraction(factor)
        if rule2 and (entity, bucket) == RULE2[:2]:
            rule2_old.append(weighted)
            weighted *= RULE2[2]
        row = buckets.setdefault(entity, {c: Fraction(0) for c in BUCKET_COLUMNS.values()})
        if bucket != "NONE":
            row[BUCKET_COLUMNS[bucket]] += weighted
    before3 = {e: dict(b) for e, b in buckets.items()}
    if rule3_add is not None:
        buckets[RULE3[0]]["outflows"] += rule3_add
    rows = {e: lcr_from_buckets(**b) for e, b in buckets.items()}
    group = {c: sum((b[c] for b in buckets.values()), Fraction(0)) for c in BUCKET_COLUMNS.values()}
    rows["GROUP"] = lcr_from_buckets(**group)
    return Expected(rows, before3, rule1_old, sorted(rule2_old))


def assert_close(got, want: Fraction | None, what: str) -> None:
    if want is None:
        assert got is None, what
    elif isinstance(got, float):
        assert abs(got - float(want)) <= 1e-9 * abs(float(want)), (what, got, float(want))
    else:
        assert abs(Fraction(got) - want) <= CENT, (what, got, float(want))


def read(path: Path) -> pa.Table:
    files = sorted(str(p) for p in path.glob("*.parquet"))
    return pq.ParquetDataset(files, partitioning=None).read()


# --------------------------------------------------------------------------- the run
def copy_project(dst: Path) -> Path:
    for name in ("pipelines", "operators", "adjustments"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@dataclass
class BaseRun:
    project: Path
    storage: Path
    run: RunRef
    plan: object
    reports: list


@pytest.fixture(scope="module")
def base(tmp_path_factory, lcr_data, spark, engine) -> BaseRun:
    """All stages of the LCR pipeline with the three sample rules, published as run 'base'."""
    tmp = tmp_path_factory.mktemp("adjust-lcr")
    project = copy_project(tmp / "project")
    storage = tmp / "storage"
    plan = build_plan(project / "pipelines" / "lcr.yaml", project / "adjustments" / "lcr")
    params = {"data_root": str(lcr_data)}
    reports = run_all_stages(
        plan, storage, "base", spark, params, cob=COB.isoformat(), policy=engine
    )
    run = RunRef(storage, "lcr", COB.isoformat(), "base")
    rules = [r for n in plan.adjustment_nodes() for r in n.params["rules"]]
    publish_run(run, {"params": params, "rules": rules})
    return BaseRun(project, storage, run, plan, reports)


@pytest.fixture(scope="module")
def expected(lcr_data) -> Expected:
    return expected_lcr(lcr_data)


def test_the_sample_rules_are_the_ones_restated_here():
    """The oracle restates the sample rules; fail clearly if the files say otherwise."""
    rules = {}
    for f in sorted((ROOT / "adjustments" / "lcr").glob("*.yaml")):
        lr, problems = load_rule_file(f)
        assert problems == [] and lr is not None
        rules[lr.rule.rule_id] = lr.rule.runtime_dict()
    assert sorted(rules) == ["ADJ-2026-0001", "ADJ-2026-0002", "ADJ-2026-0003"]
    shape = {
        rid: (
            r["stage"],
            r["position"],
            [(c["field"], c["operator"], c["value"]) for c in r["conditions"]],
            [(a["field"], a["operation"], a["value"]) for a in r["adjustments"]],
        )
        for rid, r in rules.items()
    }
    assert shape == {
        "ADJ-2026-0001": (
            "classify",
            "after",
            [("product_type", "=", "CORP_BOND"), ("rating", "in", list(RULE1_RATINGS))],
            [("lcr_category", "set", "NON_HQLA")],
        ),
        "ADJ-2026-0002": (
            "weigh",
            "after",
            [("legal_entity", "=", RULE2[0]), ("bucket", "=", RULE2[1])],
            [("weighted_amount", "multiply", 1.05)],
        ),
        "ADJ-2026-0003": (
            "entity_buckets",
            "after",
            [("legal_entity", "=", RULE3[0])],
            [("outflows", "add", RULE3[1])],
        ),
    }
    for r in rules.values():  # all in force on the cob
        assert dt.date.fromisoformat(r["effective_date"]) <= COB
        assert r["expiry_date"] is None or dt.date.fromisoformat(r["expiry_date"]) >= COB


def test_the_hand_applied_oracle_without_rules_is_the_reference(lcr_data):
    """A guard on the oracle: with no rule applied it must be the reference itself."""
    plain = expected_lcr(lcr_data, rule1=False, rule2=False, rule3_add=None)
    ref = compute_lcr_reference(lcr_data, COB).set_index("legal_entity")
    assert sorted(plain.rows) == sorted(ref.index)
    for entity, row in plain.rows.items():
        for col in AMOUNTS:
            assert abs(Fraction(ref.loc[entity, col]) - row[col]) <= CENT, (entity, col)


def test_the_rules_change_the_figures(lcr_data, expected):
    """...and the rules matter: each moves some reported figure (no vacuous comparison)."""
    plain = expected_lcr(lcr_data, rule1=False, rule2=False, rule3_add=None)
    assert sum(expected.rule1_old.values()) > 0 and len(expected.rule2_old) > 0
    assert expected.rule1_old["L2B_CORP"] > 0  # some bonds really lose their HQLA status
    group, plain_group = expected.rows["GROUP"], plain.rows["GROUP"]
    assert group["l2b"] < plain_group["l2b"]
    assert group["outflows"] - plain_group["outflows"] > RULE3[1]  # rule 3 plus rule 2


@pytest.mark.slow
def test_entity_lcr_matches_the_independent_computation(base, expected):
    got = {r["legal_entity"]: r for r in read(base.run.node_dir("entity_lcr")).to_pylist()}
    assert sorted(got) == sorted(expected.rows)
    for entity, want in expected.rows.items():
        assert got[entity]["cob_date"] == COB
        for col in [*AMOUNTS, "lcr"]:
            assert_close(got[entity][col], want[col], f"{entity}.{col}")


@pytest.mark.slow
def test_entity_buckets_holds_the_figures_before_the_rule_after_it(base, expected):
    got = {r["legal_entity"]: r for r in read(base.run.node_dir("entity_buckets")).to_pylist()}
    assert sorted(got) == sorted(expected.buckets_before_rule3)
    for entity, want in expected.buckets_before_rule3.items():
        for col, value in want.items():
            assert_close(got[entity][col], value, f"{entity}.{col}")


def _audit(base: BaseRun, node: str) -> tuple[list[dict], dict]:
    d = base.run.node_dir(f"{node}.audit")
    return read(d).to_pylist(), json.loads((d / META_FILE).read_text())


@pytest.mark.slow
def test_rule1_audit(base, expected):
    audit, meta = _audit(base, "classify__adjusted")
    matched = sum(expected.rule1_old.values())
    assert len(audit) == matched == len({a[LID] for a in audit})
    assert meta["rules"] == [
        {"rule_id": "ADJ-2026-0001", "status": "applied", "rows_matched": matched, "reason": ""}
    ]
    assert {(a["rule_id"], a["field"], a["new_value"]) for a in audit} == {
        ("ADJ-2026-0001", "lcr_category", "NON_HQLA")
    }
    assert Counter(a["old_value"] for a in audit) == expected.rule1_old
    # every audited row is a deal of the run (its lineage id is in the aggregation's members)
    members = read(base.run.node_dir("entity_buckets.lineage")).column(LID).to_pylist()
    assert {a[LID] for a in audit} <= set(members)


@pytest.mark.slow
def test_rule2_audit(base, expected):
    audit, meta = _audit(base, "weigh__adjusted")
    assert len(audit) == len(expected.rule2_old) == len({a[LID] for a in audit})
    assert meta["rules"][0]["rows_matched"] == len(expected.rule2_old)
    assert {(a["rule_id"], a["field"]) for a in audit} == {("ADJ-2026-0002", "weighted_amount")}
    # the audited rows are exactly LE002's outflow deals, per the lineage checkpoint
    members = read(base.run.node_dir("entity_buckets.lineage")).to_pylist()
    entity_of = {m[LID]: m["legal_entity"] for m in members}
    assert {entity_of[a[LID]] for a in audit} == {"LE002"}
    # old values: the weighted amounts before the rule; new: x 1.05, to the column scale
    olds = sorted(Decimal(a["old_value"]) for a in audit)
    for got, want in zip(olds, expected.rule2_old, strict=True):
        assert abs(Fraction(got) - want) <= Fraction(1, 10**6), (got, float(want))
    for a in audit:
        old, new = Decimal(a["old_value"]), Decimal(a["new_value"])
        assert abs(new - old * Decimal("1.05")) <= Decimal("0.0000005"), a
    assert sum(Decimal(a["new_value"]) for a in audit) > sum(olds)


@pytest.mark.slow
def test_rule3_audit(base, expected):
    audit, meta = _audit(base, "entity_buckets__adjusted")
    assert meta["rules"] == [
        {"rule_id": "ADJ-2026-0003", "status": "applied", "rows_matched": 1, "reason": ""}
    ]
    (a,) = audit
    assert (a["rule_id"], a["field"]) == ("ADJ-2026-0003", "outflows")
    assert_close(Decimal(a["old_value"]), expected.buckets_before_rule3["LE003"]["outflows"], "old")
    assert Decimal(a["new_value"]) - Decimal(a["old_value"]) == RULE3[1]
    le003 = [r for r in read(base.run.node_dir("entity_buckets")).to_pylist()]
    assert a[LID] == next(r[LID] for r in le003 if r["legal_entity"] == "LE003")
    # the stage reports say the same
    reported = {x["rule_id"]: x["rows_matched"] for rep in base.reports for x in rep.adjustments}
    assert reported == {
        "ADJ-2026-0001": sum(expected.rule1_old.values()),
        "ADJ-2026-0002": len(expected.rule2_old),
        "ADJ-2026-0003": 1,
    }


# --------------------------------------------------------------------------- adjustments check
NEW_ADD = 500_000_000


@pytest.fixture(scope="module")
def pr_project(base) -> Path:
    """The project as a pull request changes it: ADJ-2026-0003 adds 500m instead of 250m.

    The checkout the base run was computed from; a checkout elsewhere, as CI makes it, is
    the test at the end of this module."""
    project = base.project
    f = project / "adjustments" / "lcr" / "ADJ-2026-0003.yaml"
    text = f.read_text()
    assert "value: 250000000}" in text
    f.write_text(text.replace("value: 250000000}", f"value: {NEW_ADD}}}"))
    return project


def expected_changes(lcr_data: Path) -> dict[tuple[str, str], tuple]:
    """(entity, measure) -> (before, after) for every reported figure the change moves."""
    old = expected_lcr(lcr_data, rule3_add=RULE3[1]).rows
    new = expected_lcr(lcr_data, rule3_add=NEW_ADD).rows
    return {
        (e, m): (old[e][m], new[e][m])
        for e in old
        for m in [*AMOUNTS, "lcr"]
        if old[e][m] != new[e][m]
    }


def assert_changes(rows: list[dict], want: dict[tuple[str, str], tuple]) -> None:
    got = {(r["legal_entity"], r["measure"]): r for r in rows}
    assert sorted(got) == sorted(want)
    for key, (before, after) in want.items():
        r = got[key]
        assert r["cob_date"] == COB.isoformat()
        num = (lambda v: v) if key[1] == "lcr" else (lambda v: Decimal(str(v)))
        assert_close(num(r["before"]), before, f"{key} before")
        assert_close(num(r["after"]), after, f"{key} after")
        assert_close(num(r["change"]), after - before, f"{key} change")


@pytest.mark.slow
def test_preview_recomputes_only_what_the_change_touches(base, pr_project, lcr_data):
    want = expected_changes(lcr_data)
    # the change moves LE003 and GROUP: outflows by exactly +250m, and what follows from it
    assert {e for e, _ in want} == {"LE003", "GROUP"}
    assert want[("LE003", "outflows")][1] - want[("LE003", "outflows")][0] == 250_000_000
    assert ("LE003", "net_outflows") in want and ("LE003", "lcr") in want
    f = pr_project / "adjustments" / "lcr" / "ADJ-2026-0003.yaml"
    changed, problems = load_rule_file(f)
    assert problems == [] and changed is not None
    out = preview(
        pr_project / "pipelines" / "lcr.yaml",
        pr_project,
        [changed],
        COB.isoformat(),
        base.storage,
        log=lambda m: None,
    )
    assert out["skipped"] is False and out["base_run"] == "base"
    assert out["recomputed_stages"] == ["entity_lcr"]
    # the deal stage and the aggregate are reused; the star stages nothing in a preview
    assert out["reused_stages"] == ["entity_buckets", "weigh__adjusted"]
    assert [(r["rule_id"], r["status"], r["rows_matched"]) for r in out["rules"]] == [
        ("ADJ-2026-0003", "applied", 1)
    ]
    assert sorted(out["changes"]) == ["entity_lcr"]
    assert_changes(out["changes"]["entity_lcr"], want)
    assert out["adjustment_set_hash"] != base.plan.adjustment_set_hash
    # the base run is left as it was
    le003 = next(
        r for r in read(base.run.node_dir("entity_lcr")).to_pylist() if r["legal_entity"] == "LE003"
    )
    assert_close(le003["outflows"], want[("LE003", "outflows")][0], "base outflows")


@pytest.mark.slow
def test_cli_check_with_a_preview(base, pr_project, lcr_data, monkeypatch, capsys):
    monkeypatch.setenv("REGFLOW_PROJECT", str(pr_project))
    f = pr_project / "adjustments" / "lcr" / "ADJ-2026-0003.yaml"
    argv = ["adjustments", "check", str(f), "--cob", COB.isoformat()]
    assert main([*argv, "--storage", str(base.storage), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True
    assert [p for p in report["problems"] if p["severity"] == "error"] == []
    assert [r["rule_id"] for r in report["rules"]] == ["ADJ-2026-0003"]
    (pv,) = report["previews"]
    assert pv["skipped"] is False
    assert pv["recomputed_stages"] == ["entity_lcr"]
    assert pv["reused_stages"] == ["entity_buckets", "weigh__adjusted"]
    assert [(r["rule_id"], r["rows_matched"]) for r in pv["rules"]] == [("ADJ-2026-0003", 1)]
    assert_changes(pv["changes"]["entity_lcr"], expected_changes(lcr_data))


@pytest.mark.slow
def test_cli_check_without_an_earlier_run_validates_only(base, pr_project, monkeypatch, capsys):
    monkeypatch.setenv("REGFLOW_PROJECT", str(pr_project))
    f = pr_project / "adjustments" / "lcr" / "ADJ-2026-0003.yaml"
    argv = ["adjustments", "check", str(f), "--cob", "2026-03-30", "--storage", str(base.storage)]
    assert main([*argv, "--json"]) == 0
    (pv,) = json.loads(capsys.readouterr().out)["previews"]
    assert pv["skipped"] is True and "2026-03-30" in pv["reason"]
    assert main(argv) == 0  # the markdown report says so
    out = capsys.readouterr().out
    assert "Validation: ✅ valid" in out and "Impact preview skipped" in out


@pytest.mark.slow
def test_cli_check_without_a_cob_previews_the_latest_cob_with_a_run(
    base, pr_project, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("REGFLOW_PROJECT", str(pr_project))
    f = pr_project / "adjustments" / "lcr" / "ADJ-2026-0003.yaml"
    # a later cob whose only run failed: not one to compare with
    failed = base.storage / "lcr" / "cob=2026-04-30" / "run=broken"
    failed.mkdir(parents=True)
    try:
        assert main(["adjustments", "check", str(f), "--storage", str(base.storage), "--json"]) == 0
    finally:
        shutil.rmtree(failed.parent)
    (pv,) = json.loads(capsys.readouterr().out)["previews"]
    assert pv["skipped"] is False and pv["cob"] == COB.isoformat()
    assert [(r["rule_id"], r["rows_matched"]) for r in pv["rules"]] == [("ADJ-2026-0003", 1)]
    # no run at all: validation alone, and the report says why
    empty = tmp_path / "no-runs"
    empty.mkdir()
    assert main(["adjustments", "check", str(f), "--storage", str(empty)]) == 0
    out = capsys.readouterr().out
    assert "Impact preview skipped" in out and "no successful run of 'lcr'" in out


@pytest.mark.slow
def test_cli_check_of_an_invalid_rule_fails_without_a_preview(base, tmp_path, monkeypatch, capsys):
    project = copy_project(tmp_path / "project")
    bad = project / "adjustments" / "lcr" / "ADJ-2026-0099.yaml"
    text = (project / "adjustments" / "lcr" / "ADJ-2026-0003.yaml").read_text()
    bad.write_text(
        text.replace("ADJ-2026-0003", "ADJ-2026-0099").replace("e.controller", "a.analyst")
    )
    monkeypatch.setenv("REGFLOW_PROJECT", str(project))
    for cob in (COB.isoformat(), "2026-03-30"):  # with and without an earlier run
        argv = ["adjustments", "check", str(bad), "--cob", cob, "--storage", str(base.storage)]
        assert main([*argv, "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["valid"] is False
        (err,) = [p for p in report["problems"] if p["severity"] == "error"]
        assert "maker-checker" in err["message"] and err["location"].startswith(f"{bad}:")
        assert report["previews"] == [{"skipped": True, "reason": "the rules are invalid"}]


@pytest.mark.slow
def test_preview_of_a_checkout_elsewhere_reuses_the_untouched_stages(base, lcr_data, tmp_path):
    """The pull request as CI checks it out: a copy of the project in another folder, every
    file with a new modification time. The reference data kept with the pipeline
    (``pipelines/reference/lcr_categories.csv``) is the base run's all the same: the stages
    upstream of the changed rule are reused, not recomputed for a new path."""
    pr = copy_project(tmp_path / "checkout")
    later = base.run.run_dir.stat().st_mtime + 3600
    for f in pr.rglob("*"):
        os.utime(f, (later, later))
    f = pr / "adjustments" / "lcr" / "ADJ-2026-0003.yaml"
    text = f.read_text()
    assert "value: 250000000}" in text
    f.write_text(text.replace("value: 250000000}", f"value: {NEW_ADD}}}"))
    changed, problems = load_rule_file(f)
    assert problems == [] and changed is not None
    lines: list[str] = []
    out = preview(
        pr / "pipelines" / "lcr.yaml", pr, [changed], COB.isoformat(), base.storage, lines.append
    )
    # (before: weigh__adjusted reads lcr_categories at another path, so every stage recomputed)
    assert [m for m in lines if "recomputing" in m] == [
        "  recomputing stage entity_lcr: node 'entity_buckets__adjusted' changed since run base"
    ]
    assert out["reused_stages"] == ["entity_buckets", "weigh__adjusted"]
    assert out["recomputed_stages"] == ["entity_lcr"]
    assert_changes(out["changes"]["entity_lcr"], expected_changes(lcr_data))
