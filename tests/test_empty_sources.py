"""A source with no rows for the cob fails the run before any compute, naming the source,
the path looked at and the cobs that exist; a source that says ``allow_empty: true`` gives an
empty input, and its empty lineage checkpoint is written on both engines (driver, Spark)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from runtime_helpers import COB, run_all_stages

from regflow.errors import DataError, SpecError
from regflow.plan.compiler import compile_file
from regflow.plan.explain import explain
from regflow.runtime.driver.cluster import _ranks
from regflow.runtime.sources import EmptySourceError
from regflow.storage import RunRef

SPEC = """\
pipeline: cobs
params: {{data_root: .}}
sources:
  loans:
    path: "{{data_root}}/loans"
    cob_column: cob_date
    primary_key: [loan_id]
    schema: {{loan_id: string, cob_date: date, desk: string, amount: "decimal(20,2)"}}{extra}
nodes:
  - id: doubled
    op: calc
    inputs: [loans]
    columns: {{twice: "amount * 2"}}
  - id: by_desk
    op: aggregate
    inputs: [doubled]
    group_by: [cob_date, desk]
    measures: {{amount: {{sum: amount}}, twice: {{sum: twice}}}}
"""
OTHER = "2026-04-30"


def _loans(folder: Path, cobs: list[str], n: int = 3) -> None:
    """``n`` loans per cob in ``cobs``, as one Parquet file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(f"L{c}-{i}", dt.date.fromisoformat(c), f"D{i % 2}", Decimal(i + 1)) for c in cobs
            for i in range(n)]  # fmt: skip
    pq.write_table(
        pa.table(
            {
                "loan_id": pa.array([r[0] for r in rows], pa.string()),
                "cob_date": pa.array([r[1] for r in rows], pa.date32()),
                "desk": pa.array([r[2] for r in rows], pa.string()),
                "amount": pa.array([r[3] for r in rows], pa.decimal128(20, 2)),
            }
        ),
        folder / "part-0.parquet",
    )


def _project(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    spec = tmp_path / "pipelines" / "cobs.yaml"
    spec.write_text(SPEC.format(extra=extra))
    return spec


def _run(tmp_path: Path, spark, policy, run_id: str = "r1"):
    plan = compile_file(tmp_path / "pipelines" / "cobs.yaml")
    return run_all_stages(
        plan, tmp_path / "storage", run_id, spark, {"data_root": str(tmp_path)}, policy=policy
    )


def _missing_folder(loans: Path) -> None:
    _loans(loans / f"cob={OTHER}", [OTHER])


def _empty_folder(loans: Path) -> None:
    _loans(loans / f"cob={OTHER}", [OTHER])
    (loans / f"cob={COB}").mkdir()


def _zero_row_file(loans: Path) -> None:
    _loans(loans / f"cob={OTHER}", [OTHER])
    _loans(loans / f"cob={COB}", [COB], n=0)


def _other_cob_in_the_folder(loans: Path) -> None:
    _loans(loans / f"cob={COB}", [OTHER])


def _other_cob_unpartitioned(loans: Path) -> None:
    _loans(loans, [OTHER])


def _cobs_around_it(loans: Path) -> None:  # the footers cannot tell: Spark looks
    _loans(loans, ["2026-03-30", "2026-04-01"])


CASES = {
    "missing cob folder beside other cobs": (
        _missing_folder, f"loans/cob={COB} does not exist", [OTHER]),
    "empty cob folder": (_empty_folder, f"loans/cob={COB} is empty", [OTHER]),
    "0-row file": (_zero_row_file, f"loans/cob={COB} holds no rows;", [OTHER]),
    "rows of another cob in the cob's folder": (
        _other_cob_in_the_folder, f"loans/cob={COB} holds no rows with cob_date = {COB}",
        [OTHER]),
    "rows of another cob only": (
        _other_cob_unpartitioned, f"loans holds no rows with cob_date = {COB}", [OTHER]),
    "rows of the cobs around it": (
        _cobs_around_it, f"loans holds no rows with cob_date = {COB}",
        ["2026-03-30", "2026-04-01"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_source_without_rows_for_the_cob_fails_before_any_compute(tmp_path, spark, engine, case):
    make, why, cobs = CASES[case]
    _project(tmp_path)
    make(tmp_path / "loans")
    with pytest.raises(EmptySourceError) as exc:
        _run(tmp_path, spark, engine)
    err = exc.value
    assert isinstance(err, DataError)
    assert err.node == "loans" and err.cob == COB and err.cobs == cobs
    text = str(err)
    assert f"source 'loans' has no rows for cob {COB}: " in text
    assert why in text.replace(str(tmp_path) + "/", "")
    assert f"cobs present: {', '.join(cobs)}." in text
    assert "allow_empty: true" in text
    run = RunRef(tmp_path / "storage", "cobs", COB, "r1")
    assert not run.run_dir.exists() or not any(run.run_dir.glob("by_desk*"))


def test_a_partitioned_source_never_falls_back_to_the_other_cobs(tmp_path, spark, engine):
    """The repro of issue 16: a cob computed with 3 loans, then rerun with a data root
    holding only another cob. The rerun fails, and the first run's output is untouched."""
    _project(tmp_path)
    first = tmp_path / "first"
    _loans(first / "loans" / f"cob={COB}", [COB])
    plan = compile_file(tmp_path / "pipelines" / "cobs.yaml")
    storage = tmp_path / "storage"
    run_all_stages(plan, storage, "r1", spark, {"data_root": str(first)}, policy=engine)
    done = RunRef(storage, "cobs", COB, "r1")
    before = pq.read_table(done.node_dir("by_desk")).to_pylist()
    assert sum(r["amount"] for r in before) == Decimal(6)
    second = tmp_path / "second"
    _loans(second / "loans" / f"cob={OTHER}", [OTHER])
    with pytest.raises(EmptySourceError, match=rf"cob={COB} does not exist; cobs present: {OTHER}"):
        run_all_stages(plan, storage, "r2", spark, {"data_root": str(second)}, policy=engine)
    assert pq.read_table(done.node_dir("by_desk")).to_pylist() == before


@pytest.mark.parametrize("empty", ["missing cob folder", "0-row file", "other cob only"])
def test_an_allowed_empty_source_gives_an_empty_run(tmp_path, spark, engine, empty):
    """``allow_empty: true``: the run goes through, the aggregate and its lineage checkpoint
    are written with no rows, on the driver and by Spark."""
    _project(tmp_path, "\n    allow_empty: true")
    loans = tmp_path / "loans"
    if empty == "missing cob folder":
        _missing_folder(loans)
    elif empty == "0-row file":
        _zero_row_file(loans)
    else:
        _other_cob_unpartitioned(loans)
    reports = _run(tmp_path, spark, engine)
    assert "4 columns · may be empty" in explain(compile_file(tmp_path / "pipelines" / "cobs.yaml"))
    run = RunRef(tmp_path / "storage", "cobs", COB, "r1")
    assert pq.read_table(run.node_dir("by_desk")).num_rows == 0
    ckpt = pq.read_table(run.node_dir("by_desk.lineage"))
    assert ckpt.num_rows == 0 and "cob_date" in ckpt.column_names
    assert run.metadata("by_desk")["rows"] == 0
    outputs = {o.name: o.rows for r in reports for o in r.outputs}
    assert outputs == {"by_desk.lineage": 0, "by_desk": 0}
    if engine.mode == "spark":  # (the driver engine never ran)
        assert {e["engine"] for r in reports for e in r.engines} == {"spark"}


def test_allow_empty_needs_declared_columns(tmp_path):
    spec = tmp_path / "pipelines" / "cobs.yaml"
    _project(tmp_path, "\n    allow_empty: true")
    spec.write_text(spec.read_text().replace(
        '    schema: {loan_id: string, cob_date: date, desk: string, amount: "decimal(20,2)"}\n',
        ""))  # fmt: skip
    with pytest.raises(SpecError) as exc:
        compile_file(spec)
    assert "cobs.yaml:8:18: " in str(exc.value)  # at allow_empty: true
    assert "allow_empty needs the source's columns" in str(exc.value)


@pytest.mark.parametrize(
    "column",
    [
        pa.chunked_array([], pa.date32()),
        pa.chunked_array([pa.array([], pa.date32())]),
        pa.chunked_array([pa.array([], pa.string())]),
        pa.chunked_array(
            [pa.DictionaryArray.from_arrays(pa.array([], pa.int32()), pa.array([], pa.date32()))]
        ),
    ],
    ids=["no chunks", "one empty chunk", "string", "dictionary-encoded"],
)
def test_ranks_of_an_empty_column_are_empty(column):
    assert _ranks(column).tolist() == []


CSV_SPEC = """\
pipeline: limits
params: {data_root: .}
sources:
  desks:
    format: csv
    path: "{data_root}/desks.csv"
    primary_key: [desk]
    schema: {desk: string, var_limit: "decimal(20,2)"}
nodes:
  - id: total
    op: aggregate
    inputs: [desks]
    group_by: [desk]
    measures: {var_limit: {sum: var_limit}}
"""


@pytest.mark.parametrize("body", ["", "\n\n", "RATES,100.00\n"], ids=["header", "blank", "a row"])
def test_a_csv_source_with_a_header_only_has_no_rows(tmp_path, spark, engine, body):
    (tmp_path / "pipelines").mkdir()
    spec = tmp_path / "pipelines" / "limits.yaml"
    spec.write_text(CSV_SPEC)
    (tmp_path / "desks.csv").write_text("desk,var_limit\n" + body)
    plan = compile_file(spec)
    params = {"data_root": str(tmp_path)}
    if not body.strip():
        with pytest.raises(EmptySourceError, match=r"desks.csv holds no rows; cobs present: none"):
            run_all_stages(plan, tmp_path / "storage", "r1", spark, params, policy=engine)
        return
    run_all_stages(plan, tmp_path / "storage", "r1", spark, params, policy=engine)
    run = RunRef(tmp_path / "storage", "limits", COB, "r1")
    assert pq.read_table(run.node_dir("total")).to_pylist()[0]["var_limit"] == Decimal("100.00")
