"""A join loses no row silently: by default a row without a match fails the run, naming its
key; a join that says ``require_match: false`` counts its unmatched rows (in the job that
computes it) in the stage report, the log and the run summary."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from runtime_helpers import COB, run_all_stages

from regflow.cli.airflow_run import RunResult
from regflow.cli.run import print_run_summary
from regflow.errors import DataError
from regflow.plan.compiler import compile_file
from regflow.render.tasks import publish_task
from regflow.runtime.executor import run_stage
from regflow.storage import RunRef

SPEC = """\
pipeline: {name}
params: {{data_root: .}}
sources:
  loans:
    path: "{{data_root}}/loans"
    primary_key: [loan_id]
    schema: {{loan_id: string, desk: string, currency: string, amount: "decimal(20,2)"}}
  fx:
    path: "{{data_root}}/fx"
    primary_key: [currency]
    schema: {{currency: string, usd_rate: "decimal(18,8)"}}
nodes:
  - id: loans_fx
    op: join
    inputs: [loans, fx]
    on: [currency]
    columns: [usd_rate]{join}
  - id: usd
    op: calc
    inputs: [loans_fx]
    columns:
      amount_usd: {{expr: "amount * usd_rate", type: "decimal(38,10)"}}
  - id: by_desk
    op: aggregate
    inputs: [usd]
    group_by: [desk]
    measures: {{amount: {{sum: amount}}, amount_usd: {{sum: amount_usd}}}}
"""
LOANS = [  # (loan_id, desk, currency, amount)
    ("L1", "D1", "USD", "100.00"),
    ("L2", "D1", "EUR", "200.00"),
    ("L3", "D2", "CHF", "300.00"),
    ("L4", "D2", "EUR", "400.00"),
    ("L5", "D2", "CHF", "500.00"),
]
RATES = {"USD": "1", "EUR": "1.1", "GBP": "1.25"}  # no CHF rate


def _project(tmp_path: Path, name: str, join: str = "", rates=RATES) -> Path:
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    spec = tmp_path / "pipelines" / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, join=join))
    for folder, table in (
        ("loans", {
            "loan_id": [r[0] for r in LOANS], "desk": [r[1] for r in LOANS],
            "currency": [r[2] for r in LOANS],
            "amount": pa.array([Decimal(r[3]) for r in LOANS], pa.decimal128(20, 2)),
        }),
        ("fx", {
            "currency": list(rates),
            "usd_rate": pa.array([Decimal(v) for v in rates.values()], pa.decimal128(18, 8)),
        }),
    ):  # fmt: skip
        (tmp_path / folder).mkdir(exist_ok=True)
        pq.write_table(pa.table(table), tmp_path / folder / "part-0.parquet")
    return spec


def _expected(keep: bool) -> dict[str, tuple[Decimal, Decimal | None]]:
    """By desk: (sum of amount, sum of amount in USD), computed here from LOANS."""
    out: dict[str, list] = {}
    for _, desk, ccy, amount in LOANS:
        if ccy not in RATES and not keep:
            continue
        a, u = out.setdefault(desk, [Decimal(0), None])
        usd = Decimal(amount) * Decimal(RATES[ccy]) if ccy in RATES else None
        out[desk] = [a + Decimal(amount), u if usd is None else (u or 0) + usd]
    return {k: (v[0], v[1]) for k, v in out.items()}


def _by_desk(tmp_path: Path, name: str, run_id: str) -> dict:
    run = RunRef(tmp_path / "storage", name, COB, run_id)
    return {r["desk"]: (r["amount"], r["amount_usd"]) for r in
            pq.read_table(run.node_dir("by_desk")).to_pylist()}  # fmt: skip


def test_a_join_requires_a_match_by_default_and_names_the_key(tmp_path, spark, engine):
    spec = _project(tmp_path, "strict")
    with pytest.raises(DataError) as exc:
        run_all_stages(compile_file(spec), tmp_path / "storage", "r1", spark,
                       {"data_root": str(tmp_path)}, policy=engine)  # fmt: skip
    assert exc.value.node == "loans_fx"
    text = str(exc.value)
    assert "no match in 'fx' for currency=CHF (a row of 'loans')" in text
    assert "require_match: false" in text
    assert "lineage id" not in text
    assert not RunRef(tmp_path / "storage", "strict", COB, "r1").is_complete("by_desk")


@pytest.mark.parametrize("how", ["left", "inner"])
def test_a_partial_join_counts_its_unmatched_rows(tmp_path, spark, how, engine):
    name = f"partial_{how}"
    spec = _project(tmp_path, name, f"\n    how: {how}\n    require_match: false")
    logged: list[str] = []
    plan = compile_file(spec)
    reports = [
        run_stage(plan, s.id, cob=COB, run_id="r1", root=tmp_path / "storage",
                  params={"data_root": str(tmp_path)}, spark=spark, log=logged.append,
                  policy=engine)
        for s in plan.stages
    ]  # fmt: skip
    unmatched = sum(1 for r in LOANS if r[2] not in RATES)
    want = {"join": "loans_fx", "left": "loans", "lookup": "fx", "how": how,
            "rows": len(LOANS), "unmatched": unmatched}  # fmt: skip
    assert reports[0].joins == {"loans_fx": want}
    run = RunRef(tmp_path / "storage", name, COB, "r1")
    stored = json.loads(run.stage_report(reports[0].stage).read_text())
    assert stored["joins"] == {"loans_fx": want}
    fate = "dropped" if how == "inner" else "kept, lookup columns null"
    assert f"  join loans_fx: 2 of 5 rows of 'loans' without a match in 'fx' ({fate})" in logged
    assert _by_desk(tmp_path, name, "r1") == _expected(keep=how == "left")


def test_the_run_summary_reports_the_unmatched_rows(tmp_path, spark, monkeypatch, capsys, engine):
    """The published run summary (``_RUN_SUCCESS``) and ``regflow run``'s output."""
    spec = _project(tmp_path, "partial", "\n    require_match: false")
    reports = run_all_stages(compile_file(spec), tmp_path / "storage", "r1", spark,
                             {"data_root": str(tmp_path)}, policy=engine)  # fmt: skip
    monkeypatch.setenv("REGFLOW_STORAGE", str(tmp_path / "storage"))
    context = {"params": {"cob": COB, "data_root": str(tmp_path)}, "run_id": "r1"}
    publish_task(str(spec), context)
    run = RunRef(tmp_path / "storage", "partial", COB, "r1")
    summary = json.loads((run.run_dir / "_RUN_SUCCESS").read_text())
    assert summary["joins"] == {
        "loans_fx": {"join": "loans_fx", "left": "loans", "lookup": "fx", "how": "left",
                     "rows": 5, "unmatched": 2}
    }  # fmt: skip
    capsys.readouterr()
    print_run_summary(
        RunResult("partial", COB, "r1", "success", 1.0, [r.to_dict() for r in reports])
    )
    out = capsys.readouterr().out
    assert "  partial joins (require_match: false):\n" in out
    assert (
        "    loans_fx         2 of 5 rows without a match in 'fx' (kept with null lookup columns)"
    ) in out


def test_counting_unmatched_rows_costs_no_spark_job(tmp_path, spark, engine):
    """Every loan has a rate: the partial join's run (counting) runs as many Spark jobs as
    the strict one (which fails on a row inside the same job)."""
    rates = {**RATES, "CHF": "1.2"}
    jobs = []
    for name, join in (("strict_all", ""), ("partial_all", "\n    require_match: false")):
        root = tmp_path / name
        root.mkdir()
        spec = _project(root, name, join, rates=rates)
        tracker = spark.sparkContext.statusTracker()
        before = set(tracker.getJobIdsForGroup(None))
        reports = run_all_stages(compile_file(spec), root / "storage", "r1", spark,
                                 {"data_root": str(root)}, policy=engine)  # fmt: skip
        jobs.append(len(set(tracker.getJobIdsForGroup(None)) - before))
        if name == "partial_all":
            assert reports[0].joins["loans_fx"]["unmatched"] == 0
            assert reports[0].joins["loans_fx"]["rows"] == len(LOANS)
    assert jobs[0] == jobs[1]
