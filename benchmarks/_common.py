"""Helpers shared by the benchmarks: work dirs, statistics, tables and JSON results."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
RESULTS_DIR = BENCH_DIR / "results"


def fresh_dir(name: str) -> Path:
    """``benchmarks/.work/<name>``, emptied."""
    path = WORK_DIR / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def summary(samples: Sequence[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(samples), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
        "samples": [round(s, 4) for s in samples],
    }


def machine() -> dict[str, Any]:
    """Cores, memory and the versions that matter for the figures."""
    from importlib.metadata import PackageNotFoundError, version

    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        mem_gb = round(kb / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    versions = {}
    for dist in ("regflow", "apache-airflow", "pyspark", "dag-factory", "pandas", "pyarrow"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    java = None
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        java = (out.stderr or out.stdout).splitlines()[0]
    except (OSError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": sys.version.split()[0],
        "java": java,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "versions": versions,
    }


def cpu_seconds(spark: Any) -> float | None:
    """CPU time used so far by this process and by the JVM behind ``spark`` (user + system,
    all threads: tasks, GC, JIT), from ``/proc``; None where that is not readable (not
    Linux, or a Spark the gateway did not start).

    On a shared or virtual machine, wall time also counts the time other load keeps the
    cores from us; CPU time counts only the work done, so ratios of it are much steadier.
    """
    try:
        pid = spark.sparkContext._gateway.proc.pid
        with open(f"/proc/{pid}/stat") as f:
            # the fields after the command name (in parentheses, which may hold spaces)
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        jvm = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    own = os.times()
    return jvm + own.user + own.system


def run_all_stages(
    plan: Any,
    root: Any,
    run_id: str,
    spark: Any,
    data_root: Path,
    cob: str,
    policy: Any = None,
) -> list[Any]:
    """Every stage of ``plan`` in order into ``run_id`` under storage ``root``, quietly, with
    the execution ``policy`` (None: mode auto); the stage reports."""
    from regflow.runtime.executor import run_stage

    return [
        run_stage(
            plan,
            stage.id,
            cob=cob,
            run_id=run_id,
            root=root,
            params={"data_root": str(data_root)},
            spark=spark,
            log=lambda _msg: None,
            policy=policy,
        )
        for stage in plan.stages
    ]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path


def lcr_calculation_spec(work: Path, *, star: bool = False) -> Path:
    """``pipelines/lcr.yaml`` without its warehouse star (``lcr_star``), in a project copy;
    with it when ``star``.

    The calculation benchmarks compare regflow with hand-written jobs that compute the LCR
    figures and nothing else; the star (and the deal-level output it makes ``weigh`` persist)
    is measured on its own in ``warehouse_load.py``.
    """
    import shutil

    project = work / ("lcr-star-project" if star else "lcr-project")
    if project.exists():
        shutil.rmtree(project)
    (project / "pipelines").mkdir(parents=True)
    shutil.copytree(PROJECT_DIR / "pipelines" / "reference", project / "pipelines" / "reference")
    shutil.copytree(
        PROJECT_DIR / "operators",
        project / "operators",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    text = (PROJECT_DIR / "pipelines" / "lcr.yaml").read_text()
    cut = text.find("\n  - id: lcr_star")
    if cut < 0:
        raise SystemExit("pipelines/lcr.yaml has no lcr_star node to strip")
    spec = project / "pipelines" / "lcr.yaml"
    spec.write_text(text if star else text[: cut + 1])
    return spec
