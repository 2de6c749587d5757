"""End to end: `regflow run` executes the LCR pipeline through real Airflow (dag.test) on
local Spark, and `entity_lcr` equals an independent computation written from the reference.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import COB
from lcr_reference import compute_lcr_reference

pytestmark = pytest.mark.slow
CONTRACT = [
    "cob_date",
    "legal_entity",
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
    "lcr",
]
AMOUNTS = CONTRACT[2:-1]


def regflow(project: Path, airflow_home: Path, *args: str, check: bool = True):
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "REGFLOW_PROJECT": str(project)}
    env.pop("REGFLOW_STORAGE", None)
    exe = Path(sys.executable).parent / "regflow"
    proc = subprocess.run(
        [str(exe), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def export_csv(project, home, storage, node) -> list[dict]:
    out = regflow(
        project, home, "export", "lcr", node, "--cob", COB.isoformat(), "--storage", str(storage)
    ).stdout
    return list(csv.DictReader(io.StringIO(out)))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, lcr_data):
    """One project, two successful runs of the same data (the second recomputing every
    stage: the rerun's figures come from Spark again, not from the first run), then a
    failing run."""
    base = tmp_path_factory.mktemp("e2e")
    root = Path(__file__).resolve().parent.parent
    project = base / "project"
    for name in ("pipelines", "operators", "dags"):
        shutil.copytree(root / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    home, storage = base / "airflow", base / "storage"
    runs = []
    for extra in ([], ["--recompute", "all"]):
        runs.append(
            regflow(
                project,
                home,
                "run",
                "lcr",
                "--cob",
                COB.isoformat(),
                "--param",
                f"data_root={lcr_data}",
                "--storage",
                str(storage),
                *extra,
            )
        )
    return {"project": project, "home": home, "storage": storage, "data": lcr_data, "runs": runs}


def test_run_prints_a_per_stage_summary(e2e):
    out = e2e["runs"][0].stdout
    assert ": success in" in out
    for text in ("entity_buckets.lineage", "10,000", "entity_lcr", "(stage total)"):
        assert text in out


def test_entity_lcr_matches_the_independent_reference(e2e):
    got = export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_lcr")
    ref = compute_lcr_reference(e2e["data"], COB)
    assert [c for c in got[0] if not c.startswith("_")] == CONTRACT
    assert sorted(r["legal_entity"] for r in got) == sorted(ref["legal_entity"])
    by_entity = {r["legal_entity"]: r for r in got}
    for _, expected in ref.iterrows():
        row = by_entity[expected["legal_entity"]]
        assert row["cob_date"] == COB.isoformat()
        for col in AMOUNTS:
            assert abs(Decimal(row[col]) - Decimal(expected[col])) <= Decimal("0.01"), col
        assert float(row["lcr"]) == pytest.approx(expected["lcr"], rel=1e-9)
    # the caps bind somewhere, so the test exercises them
    assert any(Decimal(r["adj_15"]) > 0 for r in got)
    assert any(Decimal(r["adj_40"]) > 0 for r in got)


def test_rerun_gives_identical_outputs_and_lineage_ids(e2e):
    storage = e2e["storage"] / "lcr" / f"cob={COB.isoformat()}"
    runs = sorted(p for p in storage.glob("run=*"))
    assert len(runs) == 2
    assert "(reused, unchanged)" not in e2e["runs"][1].stdout  # (--recompute all)
    a = pq.read_table(runs[0] / "entity_buckets.lineage", partitioning=None)
    b = pq.read_table(runs[1] / "entity_buckets.lineage", partitioning=None)
    assert a.column("_lineage_id").to_pylist() == b.column("_lineage_id").to_pylist()
    first = pq.read_table(runs[0] / "entity_lcr", partitioning=None).sort_by("legal_entity")
    second = pq.read_table(runs[1] / "entity_lcr", partitioning=None).sort_by("legal_entity")
    assert first.equals(second)


def test_lineage_checkpoint_drills_down_to_deals(e2e):
    members = export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_buckets.lineage")
    assert len(members) == 10_000
    lcr = {
        r["legal_entity"]: r
        for r in export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_lcr")
    }
    le1 = [m for m in members if m["legal_entity"] == "LE001" and m["l1"]]
    assert abs(sum(Decimal(m["l1"]) for m in le1) - Decimal(lcr["LE001"]["l1"])) < Decimal("0.01")


def test_a_failed_run_reports_clearly_and_keeps_the_last_good_output(e2e, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(e2e["data"], data)
    fx_dir = data / "fx_rates" / f"cob={COB.isoformat()}"
    fx = pq.read_table(fx_dir)
    for f in fx_dir.glob("*.parquet"):
        f.unlink()
    pq.write_table(
        fx.filter(pa.compute.not_equal(fx.column("currency"), "JPY")), fx_dir / "part-00000.parquet"
    )
    before = export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_lcr")
    proc = regflow(
        e2e["project"],
        e2e["home"],
        "run",
        "lcr",
        "--cob",
        COB.isoformat(),
        "--param",
        f"data_root={data}",
        "--storage",
        str(e2e["storage"]),
        check=False,
    )
    assert proc.returncode == 1
    assert "no match in 'fx_rates'" in proc.stderr and "currency=JPY" in proc.stderr
    assert "node=deals_fx" in proc.stderr
    assert proc.stderr.count("pipeline=lcr") == 1  # the context once, not once per wrapper
    after = export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_lcr")
    assert after == before


def test_run_with_an_adjustments_folder_applies_and_audits(e2e, tmp_path):
    """`--adjustments DIR`: adding a file is all it takes; the run audits each change."""
    rules = tmp_path / "rules"
    rules.mkdir()
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "adjustments" / "lcr" / "ADJ-2026-0003.yaml", rules)
    base = {
        r["legal_entity"]: r
        for r in export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_lcr")
    }
    proc = regflow(
        e2e["project"],
        e2e["home"],
        "run",
        "lcr",
        "--cob",
        COB.isoformat(),
        "--param",
        f"data_root={e2e['data']}",
        "--storage",
        str(e2e["storage"]),
        "--adjustments",
        str(rules),
    )
    assert "ADJ-2026-0003" in proc.stdout and "1 rows matched" in proc.stdout
    # the rule splices in after entity_buckets: the stages before it are taken unchanged
    # from the latest successful run (the failed run in between is no base)
    assert "2 stage(s) unchanged since run" in proc.stdout
    assert proc.stdout.count("(reused, unchanged)") == 2
    after = {
        r["legal_entity"]: r
        for r in export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_lcr")
    }
    delta = Decimal(after["LE003"]["outflows"]) - Decimal(base["LE003"]["outflows"])
    assert delta == Decimal("250000000")
    assert after["LE001"]["outflows"] == base["LE001"]["outflows"]
    assert Decimal(after["GROUP"]["outflows"]) - Decimal(base["GROUP"]["outflows"]) == delta
    audit = export_csv(
        e2e["project"], e2e["home"], e2e["storage"], "entity_buckets__adjusted.audit"
    )
    assert len(audit) == 1
    row = audit[0]
    assert row["rule_id"] == "ADJ-2026-0003" and row["field"] == "outflows"
    assert Decimal(row["new_value"]) - Decimal(row["old_value"]) == delta
    assert Decimal(row["old_value"]) == Decimal(base["LE003"]["outflows"])
    assert row["adjustment_set_hash"] not in ("", "none")


def test_a_cob_without_data_fails_before_any_compute_and_keeps_the_published_figures(e2e, tmp_path):
    """Issue 16's repro: rerun the cob with a data root that holds only another cob. The
    run fails naming the source, the path and the cobs present, and nothing is published."""
    data = tmp_path / "data"
    other = "2026-04-30"
    for name in ("deals", "fx_rates"):
        shutil.copytree(e2e["data"] / name / f"cob={COB.isoformat()}", data / name / f"cob={other}")
    shutil.copy(e2e["data"] / "entities.parquet", data / "entities.parquet")
    before = export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_lcr")
    runs = sorted((e2e["storage"] / "lcr" / f"cob={COB.isoformat()}").glob("run=*"))
    proc = regflow(
        e2e["project"], e2e["home"], "run", "lcr", "--cob", COB.isoformat(),
        "--param", f"data_root={data}", "--storage", str(e2e["storage"]), check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())  # (the message may be wrapped)
    assert f"source 'deals' has no rows for cob {COB.isoformat()}" in err
    assert f"{data}/deals/cob={COB.isoformat()} does not exist; cobs present: {other}" in err
    assert "node=deals" in err
    failed = sorted(
        set((e2e["storage"] / "lcr" / f"cob={COB.isoformat()}").glob("run=*")) - set(runs)
    )
    assert len(failed) == 1
    assert not (failed[0] / "_RUN_SUCCESS").exists()
    assert not list(failed[0].glob("weigh*"))  # no compute: the first stage wrote nothing
    after = export_csv(e2e["project"], e2e["home"], e2e["storage"], "entity_lcr")
    assert after == before
