"""A rule may be spliced after (or before) any node of any pipeline shape: the DAG builds with
unique task ids that adding a rule never renames, and a real Airflow run applies every rule.

Three small shapes: an aggregate read only by a star schema, fan-out (a row-wise node and an
aggregate each read by two nodes), and sinks after a checkpoint. For every splice point the
DAG is built under real Airflow; per shape, one run (``regflow run``: dag.test, local Spark,
the embedded PostgreSQL for the star) with a rule at every point, checked against a plain
Python computation of the same pipeline.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regflow.render.dagfile import write_dag_files

COB = "2026-03-31"
ITEMS = [("a", "g1", Decimal("1.00")), ("b", "g1", Decimal("2.00")), ("c", "g2", Decimal("3.00"))]
ITEMS += [("d", "g2", Decimal("4.00"))]

SOURCE = """\
params: {data_root: .}
sources:
  items:
    path: "{data_root}/items"
    primary_key: [item_id]
    cob_column: cob_date
    schema: {item_id: string, cob_date: date, grp: string, v: "decimal(20,2)"}
"""

SHAPES = {
    # an aggregate whose only consumer is the star schema (the star reads stored outputs)
    "agg_star": """\
nodes:
  - {id: prep, op: calc, inputs: [items], columns: {w: "v * 2"}}
  - id: total
    op: aggregate
    inputs: [prep]
    group_by: [cob_date, grp]
    measures: {v: {sum: v}, w: {sum: w}}
  - id: star
    op: star_schema
    inputs: [total]
    dimensions:
      date: {generated: calendar}
    facts:
      grp_total:
        from: total
        grain: [cob_date, grp]
        date: cob_date
        attributes: [grp]
        measures: [v, w]
""",
    # a row-wise node read by two nodes, and an aggregate read by two nodes; row-wise sinks
    "fanout": """\
nodes:
  - {id: prep, op: calc, inputs: [items], columns: {w: "v * 2"}}
  - {id: big, op: filter, inputs: [prep], where: "v > 2"}
  - id: total
    op: aggregate
    inputs: [prep]
    group_by: [grp]
    measures: {v: {sum: v}, w: {sum: w}}
  - {id: total_x, op: calc, inputs: [total], columns: {x: "v + 1"}}
  - {id: total_y, op: calc, inputs: [total], columns: {y: "w + 1"}}
""",
    # a checkpointed row-wise node, then an aggregate nobody reads
    "sinks": """\
nodes:
  - {id: prep, op: calc, inputs: [items], columns: {w: "v * 2"}, checkpoint: true}
  - id: total
    op: aggregate
    inputs: [prep]
    group_by: [grp]
    measures: {v: {sum: v}, w: {sum: w}}
""",
}

RULE = """\
rule_id: {rule_id}
pipeline: {pipeline}
stage: {stage}
position: {position}
conditions:
  - {{field: grp, operator: "=", value: g1}}
adjustments:
  - {{field: v, operation: add, value: {add}}}
effective_date: 2026-01-01
approval: {{requested_by: a.analyst, approved_by: b.checker, timestamp: 2026-01-02T09:00:00Z}}
reason: splice point test
"""

Row = dict[str, object]


def splice_points(shape: str) -> list[tuple[str, str]]:
    """Every place a rule may go: after the source and after every node but the star, and
    before every node but the star (nothing runs before a source)."""
    nodes = [n for n in _node_ids(shape) if n != "star"]
    return [("items", "after")] + [(n, p) for n in nodes for p in ("after", "before")]


def _node_ids(shape: str) -> list[str]:
    import yaml

    return [n["id"] for n in yaml.safe_load(SHAPES[shape])["nodes"]]


def amount(k: int) -> Decimal:
    """Rule k's addition: a distinct power of ten, so each sum shows which rules touched it."""
    return Decimal(10) ** (k + 1)


def write_project(root: Path) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "operators").mkdir()
    for shape, nodes in SHAPES.items():
        (root / "pipelines" / f"{shape}.yaml").write_text(f"pipeline: {shape}\n{SOURCE}{nodes}")
    (root / "data" / "items").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "item_id": [i for i, _, _ in ITEMS],
                "cob_date": pa.array([dt.date(2026, 3, 31)] * len(ITEMS)),
                "grp": [g for _, g, _ in ITEMS],
                "v": pa.array([v for _, _, v in ITEMS], pa.decimal128(20, 2)),
            }
        ),
        root / "data" / "items" / "part-0.parquet",
    )
    write_dag_files(root)
    return root


def write_rules(folder: Path, shape: str, points: list[tuple[str, str]]) -> dict[str, Decimal]:
    """One rule per point; returns each point's addition, keyed 'stage/position'."""
    folder.mkdir(parents=True, exist_ok=True)
    adds = {}
    for k, (stage, position) in enumerate(points):
        rule_id = f"R-{k:02d}"
        adds[f"{stage}/{position}"] = amount(k)
        (folder / f"{rule_id}.yaml").write_text(
            RULE.format(
                rule_id=rule_id, pipeline=shape, stage=stage, position=position, add=amount(k)
            )
        )
    return adds


# ------------------------------------------------------------------ the independent reference
def expected(shape: str, adds: dict[str, Decimal]) -> dict[str, list[Row]]:
    """Each sink's rows, computed in plain Python: a rule after X applies to X's output, a
    rule before X to X's input; a rule adds its amount to v of the rows whose grp is g1."""

    def rule(rows: list[Row], point: str) -> list[Row]:
        add = adds.get(point)
        if add is None:
            return rows
        return [{**r, "v": r["v"] + add} if r["grp"] == "g1" else r for r in rows]

    def node(name: str, rows: list[Row], fn: Callable[[list[Row]], list[Row]]) -> list[Row]:
        return rule(fn(rule(rows, f"{name}/before")), f"{name}/after")

    def calc(col: str, src: str, k: int) -> Callable[[list[Row]], list[Row]]:
        return lambda rows: [{**r, col: r[src] * k if col == "w" else r[src] + k} for r in rows]

    def total(rows: list[Row]) -> list[Row]:
        out: dict[str, Row] = {}
        for r in rows:
            g = out.setdefault(r["grp"], {"grp": r["grp"], "v": Decimal(0), "w": Decimal(0)})
            g["v"] += r["v"]
            g["w"] += r["w"]
        return list(out.values())

    items = rule([{"item_id": i, "grp": g, "v": v} for i, g, v in ITEMS], "items/after")
    prep = node("prep", items, calc("w", "v", 2))
    tot = node("total", prep, total)
    if shape == "agg_star":
        return {"total": tot}
    if shape == "sinks":
        return {"total": tot}
    return {
        "big": node("big", prep, lambda rows: [r for r in rows if r["v"] > 2]),
        "total_x": node("total_x", tot, calc("x", "v", 1)),
        "total_y": node("total_y", tot, calc("y", "w", 1)),
    }


# ------------------------------------------------------------------ building every splice point
BUILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from regflow.plan.build import build_plan
    from regflow.render.airflow_dag import build_dag

    out = {}
    for spec, folder, key in json.loads(sys.argv[1]):
        try:
            dag = build_dag(build_plan(spec, folder))
            out[key] = {"tasks": [t.task_id for t in dag.tasks],
                        "edges": sorted([u.task_id, d.task_id]
                                        for u in dag.tasks for d in u.downstream_list)}
        except Exception as exc:
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
""")


def airflow_env(home: Path, project: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "REGFLOW_PROJECT": str(project),
        "REGFLOW_STORAGE": str(project / "storage"),
    }
    env.pop("REGFLOW_WAREHOUSE", None)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every shape with no rule, and with one rule at each splice point, built by Airflow."""
    base = tmp_path_factory.mktemp("splice")
    project = write_project(base / "project")
    jobs = []
    for shape in SHAPES:
        spec = str(project / "pipelines" / f"{shape}.yaml")
        jobs.append((spec, str(base / "none" / shape), f"{shape}:none"))
        for stage, position in splice_points(shape):
            folder = base / "one" / shape / f"{stage}-{position}"
            write_rules(folder, shape, [(stage, position)])
            jobs.append((spec, str(folder), f"{shape}:{stage}/{position}"))
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, json.dumps(jobs)],
        env=airflow_env(base / "airflow", project),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


POINTS = [(shape, stage, pos) for shape in SHAPES for stage, pos in splice_points(shape)]


@pytest.mark.parametrize(("shape", "stage", "position"), POINTS)
def test_a_rule_at_any_splice_point_builds_with_unique_stable_task_ids(
    built, shape, stage, position
):
    got = built[f"{shape}:{stage}/{position}"]
    assert "error" not in got, got.get("error")
    tasks = got["tasks"]
    assert len(tasks) == len(set(tasks))
    # adding a rule never renames a task: every task of the pipeline without rules is kept,
    # with the same dependencies between them
    before = built[f"{shape}:none"]
    assert set(before["tasks"]) <= set(tasks)
    new = set(tasks) - set(before["tasks"])
    assert new <= {f"{stage}__adjusted"}
    if new:  # the rules follow a node that is a stage of its own: they run right after it
        assert [stage, f"{stage}__adjusted"] in got["edges"]


# ------------------------------------------------------------------ one real run per shape
def regflow(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "regflow"
    proc = subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def export(env: dict[str, str], project: Path, shape: str, node: str) -> list[dict[str, str]]:
    out = regflow(env, project, "export", shape, node, "--cob", COB).stdout
    return list(csv.DictReader(io.StringIO(out)))


def by_key(rows: list[dict[str, str]], key: str, cols: list[str]) -> dict[str, tuple]:
    return {r[key]: tuple(Decimal(r[c]) for c in cols) for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_run_with_a_rule_at_every_splice_point_applies_them_all(tmp_path, shape):
    project = write_project(tmp_path / "project")
    points = splice_points(shape)
    folder = project / "adjustments" / shape
    adds = write_rules(folder, shape, points)
    env = airflow_env(tmp_path / "airflow", project)
    out = regflow(
        env, project, "run", shape, "--cob", COB, "--param", f"data_root={project / 'data'}"
    ).stdout
    assert ": success in" in out
    want = expected(shape, adds)
    for sink, rows in want.items():
        cols = [c for c in ("v", "w", "x", "y") if c in rows[0]]
        key = "item_id" if "item_id" in rows[0] else "grp"
        got = by_key(export(env, project, shape, f"{sink}__adjusted"), key, cols)
        assert got == {r[key]: tuple(r[c] for c in cols) for r in rows}, sink
    if shape == "agg_star":  # the star landed the adjusted totals
        q = "SELECT grp, v, w FROM agg_star.fact_grp_total ORDER BY grp"
        table = regflow(env, project, "warehouse", "query", q).stdout
        landed = {
            parts[0]: (Decimal(parts[1].replace(",", "")), Decimal(parts[2].replace(",", "")))
            for line in table.splitlines()
            if (parts := line.split()) and parts[0] in ("g1", "g2")
        }
        assert landed == {r["grp"]: (r["v"], r["w"]) for r in want["total"]}
