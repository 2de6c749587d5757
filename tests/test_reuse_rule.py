"""One stage-reuse rule for the run and the adjustment preview (issue 19).

The preview of a rule change recomputes only what the change touches and takes every other
stage from the cob's latest successful run. It must decide that by the run's own rule
(``regflow.storage.reuse``): a stage whose sources were corrected since the base run, or whose
outputs another regflow version computed, is recomputed, not reused because its node hash
alone still matches. The figures it reports are checked against the independent LCR oracle
of ``test_adjust_lcr`` (the reference with the rules applied by hand).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from runtime_helpers import run_all_stages
from test_adjust_lcr import AMOUNTS, NEW_ADD, assert_close, copy_project, expected_lcr

from regflow.adjust.loader import load_rule_file
from regflow.cli.adjust_preview import preview
from regflow.plan.build import build_plan
from regflow.storage import META_FILE, RunRef, publish_run

pytestmark = pytest.mark.slow  # every test previews a whole LCR run against a base run

COB = dt.date(2026, 3, 31)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, spark) -> dict:
    """Data of its own (this module corrects it), the LCR with the three sample rules run and
    published as 'base', and the project as a pull request changing ADJ-2026-0003."""
    from regflow.demo.data import generate_demo_data

    tmp = tmp_path_factory.mktemp("reuse-rule")
    data = tmp / "data"
    generate_demo_data(data, cob=COB, deals=2_000, entities=5, seed=7)
    project = copy_project(tmp / "project")
    storage = tmp / "storage"
    plan = build_plan(project / "pipelines" / "lcr.yaml", project / "adjustments" / "lcr")
    params = {"data_root": str(data)}
    run_all_stages(plan, storage, "base", spark, params, cob=COB.isoformat())
    run = RunRef(storage, "lcr", COB.isoformat(), "base")
    rules = [r for n in plan.adjustment_nodes() for r in n.params["rules"]]
    publish_run(run, {"params": params, "rules": rules})
    # the pull request, on the checkout the base run was computed from (see test_adjust_lcr)
    pr = project
    f = pr / "adjustments" / "lcr" / "ADJ-2026-0003.yaml"
    f.write_text(f.read_text().replace("value: 250000000}", f"value: {NEW_ADD}}}"))
    changed, problems = load_rule_file(f)
    assert problems == [] and changed is not None
    return {"data": data, "storage": storage, "run": run, "pr": pr, "rule": changed}


def _preview(setup: dict) -> dict:
    pr = setup["pr"]
    return preview(
        pr / "pipelines" / "lcr.yaml",
        pr,
        [setup["rule"]],
        COB.isoformat(),
        setup["storage"],
        log=lambda _m: None,
    )


def test_a_stage_computed_by_another_regflow_version_is_recomputed(setup):
    # the control: the preview of the rule change reuses what the change cannot touch
    out = _preview(setup)
    assert out["reused_stages"] == ["entity_buckets", "weigh__adjusted"]
    assert out["recomputed_stages"] == ["entity_lcr"]
    # the base run's aggregate as an older regflow wrote it
    meta_file = setup["run"].node_dir("entity_buckets") / META_FILE
    original = meta_file.read_text()
    meta = json.loads(original)
    meta_file.write_text(json.dumps({**meta, "code_version": "regflow 0.0.1"}))
    try:
        out = _preview(setup)
    finally:
        meta_file.write_text(original)
    # (the node-hash-only rule reused it: ["entity_buckets", "weigh__adjusted"])
    assert out["reused_stages"] == ["weigh__adjusted"]
    assert out["recomputed_stages"] == ["entity_buckets", "entity_lcr"]


def test_a_corrected_reference_file_of_the_same_size_and_time_is_recomputed(setup, monkeypatch):
    """A one-byte correction of the factor table kept with the pipeline (L2A's 0.85 becomes
    0.86): the same size, and the modification time put back. Only its content tells, and the
    stages reading it are recomputed with the corrected factor. (It runs before the FX
    correction below, which this module keeps, and puts the table back.)"""
    from lcr_reference import LCR_CATEGORIES

    table = setup["pr"] / "pipelines" / "reference" / "lcr_categories.csv"
    original = table.read_bytes()
    st = table.stat()
    assert original.count(b"L2A,L2A,0.85,") == 1
    table.write_bytes(original.replace(b"L2A,L2A,0.85,", b"L2A,L2A,0.86,"))
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert table.stat().st_size == st.st_size and table.stat().st_mtime_ns == st.st_mtime_ns
    lines: list[str] = []
    try:
        out = preview(
            setup["pr"] / "pipelines" / "lcr.yaml",
            setup["pr"],
            [setup["rule"]],
            COB.isoformat(),
            setup["storage"],
            log=lines.append,
        )
    finally:
        table.write_bytes(original)
        os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))
    # (before: its size and modification time were the base run's, so it was reused and the
    # figures kept the old factor)
    assert out["reused_stages"] == []
    assert out["recomputed_stages"] == ["weigh__adjusted", "entity_buckets", "entity_lcr"]
    assert (
        "  recomputing stage weigh__adjusted: source 'lcr_categories' changed since run base: "
        "its files differ"
    ) in lines
    # the figures after: the independent oracle with the corrected factor and the new rule
    monkeypatch.setitem(LCR_CATEGORIES, "L2A", ("L2A", "0.86"))
    after = expected_lcr(setup["data"], rule3_add=NEW_ADD).rows
    got = {(r["legal_entity"], r["measure"]): r for r in out["changes"]["entity_lcr"]}
    assert ("LE001", "l2a") in got  # the corrected factor moves every entity's L2A
    for (entity, measure), r in got.items():
        num = (lambda v: v) if measure == "lcr" else (lambda v: Decimal(str(v)))
        assert_close(num(r["after"]), after[entity][measure], f"{entity} {measure} after")


def test_a_stage_whose_source_was_corrected_is_recomputed(setup):
    """A late correction of the cob's FX rates: every stage reading them, and everything
    downstream, is recomputed; the preview then reports the figures the next run would, with
    the corrected rates and the changed rule, against the base run's."""
    before = expected_lcr(setup["data"]).rows  # the base run: the original rates, rule 250m
    fx = next((setup["data"] / "fx_rates").glob("cob=*/*.parquet"))
    table = pq.read_table(fx)
    i = table.schema.get_field_index("usd_rate")
    rates = [
        r * Decimal("1.1") if c == "EUR" else r
        for c, r in zip(table["currency"].to_pylist(), table["usd_rate"].to_pylist(), strict=True)
    ]
    field = table.schema.field(i)
    fixed = table.set_column(i, field, pa.array([round(r, 8) for r in rates], field.type))
    pq.write_table(fixed, fx)
    after = expected_lcr(setup["data"], rule3_add=NEW_ADD).rows

    out = _preview(setup)

    # (the node-hash-only rule reused ["entity_buckets", "weigh__adjusted"], so the figures
    # mixed the old rates with the new rule)
    assert out["reused_stages"] == []
    assert out["recomputed_stages"] == ["weigh__adjusted", "entity_buckets", "entity_lcr"]
    want = {
        (e, m): (before[e][m], after[e][m])
        for e in after
        for m in [*AMOUNTS, "lcr"]
        if before[e][m] != after[e][m]
    }
    assert {e for e, _ in want} > {"LE003", "GROUP"}  # the correction moves more than LE003
    got = {(r["legal_entity"], r["measure"]): r for r in out["changes"]["entity_lcr"]}
    assert sorted(got) == sorted(want)
    for key, (old, new) in want.items():
        num = (lambda v: v) if key[1] == "lcr" else (lambda v: Decimal(str(v)))
        assert_close(num(got[key]["before"]), old, f"{key} before")
        assert_close(num(got[key]["after"]), new, f"{key} after")


def test_the_rule_says_why_not(setup):
    """The shared rule itself, as both callers use it: reasons, not just a verdict."""
    from regflow.plan.build import build_plan_with_rules
    from regflow.storage.reuse import why_not_reusable

    run = setup["run"]
    summary = json.loads((run.run_dir / "_RUN_SUCCESS").read_text())
    from regflow.adjust.loader import load_rule_set

    rules, _, _ = load_rule_set([setup["pr"] / "adjustments" / "lcr"])
    plan = build_plan_with_rules(setup["pr"] / "pipelines" / "lcr.yaml", rules, label="PR")
    first = plan.stages[0]
    report = json.loads(run.stage_report(first.id).read_text())
    now = {n: (s["path"], s["fingerprint"]) for n, s in report["sources"].items()}

    def why(stage, params=summary["params"], reused=(), state=now.__getitem__):
        return why_not_reusable(plan, stage, run, params=params, reused=reused, source_state=state)

    assert why(first) is None
    assert "warehouse" in why(plan.stage("lcr_star"))
    assert "params differ" in why(first, params={**summary["params"], "extra": "1"})
    assert "upstream stage 'weigh__adjusted'" in why(plan.stage("entity_buckets"))
    assert why(plan.stage("entity_buckets"), reused={"weigh__adjusted"}) is None
    assert "node 'entity_buckets__adjusted' changed" in why(
        plan.stage("entity_lcr"), reused={"entity_buckets"}
    )
    moved = {**now, "fx_rates": (now["fx_rates"][0], "0" * 16)}
    assert "source 'fx_rates' changed" in why(first, state=moved.__getitem__)


def test_a_report_from_before_source_places_is_read_and_says_why(setup):
    """A stage report written before sources had a checkout-independent identity (no
    ``location``, a fingerprint of sizes and times) is read without error: its sources are
    compared by absolute path, and a fingerprint of another kind is a reason to recompute."""
    from regflow.adjust.loader import load_rule_set
    from regflow.plan.build import build_plan_with_rules
    from regflow.runtime.executor import run_variables
    from regflow.runtime.sources import fingerprint, resolve_source_path
    from regflow.storage.reuse import why_not_reusable

    run = setup["run"]
    params = json.loads((run.run_dir / "_RUN_SUCCESS").read_text())["params"]
    rules, _, _ = load_rule_set([setup["pr"] / "adjustments" / "lcr"])
    plan = build_plan_with_rules(setup["pr"] / "pipelines" / "lcr.yaml", rules, label="PR")
    first = plan.stages[0]
    variables = run_variables(plan, COB.isoformat(), params)

    def state(name):  # the reference table as it is now, the data as the report has it
        if name != "lcr_categories":
            return recorded[name]
        path, files = resolve_source_path(plan.source(name), variables)
        return str(path), fingerprint(files)

    report_file = run.stage_report(first.id)
    original = report_file.read_text()
    report = json.loads(original)
    assert "location" in report["sources"]["lcr_categories"]  # (the current report)
    recorded = {n: (f["path"], f["fingerprint"]) for n, f in report["sources"].items()}
    try:
        for facts in report["sources"].values():
            del facts["location"]
        report_file.write_text(json.dumps(report))
        assert (
            why_not_reusable(plan, first, run, params=params, reused=(), source_state=state) is None
        )
        # the fingerprint an older regflow wrote: names, sizes and modification times
        table = setup["pr"] / "pipelines" / "reference" / "lcr_categories.csv"
        st = table.stat()
        old = hashlib.sha256(f"{table.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        report["sources"]["lcr_categories"]["fingerprint"] = old[:16]
        report_file.write_text(json.dumps(report))
        why = why_not_reusable(plan, first, run, params=params, reused=(), source_state=state)
        assert why == "source 'lcr_categories' changed since run base: its files differ"
    finally:
        report_file.write_text(original)
