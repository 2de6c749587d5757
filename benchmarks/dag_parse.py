"""DAG parse time: regflow vs hand-written Airflow vs dag-factory, side by side.

Generates 100 pipelines of 30 nodes (10 stages, so 11 Airflow tasks each) in three equivalent
forms with the same DAG ids, task ids and dependencies, then times Airflow's
``DagBag(dag_folder=...)`` on each:

* ``regflow``: ``pipelines/p000.yaml``.. plus their DAG files as ``regflow dags`` writes them
  (one small file per pipeline, as the hand-written form), measured with an empty plan cache
  (``cold``: every spec is compiled) and with the cache populated (``warm``);
* ``hand-written``: one ``.py`` file per pipeline with PythonOperators;
* ``dag-factory``: one YAML config per pipeline plus the standard ``load_yaml_dags`` loader.

Two measurements:

1. In-process steady state (the headline figure): one process, modules already imported,
   5 repetitions in rotating order, median and min. Also times serialising the bagged DAGs
   (``DagSerialization.to_dict``), which Airflow's DAG processor does after every parse.
2. Fresh process: one new interpreter per measurement that, like Airflow 3's DAG processor,
   has ``airflow`` and the ``airflow.*`` modules imported by the DAG files pre-imported, and
   then parses the folder once. This adds the first import of regflow / dag-factory, which a
   real DAG processor pays on every parse cycle (each file is parsed in a fresh child).

Run: ``.venv/bin/python benchmarks/dag_parse.py`` (about 3 minutes). Writes
``benchmarks/results/dag_parse.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    PROJECT_DIR,
    WORK_DIR,
    fresh_dir,
    print_table,
    summary,
    write_result,
)
from _pipelines import DESKS_CSV, pipeline_id, pipeline_yaml

N_PIPELINES = 100
REPS = 5
FRESH_REPS = 3
REGFLOW_DAG_FILE = PROJECT_DIR / "src" / "regflow" / "render" / "dagfile.py"
GOAL_VS_HANDWRITTEN = 1.5
FORMS = ("handwritten", "dagfactory", "regflow_cold", "regflow_warm")
LABELS = {
    "handwritten": "hand-written Airflow",
    "dagfactory": "dag-factory 1.1",
    "regflow_cold": "regflow, cold plan cache",
    "regflow_warm": "regflow, warm plan cache",
}

Shape = dict[str, dict[str, list[str]]]  # dag id -> task id -> sorted upstream task ids


def airflow_env(work: Path) -> None:
    """Airflow settings for this process (and its children); call before importing airflow."""
    home = work / "airflow_home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(work / "empty_dags_folder")
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    os.environ["REGFLOW_CACHE_DIR"] = str(work / "plan_cache")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.simplefilter("ignore")  # dag-factory 1.1 imports deprecated airflow.operators.*
    (work / "empty_dags_folder").mkdir(exist_ok=True)


# --------------------------------------------------------------------------- generation
def generate(work: Path) -> tuple[dict[str, Path], Shape]:
    """Write the three forms; return their DAG folders and the expected shape."""
    from regflow.plan.compiler import compile_file

    project = work / "regflow"
    (project / "pipelines" / "reference").mkdir(parents=True)
    (project / "pipelines" / "reference" / "desks.csv").write_text(DESKS_CSV)
    (project / "dags").mkdir()
    shape: Shape = {}
    plans = []
    for i in range(N_PIPELINES):
        path = project / "pipelines" / f"{pipeline_id(i)}.yaml"
        path.write_text(pipeline_yaml(i))
        plan = compile_file(path)
        plans.append(plan)
        shape[plan.pipeline] = plan_shape(plan)
    from regflow.render.dagfile import write_dag_files

    write_dag_files(project)  # dags/regflow_pNNN.py, as `regflow dags` writes them

    hand = work / "handwritten" / "dags"
    hand.mkdir(parents=True)
    for plan in plans:
        (hand / f"{plan.pipeline}.py").write_text(handwritten_dag(plan, shape[plan.pipeline]))

    df_dir = work / "dagfactory" / "dags"
    df_lib = work / "dagfactory" / "lib"
    df_dir.mkdir(parents=True)
    df_lib.mkdir(parents=True)
    (df_lib / "bench_tasks.py").write_text(BENCH_TASKS)
    (df_dir / "load_dags.py").write_text(DAGFACTORY_LOADER)
    for plan in plans:
        (df_dir / f"{plan.pipeline}.yaml").write_text(dagfactory_yaml(plan, shape[plan.pipeline]))
    return {"handwritten": hand, "dagfactory": df_dir, "regflow": project / "dags"}, shape


def plan_shape(plan: Any) -> dict[str, list[str]]:
    """Tasks and upstreams regflow's DAG has: a task per stage, then ``publish`` after leaves."""
    tasks = {s.id: sorted(s.upstream) for s in plan.stages}
    has_downstream = {u for s in plan.stages for u in s.upstream}
    tasks["publish"] = sorted(s.id for s in plan.stages if s.id not in has_downstream)
    return tasks


def handwritten_dag(plan: Any, tasks: dict[str, list[str]]) -> str:
    """What a careful engineer would write by hand for the same DAG."""
    lines = [
        f'"""{plan.pipeline}: {plan.description.strip().splitlines()[0]}"""',
        "",
        "from __future__ import annotations",
        "",
        "import datetime as dt",
        "",
        "from airflow.providers.standard.operators.python import PythonOperator",
        "from airflow.sdk import DAG, Param",
        "",
        "",
        "def run_stage(stage_id: str, **context):",
        '    print(f"running stage {stage_id}")',
        "",
        "",
        "def publish(**context):",
        '    print("publishing")',
        "",
        "",
        "with DAG(",
        f'    dag_id="{plan.pipeline}",',
        f'    description="{plan.description.strip().splitlines()[0]}",',
        f'    schedule="{plan.schedule}",',
        "    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),",
        "    catchup=False,",
        "    max_active_runs=4,",
        f"    tags={['regflow', *plan.tags]!r},",
        "    params={",
        '        "cob": Param(None, type=["null", "string"], format="date"),',
        *[f"        {k!r}: {_param_src(v)}," for k, v in plan.params.items()],
        "    },",
        f'    default_args={{"owner": "{plan.owner}", "retries": 0}},',
        "):",
    ]
    for task_id in tasks:
        if task_id == "publish":
            lines.append(
                '    publish_task = PythonOperator(task_id="publish", python_callable=publish)'
            )
        else:
            lines += [
                f"    {task_id} = PythonOperator(",
                f'        task_id="{task_id}", python_callable=run_stage,',
                f'        op_kwargs={{"stage_id": "{task_id}"}},',
                "    )",
            ]
    lines.append("")
    for task_id, ups in tasks.items():
        var = "publish_task" if task_id == "publish" else task_id
        if len(ups) == 1:
            lines.append(f"    {ups[0]} >> {var}")
        elif ups:
            lines.append(f"    [{', '.join(ups)}] >> {var}")
    return "\n".join(lines) + "\n"


def _param_src(default: Any) -> str:
    if isinstance(default, bool):
        return f'Param({default!r}, type="boolean")'
    if isinstance(default, int | float):
        kind = "integer" if isinstance(default, int) else "number"
        return f'Param({default!r}, type="{kind}")'
    return f'Param({default!r}, type=["null", "string"])'


BENCH_TASKS = '''"""Task callables for the dag-factory configs."""


def run_stage(stage_id, **context):
    print(f"running stage {stage_id}")


def publish(**context):
    print("publishing")
'''

DAGFACTORY_LOADER = '''"""dag-factory loader (airflow): a DAG per YAML config in this folder."""

from pathlib import Path

from dagfactory import load_yaml_dags

load_yaml_dags(globals_dict=globals(), dags_folder=str(Path(__file__).resolve().parent))
'''


def dagfactory_yaml(plan: Any, tasks: dict[str, list[str]]) -> str:
    import yaml

    op = "airflow.providers.standard.operators.python.PythonOperator"
    cfg_tasks: dict[str, Any] = {}
    for task_id, ups in tasks.items():
        task: dict[str, Any] = {"operator": op}
        if task_id == "publish":
            task["python_callable"] = "bench_tasks.publish"
        else:
            task["python_callable"] = "bench_tasks.run_stage"
            task["op_kwargs"] = {"stage_id": task_id}
        if ups:
            task["dependencies"] = ups
        cfg_tasks[task_id] = task
    config = {
        plan.pipeline: {
            "default_args": {"owner": plan.owner, "retries": 0, "start_date": "2024-01-01"},
            "description": plan.description.strip().splitlines()[0],
            "schedule": plan.schedule,
            "catchup": False,
            "max_active_runs": 4,
            "tags": ["regflow", *plan.tags],
            "params": {"cob": None, **plan.params},
            "tasks": cfg_tasks,
        }
    }
    return yaml.safe_dump(config, sort_keys=False)


# --------------------------------------------------------------------------- measurement
def bag_shape(bag: Any) -> Shape:
    return {
        dag_id: {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
        for dag_id, dag in bag.dags.items()
    }


def check_bag(form: str, bag: Any, expected: Shape) -> None:
    """Fail loudly unless the bag holds exactly the expected 100 DAGs and no import errors."""
    if bag.import_errors:
        first = next(iter(bag.import_errors.items()))
        raise SystemExit(
            f"{form}: {len(bag.import_errors)} import error(s); first: {first[0]}:\n{first[1]}"
        )
    if len(bag.dags) != N_PIPELINES:
        raise SystemExit(f"{form}: expected {N_PIPELINES} DAGs, got {len(bag.dags)}")
    got = bag_shape(bag)
    if got != expected:
        bad = sorted(d for d in expected if got.get(d) != expected[d])
        d = bad[0]
        raise SystemExit(
            f"{form}: {len(bad)} DAG(s) differ from the plan's shape, e.g. {d}: "
            f"expected {expected[d]}, got {got.get(d)}"
        )


def clear_plan_cache(work: Path) -> None:
    """An empty plan cache and empty in-process caches, as in a fresh DAG processor child."""
    shutil.rmtree(work / "plan_cache", ignore_errors=True)
    try:
        from regflow.ops import exprs

        exprs._parse.cache_clear()
    except (ImportError, AttributeError):
        pass


def load_bag(folder: Path) -> tuple[Any, float]:
    from airflow.dag_processing.dagbag import DagBag

    gc.collect()
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=str(folder))
    return bag, time.perf_counter() - t0


def serialize_seconds(bag: Any) -> float:
    from airflow.serialization.serialized_objects import DagSerialization

    t0 = time.perf_counter()
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    return time.perf_counter() - t0


def folder_of(form: str, folders: dict[str, Path]) -> Path:
    return folders["regflow"] if form.startswith("regflow") else folders[form]


def measure_in_process(
    work: Path, folders: dict[str, Path], shape: Shape
) -> dict[str, dict[str, list[float]]]:
    sys.path.insert(0, str(work / "dagfactory" / "lib"))
    parse: dict[str, list[float]] = {f: [] for f in FORMS}
    ser: dict[str, list[float]] = {f: [] for f in FORMS}
    # Warm-up: imports every module once, checks every form, fills the plan cache.
    for form in FORMS:
        if form == "regflow_cold":
            clear_plan_cache(work)
        bag, seconds = load_bag(folder_of(form, folders))
        check_bag(form, bag, shape)
        print(
            f"  warm-up {LABELS[form]:<26} {seconds:6.2f}s  ({len(bag.dags)} DAGs, "
            f"{sum(len(d.tasks) for d in bag.dags.values())} tasks)",
            flush=True,
        )
        del bag
    for rep in range(REPS):
        order = FORMS[rep % len(FORMS) :] + FORMS[: rep % len(FORMS)]
        for form in order:
            if form == "regflow_cold":
                clear_plan_cache(work)
            bag, seconds = load_bag(folder_of(form, folders))
            check_bag(form, bag, shape)
            parse[form].append(seconds)
            ser[form].append(serialize_seconds(bag))
            del bag
        print(
            f"  rep {rep + 1}/{REPS}: " + ", ".join(f"{f} {parse[f][-1]:.2f}s" for f in FORMS),
            flush=True,
        )
    return {"parse": parse, "serialize": ser}


# --------------------------------------------------------------------------- fresh process
def child_main(form: str, folder: str, work: str) -> None:
    """In a new interpreter: pre-import like the DAG processor does, then parse once."""
    airflow_env(Path(work))
    import importlib

    import airflow  # noqa: F401  (the DAG processor has airflow imported)
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.file import iter_airflow_imports

    for path in sorted(Path(folder).glob("*.py")):
        for module in iter_airflow_imports(str(path)):
            importlib.import_module(module)
    if form == "dagfactory":
        sys.path.insert(0, str(Path(work) / "dagfactory" / "lib"))
    if form == "regflow_cold":
        clear_plan_cache(Path(work))
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=folder)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {"seconds": seconds, "dags": len(bag.dags), "import_errors": len(bag.import_errors)}
        )
    )


def measure_fresh(work: Path, folders: dict[str, Path]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {f: [] for f in FORMS}
    for rep in range(FRESH_REPS):
        order = FORMS[rep % len(FORMS) :] + FORMS[: rep % len(FORMS)]
        for form in order:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                form,
                str(folder_of(form, folders)),
                str(work),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise SystemExit(f"fresh-process run of {form} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(lines[-1])
            if res["dags"] != N_PIPELINES or res["import_errors"]:
                raise SystemExit(f"fresh-process run of {form}: {res}")
            out[form].append(res["seconds"])
        print(
            f"  fresh rep {rep + 1}/{FRESH_REPS}: "
            + ", ".join(f"{f} {out[f][-1]:.2f}s" for f in FORMS),
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- main
def wait_for_dag_file(timeout: float = 0) -> None:
    deadline = time.monotonic() + timeout
    while not REGFLOW_DAG_FILE.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{REGFLOW_DAG_FILE} does not exist (yet); nothing to benchmark")
        time.sleep(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--child", nargs=3, metavar=("FORM", "FOLDER", "WORK"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--no-fresh", action="store_true", help="skip the fresh-process measurement"
    )
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return

    wait_for_dag_file()
    work = fresh_dir("dag_parse")
    airflow_env(work)
    print(
        f"generating {N_PIPELINES} pipelines x 3 forms in {work.relative_to(PROJECT_DIR)}",
        flush=True,
    )
    t0 = time.perf_counter()
    folders, shape = generate(work)
    n_tasks = sum(len(t) for t in shape.values())
    print(f"  {N_PIPELINES} DAGs, {n_tasks} tasks in all ({time.perf_counter() - t0:.1f}s)")

    print(f"in-process DagBag loads ({REPS} repetitions, rotating order)", flush=True)
    res = measure_in_process(work, folders, shape)
    fresh = {} if args.no_fresh else None
    if fresh is None:
        print(f"fresh-process DagBag loads ({FRESH_REPS} repetitions)", flush=True)
        fresh = measure_fresh(work, folders)

    parse = {f: summary(v) for f, v in res["parse"].items()}
    ser = {f: summary(v) for f, v in res["serialize"].items()}
    fresh_s = {f: summary(v) for f, v in fresh.items()}
    hw = parse["handwritten"]["median"]
    df = parse["dagfactory"]["median"]
    rows = []
    for f in FORMS:
        rows.append(
            [
                LABELS[f],
                parse[f]["median"],
                parse[f]["min"],
                parse[f]["median"] / hw,
                parse[f]["median"] / df,
                ser[f]["median"],
                fresh_s[f]["median"] if f in fresh_s else "-",
            ]
        )
    print()
    print(f"DagBag load of {N_PIPELINES} DAGs x {n_tasks // N_PIPELINES} tasks (seconds)")
    print_table(
        ["form", "median", "min", "vs hand", "vs dag-factory", "serialize", "fresh proc"], rows
    )

    ratios = {
        "regflow_warm_vs_handwritten": round(parse["regflow_warm"]["median"] / hw, 3),
        "regflow_cold_vs_handwritten": round(parse["regflow_cold"]["median"] / hw, 3),
        "regflow_warm_vs_dagfactory": round(parse["regflow_warm"]["median"] / df, 3),
        "regflow_cold_vs_dagfactory": round(parse["regflow_cold"]["median"] / df, 3),
    }
    # Per-repetition ratios: the forms of one repetition load back to back, so their ratio
    # is robust to the machine's load drifting between repetitions. The goals use these.
    samples = res["parse"]
    for form in ("regflow_warm", "regflow_cold"):
        for base in ("handwritten", "dagfactory"):
            pairs = [a / b for a, b in zip(samples[form], samples[base], strict=True)]
            ratios[f"paired_{form}_vs_{base}"] = round(statistics.median(pairs), 3)
    if fresh_s:
        fhw, fdf = fresh_s["handwritten"]["median"], fresh_s["dagfactory"]["median"]
        ratios["fresh_regflow_warm_vs_handwritten"] = round(
            fresh_s["regflow_warm"]["median"] / fhw, 3
        )
        ratios["fresh_regflow_warm_vs_dagfactory"] = round(
            fresh_s["regflow_warm"]["median"] / fdf, 3
        )
    goals = {
        "regflow_warm_vs_handwritten_max": GOAL_VS_HANDWRITTEN,
        "regflow_warm_vs_dagfactory_max": 1.0,
        "judged_on": "median of per-repetition ratios (paired_*)",
        "met_vs_handwritten": (ratios["paired_regflow_warm_vs_handwritten"] <= GOAL_VS_HANDWRITTEN),
        "met_vs_dagfactory": ratios["paired_regflow_warm_vs_dagfactory"] < 1.0,
    }
    print()
    for k, v in ratios.items():
        print(f"  {k:<36} {v:.2f}x")
    print(
        f"  goal <= {GOAL_VS_HANDWRITTEN}x hand-written (warm, paired): "
        f"{'met' if goals['met_vs_handwritten'] else 'NOT met'}; faster than dag-factory: "
        f"{'met' if goals['met_vs_dagfactory'] else 'NOT met'}"
    )
    path = write_result(
        "dag_parse",
        {
            "setup": {
                "pipelines": N_PIPELINES,
                "nodes_per_pipeline": 30,
                "tasks_per_dag": n_tasks // N_PIPELINES,
                "stages_per_pipeline": n_tasks // N_PIPELINES - 1,
                "repetitions": REPS,
                "fresh_repetitions": FRESH_REPS,
                "regflow_dag_file": str(REGFLOW_DAG_FILE.relative_to(PROJECT_DIR)),
                "work_dir": str(WORK_DIR.relative_to(PROJECT_DIR) / "dag_parse"),
            },
            "parse_seconds": parse,
            "serialize_seconds": ser,
            "fresh_process_parse_seconds": fresh_s,
            "ratios": ratios,
            "goals": goals,
        },
    )
    print(f"\nwrote {path.relative_to(BENCH_DIR.parent)}")


if __name__ == "__main__":
    main()
