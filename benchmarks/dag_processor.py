"""Airflow's real dag-processor on regflow DAG files: with and without the preload.

Airflow 3's dag-processor parses each DAG file in a fresh fork, again every
``min_file_process_interval``. What the fork has not inherited, each parse imports again: a
hand-written DAG file's ``airflow.*`` imports are pre-imported by the dag-processor itself
(``parsing_pre_import_modules``); regflow's DAG building, and under
``REGFLOW_EXECUTOR=kubernetes`` the provider's ``SparkKubernetesOperator`` and the
kubernetes client, are not, unless ``airflow_local_settings.py`` imports
``regflow.render.preload`` (the Helm chart's ``airflow.airflowLocalSettings`` does).

Set-up: 20 synthetic 30-node pipelines (``_pipelines.py``, as ``dag_parse.py``) with their
DAG files as ``regflow dags`` writes them, and the same 20 DAGs hand-written with
PythonOperators. Each configuration is one ``airflow dag-processor --num-runs 1`` over its
folder after a first, unmeasured one (which fills regflow's plan cache); the figure is
each DAG's ``last_parse_duration`` from Airflow's own database (the parse of its file, the
fork included), median over the 20 files, per repetition; configurations alternate in
each repetition.

Run: ``.venv/bin/python benchmarks/dag_processor.py`` (about 5 minutes). Writes
``benchmarks/results/dag_processor.json``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import fresh_dir, print_table, summary, write_result
from _pipelines import DESKS_CSV, pipeline_id, pipeline_yaml

N_PIPELINES = 20
REPS = 3
AIRFLOW = Path(sys.executable).parent / "airflow"
PRELOAD = "import regflow.render.preload  # noqa: F401\n"
# (form, executor, preload)
CONFIGS = (
    ("handwritten", "local", False),
    ("regflow", "local", False),
    ("regflow", "local", True),
    ("regflow", "kubernetes", False),
    ("regflow", "kubernetes", True),
)


def label(form: str, executor: str, preload: bool) -> str:
    if form == "handwritten":
        return "hand-written (PythonOperator)"
    return f"regflow {executor}, {'preload' if preload else 'no preload'}"


def generate(work: Path) -> dict[str, Path]:
    from dag_parse import handwritten_dag, plan_shape

    from regflow.plan.compiler import compile_file
    from regflow.render.dagfile import write_dag_files

    project = work / "regflow"
    (project / "pipelines" / "reference").mkdir(parents=True)
    (project / "pipelines" / "reference" / "desks.csv").write_text(DESKS_CSV)
    hand = work / "handwritten" / "dags"
    hand.mkdir(parents=True)
    for i in range(N_PIPELINES):
        path = project / "pipelines" / f"{pipeline_id(i)}.yaml"
        path.write_text(pipeline_yaml(i))
        plan = compile_file(path)
        (hand / f"{plan.pipeline}.py").write_text(handwritten_dag(plan, plan_shape(plan)))
    write_dag_files(project)
    return {"regflow": project / "dags", "handwritten": hand}


def home_for(work: Path, form: str, executor: str, preload: bool) -> Path:
    home = work / f"home-{form}-{executor}-{int(preload)}"
    if not home.exists():
        (home / "config").mkdir(parents=True)
        if preload:
            (home / "config" / "airflow_local_settings.py").write_text(PRELOAD)
    return home


def env_for(work: Path, home: Path, folder: Path, executor: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REGFLOW_"))}
    return {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PYTHONWARNINGS": "ignore",
        "REGFLOW_EXECUTOR": executor,
        "REGFLOW_CACHE_DIR": str(work / "plan_cache"),
    }


def airflow(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run(
        [str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"airflow {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def parse_durations(home: Path) -> list[float]:
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT dag_id, last_parse_duration, is_stale FROM dag").fetchall()
    if len(rows) != N_PIPELINES or any(stale for _, _, stale in rows):
        raise SystemExit(f"{home}: expected {N_PIPELINES} active DAGs, got {rows}")
    return [float(d) for _, d, _ in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=REPS)
    args = ap.parse_args()
    work = fresh_dir("dag_processor")
    folders = generate(work)
    envs = {}
    for form, executor, preload in CONFIGS:
        home = home_for(work, form, executor, preload)
        env = env_for(work, home, folders[form], executor)
        airflow(env, "db", "migrate")
        airflow(env, "dag-processor", "--num-runs", "1")  # warm-up: the plan cache, the db
        envs[(form, executor, preload)] = (env, home)
    medians: dict[str, list[float]] = {label(*c): [] for c in CONFIGS}
    for rep in range(args.reps):
        order = CONFIGS[rep % len(CONFIGS) :] + CONFIGS[: rep % len(CONFIGS)]
        for config in order:
            env, home = envs[config]
            airflow(env, "dag-processor", "--num-runs", "1")
            medians[label(*config)].append(statistics.median(parse_durations(home)))
        print(f"rep {rep + 1}/{args.reps} done", flush=True)
    hand = statistics.median(medians[label(*CONFIGS[0])])
    rows: list[list[Any]] = []
    result: dict[str, Any] = {"pipelines": N_PIPELINES, "reps": args.reps, "per_file": {}}
    for name, samples in medians.items():
        med = statistics.median(samples)
        rows.append([name, f"{med:.3f}", f"{med / hand:.2f}x"])
        result["per_file"][name] = {**summary(samples), "vs_handwritten": round(med / hand, 2)}
    for executor in ("local", "kubernetes"):
        off = statistics.median(medians[label("regflow", executor, False)])
        on = statistics.median(medians[label("regflow", executor, True)])
        result[f"preload_speedup_{executor}"] = round(off / on, 2)
    print_table(["configuration", "s per file parse (median)", "vs hand-written"], rows)
    print(
        f"preload: {result['preload_speedup_local']}x faster per parse (local), "
        f"{result['preload_speedup_kubernetes']}x (kubernetes)"
    )
    write_result("dag_processor", result)


if __name__ == "__main__":
    main()
