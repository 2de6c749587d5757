"""The cob of a run not given one (a scheduled run): the spec's ``cob`` rule, applied to the
date the run is stamped with; shown in the DAG docs; metadata, not data."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_airflow_dags import ROOT, dagbag

from regflow.errors import ConfigError, SpecError
from regflow.plan.cob import cob_of_run
from regflow.plan.compiler import compile_file
from regflow.plan.explain import explain
from regflow.render.docs import dag_doc
from regflow.render.tasks import _cob
from regflow.spec.jsonschema import spec_json_schema

D = dt.date.fromisoformat
# Good Friday and Easter Monday 2026
EASTER = ["2026-04-03", "2026-04-06"]


@pytest.mark.parametrize(
    "run_date,holidays,cob",
    [
        ("2026-03-31", [], "2026-03-30"),  # Tuesday: Monday
        ("2026-03-30", [], "2026-03-27"),  # Monday: the Friday before
        ("2026-03-29", [], "2026-03-27"),  # Sunday: Friday
        ("2026-03-28", [], "2026-03-27"),  # Saturday: Friday
        ("2026-04-07", EASTER, "2026-04-02"),  # Tuesday after Easter: Thursday before it
        ("2026-04-06", EASTER, "2026-04-02"),
        ("2026-04-07", [], "2026-04-06"),
        ("2026-01-01", ["2025-12-31"], "2025-12-30"),  # across a year end
    ],
)
def test_previous_business_day(run_date, holidays, cob):
    assert cob_of_run(D(run_date), "previous_business_day", holidays) == D(cob)
    assert cob_of_run(D(run_date), "run_date", holidays) == D(run_date)


SPEC = """\
pipeline: sched
schedule: "0 6 * * 1-5"
{cob}params: {{data_root: .}}
sources:
  loans:
    path: "{{data_root}}/loans"
    cob_column: cob_date
    primary_key: [loan_id]
    schema: {{loan_id: string, cob_date: date, amount: "decimal(20,2)"}}
nodes:
  - id: total
    op: aggregate
    inputs: [loans]
    group_by: [cob_date]
    measures: {{amount: {{sum: amount}}}}
"""
RULE = "cob:\n  rule: previous_business_day\n  holidays: [2026-04-06, 2026-04-03]\n"


def _spec(folder: Path, cob: str) -> Path:
    (folder / "pipelines").mkdir(parents=True, exist_ok=True)
    spec = folder / "pipelines" / "sched.yaml"
    spec.write_text(SPEC.format(cob=cob))
    return spec


def test_the_rule_is_metadata_shown_in_the_dag_docs(tmp_path):
    plain = compile_file(_spec(tmp_path / "a", ""))
    ruled = compile_file(_spec(tmp_path / "b", RULE))
    assert (plain.cob_rule, plain.cob_holidays) == ("run_date", ())
    assert (ruled.cob_rule, ruled.cob_holidays) == ("previous_business_day", tuple(EASTER))
    assert ruled.data_hash == plain.data_hash  # which cob runs, not what it computes
    assert ruled.metadata_hash != plain.metadata_hash
    assert [n.data_hash for n in ruled.nodes] == [n.data_hash for n in plain.nodes]
    doc = dag_doc(ruled)
    assert (
        "- **Cob of a run without a `cob` param** (a scheduled run, `0 6 * * 1-5`): the "
        "business day before the date the run is stamped with (rule `previous_business_day`: "
        "Monday to Friday, except 2 holiday(s): 2026-04-03, 2026-04-06)"
    ) in doc
    assert "(rule `run_date`, the default)" in dag_doc(plain)
    assert "schedule 0 6 * * 1-5 · cob previous_business_day (2 holidays)\n" in explain(ruled)
    assert "schedule 0 6 * * 1-5\n" in explain(plain)


@pytest.mark.parametrize(
    "cob,where,message",
    [
        ("cob: {rule: next_day}\n", "sched.yaml:3:", "rule"),
        ("cob: {holidays: [2026-04-03]}\n", "sched.yaml:3:", "holidays only apply to"),
        ("cob:\n  rule: previous_business_day\n  holidays: [2026-02-30]\n", "sched.yaml:5:",
         "holidays"),
        ("cob: {rule: previous_business_day, calendar: uk}\n", "sched.yaml:3:", "calendar"),
    ],
)  # fmt: skip
def test_a_bad_cob_rule_is_a_spec_error_at_its_line(tmp_path, cob, where, message):
    with pytest.raises(SpecError) as exc:
        compile_file(_spec(tmp_path, cob))
    text = str(exc.value)
    assert where in text and message in text


def test_the_json_schema_has_the_cob_rule():
    cob = spec_json_schema()["properties"]["cob"]
    defs = spec_json_schema()["$defs"]
    rule = defs[cob["$ref"].rsplit("/", 1)[-1]] if "$ref" in cob else cob
    assert rule["properties"]["rule"]["enum"] == ["run_date", "previous_business_day"]
    assert rule["additionalProperties"] is False


def test_the_task_cob_applies_the_rule_unless_the_run_has_a_cob(tmp_path):
    plan = compile_file(_spec(tmp_path, RULE))
    tuesday = dt.datetime(2026, 4, 7, 6, 0, tzinfo=dt.UTC)
    assert _cob({"params": {}, "logical_date": tuesday}, plan) == dt.date(2026, 4, 2)
    assert _cob({"params": {"cob": "2026-04-07"}, "logical_date": tuesday}, plan) == dt.date(
        2026, 4, 7
    )
    plain = compile_file(_spec(tmp_path / "plain", ""))
    assert _cob({"params": {}, "logical_date": tuesday}, plain) == dt.date(2026, 4, 7)
    with pytest.raises(ConfigError, match="the run's cob param '2026-02-30' is not a date"):
        _cob({"params": {"cob": "2026-02-30"}}, plan)


@pytest.mark.slow
def test_the_lcr_dag_says_which_cob_a_scheduled_run_computes(tmp_path):
    doc = dagbag(ROOT / "dags", tmp_path)["dags"]["lcr"]["doc_md"]
    assert "`0 6 * * 1-5`): the business day before the date the run is stamped with" in doc


# A run stamped Tuesday 2026-04-07 06:00 (as the scheduler stamps it), without a cob param,
# through real Airflow (dag.test). The data has the cob 2026-04-02 only.
PROBE = textwrap.dedent("""
    import datetime as dt, json, os, sys
    from pathlib import Path
    from regflow.cli.airflow_setup import configure_airflow, ensure_db
    project = Path(sys.argv[1])
    home = configure_airflow(project)
    os.environ["REGFLOW_STORAGE"] = sys.argv[2]
    with open(home / "db.log", "a") as log:
        ensure_db(home, log)
    from airflow.settings import configure_orm
    configure_orm()
    from regflow.plan.cache import load_plan
    from regflow.render.airflow_dag import build_dag
    dag = build_dag(load_plan(project / "pipelines" / "sched.yaml"))
    run = dag.test(logical_date=dt.datetime(2026, 4, 7, 6, 0, tzinfo=dt.timezone.utc),
                   run_conf={"data_root": str(project)})
    print("RESULT " + json.dumps({"state": str(getattr(run.state, "value", run.state))}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["previous_business_day", "run_date"])
def test_a_scheduled_run_computes_the_cob_of_the_rule(tmp_path, rule):
    project = tmp_path / "project"
    _spec(project, RULE.replace("previous_business_day", rule).replace(
        "  holidays: [2026-04-06, 2026-04-03]\n", "" if rule == "run_date" else
        "  holidays: [2026-04-06, 2026-04-03]\n"))  # fmt: skip
    from regflow.render.dagfile import write_dag_files

    write_dag_files(project)  # dag.test runs the DAG a file in the DAGs folder defines
    loans = project / "loans" / "cob=2026-04-02"
    loans.mkdir(parents=True)
    pq.write_table(
        pa.table({"loan_id": ["L1", "L2"],
                  "cob_date": pa.array([D("2026-04-02")] * 2, pa.date32()),
                  "amount": pa.array([1, 2], pa.decimal128(20, 2))}),
        loans / "part-0.parquet",
    )  # fmt: skip
    storage = tmp_path / "storage"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "REGFLOW_PROJECT": str(project),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(project), str(storage)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    state = json.loads(line.removeprefix("RESULT "))["state"]
    if rule == "previous_business_day":
        assert state == "success"
        runs = list((storage / "sched").glob("cob=*/run=*/_RUN_SUCCESS"))
        assert [r.parent.parent.name for r in runs] == ["cob=2026-04-02"]
        total = pq.read_table(runs[0].parent / "total").to_pylist()
        assert [r["amount"] for r in total] == [3]
    else:  # the run's own date: no data for that cob, and the run says so
        assert state == "failed"
        assert not list(storage.glob("sched/cob=*/run=*/_RUN_SUCCESS"))
        errors = [
            json.loads(p.read_text())
            for p in storage.glob("sched/cob=*/run=*/_stages/*.error.json")
        ]
        assert len(errors) == 1
        assert errors[0]["node"] == "loans"
        assert "no rows for cob 2026-04-07" in errors[0]["message"]
        assert "cobs present: 2026-04-02" in errors[0]["message"]
