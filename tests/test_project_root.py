"""One project root: storage, rules, Airflow home, warehouse and relative params all derive
from it, whatever the current folder; unknown params are refused; a second spec file of one
pipeline id is refused before it replaces the first one's runs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import COB

from regflow.errors import ConfigError
from regflow.project import project_root, run_params

ROOT = Path(__file__).resolve().parent.parent
# what would otherwise choose a location for the run, so the project root must
ISOLATE = (
    "REGFLOW_PROJECT",
    "REGFLOW_STORAGE",
    "REGFLOW_WAREHOUSE",
    "REGFLOW_WAREHOUSE_DIR",
    "REGFLOW_CACHE_DIR",
    "AIRFLOW_HOME",
)


def regflow(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATE}
    exe = Path(sys.executable).parent / "regflow"
    proc = subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _project(path: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return path


@pytest.fixture(scope="module")
def other_run(tmp_path_factory, lcr_data):
    """A user sits in their project (``current``, with an earlier layout: dags/ and all) and
    runs the spec of another project (``other``: pipelines/, operators/, adjustments/ and its
    data, no dags/) by path, with a relative data_root."""
    base = tmp_path_factory.mktemp("roots")
    current = _project(base / "current", ("pipelines", "operators", "dags", "adjustments"))
    other = _project(base / "other", ("pipelines", "operators", "adjustments"))
    (other / "data").symlink_to(lcr_data, target_is_directory=True)
    spec = other / "pipelines" / "lcr.yaml"
    proc = regflow(current, "run", str(spec), "--cob", COB.isoformat(), "--param", "data_root=data")
    cob_dir = other / ".regflow" / "storage" / "lcr" / f"cob={COB.isoformat()}"
    summary = json.loads((cob_dir / "_LATEST").read_text())
    return {"current": current, "other": other, "spec": spec, "proc": proc, "summary": summary}


@pytest.mark.slow
def test_a_spec_from_another_folder_uses_its_own_project_for_everything(other_run):
    current, other, summary = other_run["current"], other_run["other"], other_run["summary"]
    state = other / ".regflow"
    assert (state / "storage" / "lcr").is_dir()
    assert (state / "airflow" / "airflow.db").is_file()  # Airflow home
    assert (state / "warehouse").is_dir()  # the embedded PostgreSQL
    assert any((state / "cache" / "plans").glob("*.json"))  # plan cache
    assert not (current / ".regflow").exists()  # the current project is not touched
    # the other project's rules (all three are effective on the cob), not none
    rules = sorted(p.stem for p in (other / "adjustments" / "lcr").glob("*.yaml"))
    applied = sorted(a["rule_id"] for a in summary["adjustments"] if a["status"] == "applied")
    assert applied == rules == ["ADJ-2026-0001", "ADJ-2026-0002", "ADJ-2026-0003"]
    # the run records its spec file and project; the relative data_root became the project's
    spec_bytes = other_run["spec"].read_bytes()
    assert summary["spec_file"] == "pipelines/lcr.yaml"
    assert summary["project"] == str(other.resolve())
    assert summary["spec_file_sha256"] == hashlib.sha256(spec_bytes).hexdigest()
    assert summary["params"]["data_root"] == str(other.resolve() / "data")


@pytest.mark.slow
def test_export_and_warehouse_agree_after_a_run_from_another_folder(other_run):
    # export by spec path from the current folder reads the spec's project's storage ...
    out = regflow(
        other_run["current"], "export", str(other_run["spec"]), "entity_lcr", "--cob", str(COB)
    ).stdout
    exported = {r["legal_entity"]: Decimal(r["outflows"]) for r in csv.DictReader(io.StringIO(out))}
    # ... and the warehouse of that project (found from one of its subfolders) holds the same
    sql = f"SELECT legal_entity, outflows FROM lcr.rpt_lcr_entity WHERE cob_date = '{COB}'"
    rows = regflow(other_run["other"] / "pipelines", "warehouse", "query", sql).stdout
    landed = {
        line.split()[0]: Decimal(line.split()[1]) for line in rows.splitlines()[1:] if line.strip()
    }
    assert len(exported) == 6 and landed == exported


@pytest.mark.slow
def test_a_project_with_only_pipelines_runs_through_regflow_run(other_run):
    assert not (other_run["other"] / "dags").exists()
    assert ": success in" in other_run["proc"].stdout


@pytest.mark.slow
def test_a_relative_data_root_resolves_the_same_in_the_airflow_task(
    other_run, tmp_path, monkeypatch
):
    """A UI trigger passes the form's relative data_root; the task, run from another current
    folder, resolves it against the project root as `regflow run` did, so the stage is taken
    from the CLI's run (same params) instead of failing or reading another folder."""
    from regflow.render.tasks import run_stage_task

    for name in ISOLATE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    context = {
        "params": {"cob": COB.isoformat(), "recompute": "changed", "data_root": "data"},
        "run_id": "manual__ui_trigger",
    }
    report = run_stage_task(str(other_run["spec"]), "weigh__adjusted", context)
    assert report["reused_from"] == other_run["summary"]["run_id"]
    assert not (tmp_path / ".regflow").exists()
    # a stage task run alone holds the cob's claim until publish (or a failure) releases it
    from regflow.storage import RunRef, claim

    storage = Path(other_run["other"]) / ".regflow" / "storage"
    assert claim.release(RunRef(storage, "lcr", COB.isoformat(), "manual__ui_trigger"))


@pytest.mark.slow
def test_a_trigger_with_an_unknown_param_is_refused_by_the_task(other_run):
    """Airflow adds an unknown conf key to the params without a word; the task refuses it.
    Through real Airflow (dag.test), as a trigger with that conf would run."""
    other = other_run["other"]
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from regflow.cli.airflow_run import run_through_airflow\n"
        "from regflow.errors import RunError\n"
        "try:\n"
        f"    run_through_airflow(Path({str(other_run['spec'])!r}), cob={COB.isoformat()!r},\n"
        "        params={'data_root': 'data', 'dataroot': 'elsewhere', 'recompute': 'all'},\n"
        f"        storage_root=Path({str(other / '.regflow' / 'storage')!r}))\n"
        "except RunError as exc:\n"
        "    print('REFUSED', exc)\n"
        "    sys.exit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ISOLATE}
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=other, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "unknown param 'dataroot'" in proc.stdout
    assert "did you mean 'data_root'?" in proc.stdout


@pytest.mark.slow
def test_a_second_spec_file_of_the_same_pipeline_is_refused(other_run):
    other = other_run["other"]
    copy = other / "pipelines" / "lcr_v2.yaml"
    shutil.copy(other_run["spec"], copy)  # declares `pipeline: lcr` too
    try:
        proc = regflow(
            other,
            "run",
            "pipelines/lcr_v2.yaml",
            "--cob",
            COB.isoformat(),
            "--param",
            "data_root=data",
            check=False,
        )
    finally:
        copy.unlink()
    assert proc.returncode == 1
    assert "already has successful runs" in proc.stderr
    assert str(other.resolve() / "pipelines" / "lcr.yaml") in proc.stderr
    assert "--allow-other-spec" in proc.stderr
    # nothing ran: the latest run is still the first spec's
    cob_dir = other / ".regflow" / "storage" / "lcr" / f"cob={COB.isoformat()}"
    assert json.loads((cob_dir / "_LATEST").read_text()) == other_run["summary"]


@pytest.mark.slow
def test_a_misspelt_param_fails_with_did_you_mean(other_run):
    proc = regflow(
        other_run["other"],
        "run",
        "lcr",
        "--cob",
        COB.isoformat(),
        "--param",
        "dataroot=elsewhere",
        check=False,
    )
    assert proc.returncode == 1
    assert "unknown param 'dataroot' for pipeline 'lcr': did you mean 'data_root'?" in proc.stderr
    cob_dir = other_run["other"] / ".regflow" / "storage" / "lcr" / f"cob={COB.isoformat()}"
    assert json.loads((cob_dir / "_LATEST").read_text()) == other_run["summary"]


# ---------------------------------------------------------------------------- the root alone
def test_project_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("REGFLOW_PROJECT", raising=False)
    mine = tmp_path / "mine"
    (mine / "pipelines").mkdir(parents=True)
    (mine / "docs" / "deep").mkdir(parents=True)
    theirs = tmp_path / "theirs"
    (theirs / "pipelines").mkdir(parents=True)
    spec = theirs / "pipelines" / "x.yaml"
    loose = tmp_path / "loose" / "y.yaml"
    loose.parent.mkdir()
    monkeypatch.chdir(mine / "docs" / "deep")
    assert project_root() == mine.resolve()  # the nearest folder upwards with pipelines/
    assert project_root(spec) == theirs.resolve()  # a spec path: its own project
    assert project_root(loose) == loose.parent.resolve()  # no pipelines/ above: its folder
    monkeypatch.setenv("REGFLOW_PROJECT", str(theirs))
    assert project_root() == project_root(loose) == theirs.resolve()  # explicit wins
    monkeypatch.setenv("REGFLOW_PROJECT", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="is not a folder"):
        project_root()


def test_run_params_resolve_paths_and_refuse_unknown_names(tmp_path):
    declared = {"data_root": "./d", "limit": 5, "feed": None}
    kwargs = {"declared": declared, "root": tmp_path, "pipeline": "p"}
    got = run_params(
        {"data_root": "./d/../e", "limit": "x/y", "feed": "in"},
        source_paths=["{feed}/deals", "{data_root}/fx"],
        **kwargs,
    )
    # path params (by name, or leading a source path) resolve against the root; others stay
    assert got == {"data_root": str(tmp_path / "e"), "limit": "x/y", "feed": str(tmp_path / "in")}
    assert run_params(got, source_paths=["{feed}/deals"], **kwargs) == got  # idempotent
    with pytest.raises(ConfigError, match="use --cob"):
        run_params({"cob": "2026-03-31"}, source_paths=[], **kwargs)
    with pytest.raises(ConfigError, match=r"'bogus'.*declare it under 'params:'"):
        run_params({"bogus": "1"}, source_paths=[], **kwargs)


def test_the_other_spec_guard_compares_spec_file_and_project(tmp_path, capsys):
    from regflow.cli.spec_guard import check_spec_owner
    from regflow.storage import RunRef, publish_run

    ours = {"spec_file": "pipelines/lcr.yaml", "project": "/p/a", "spec_file_sha256": "1"}
    publish_run(RunRef(tmp_path, "lcr", "2026-03-30", "old"), {"cob": "2026-03-30"})
    edited = {**ours, "spec_file_sha256": "2"}  # the same file, edited: not another spec
    publish_run(RunRef(tmp_path, "lcr", "2026-03-31", "r1"), {"cob": "2026-03-31", **edited})
    check_spec_owner(tmp_path, "lcr", ours)  # (the run without a record is not compared)
    for other in ({**ours, "project": "/p/b"}, {**ours, "spec_file": "pipelines/lcr2.yaml"}):
        with pytest.raises(ConfigError, match="already has successful runs") as exc:
            check_spec_owner(tmp_path, "lcr", other)
        assert "/p/a/pipelines/lcr.yaml" in str(exc.value) and "cob 2026-03-31" in str(exc.value)
        check_spec_owner(tmp_path, "lcr", other, allow=True)
        assert capsys.readouterr().out.startswith("warning: pipeline 'lcr' already has")


def test_the_project_flag_sets_the_root_for_the_command(tmp_path, monkeypatch, capsys):
    from regflow import settings
    from regflow.cli.main import main

    monkeypatch.setenv("REGFLOW_PROJECT", str(tmp_path / "not-a-project"))
    monkeypatch.chdir(tmp_path)  # no pipelines/ here or above
    assert main(["--project", str(ROOT), "plan", "lcr"]) == 0
    assert "stage 1: weigh" in capsys.readouterr().out
    # the flag reaches the code through the settings, not by writing the environment
    assert settings.current().project == str(ROOT)
    assert os.environ["REGFLOW_PROJECT"] == str(tmp_path / "not-a-project")
