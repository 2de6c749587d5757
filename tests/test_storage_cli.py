"""Storage layout and promotion, and the CLI's plumbing. (The one-way layering of packages is
checked by the import-linter contracts: tests/test_import_contracts.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from regflow.cli.main import main
from regflow.errors import ConfigError, StorageError
from regflow.storage import (
    LATEST_FILE,
    RunRef,
    commit_attempt,
    latest_run,
    new_attempt,
    publish_run,
    resolve_root,
    safe_run_id,
)

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "regflow"


def test_commit_marks_last_and_the_first_commit_wins(tmp_path):
    run = RunRef(tmp_path, "p", "2026-03-31", "r1")
    tmp = new_attempt(run, "n")
    tmp.mkdir(parents=True)
    (tmp / "part-0.parquet").write_text("v1")
    assert not run.is_complete("n")  # an unmarked attempt never looks complete
    with pytest.raises(StorageError, match="no committed output 'n'"):
        run.node_dir("n")
    meta = {"rows": 1, "node_hash": "h", "input_hashes": {"a": "x"}}
    assert commit_attempt(run, "n", tmp, meta) == tmp
    assert run.is_complete("n") and run.metadata("n")["rows"] == 1
    assert run.node_dir("n") == tmp
    # a retry of the same run with the same hashes: the first commit stands, no overwrite
    tmp2 = new_attempt(run, "n")
    tmp2.mkdir(parents=True)
    (tmp2 / "part-0.parquet").write_text("v2")
    assert commit_attempt(run, "n", tmp2, {**meta, "rows": 2}) == tmp
    assert (run.node_dir("n") / "part-0.parquet").read_text() == "v1"
    assert not tmp2.exists()  # the losing attempt is discarded
    # a retry that computed something else: refused, the committed output kept
    tmp3 = new_attempt(run, "n")
    tmp3.mkdir(parents=True)
    with pytest.raises(StorageError, match="start a new run"):
        commit_attempt(run, "n", tmp3, {**meta, "node_hash": "other"})
    assert run.metadata("n")["rows"] == 1 and not tmp3.exists()
    assert sorted(p.name for p in run.node_root("n").iterdir()) == ["_SUCCESS", tmp.name]


def test_latest_run_ignores_unpublished_runs(tmp_path):
    good = RunRef(tmp_path, "p", "2026-03-31", "good")
    good.run_dir.mkdir(parents=True)
    with pytest.raises(StorageError, match="no successful run"):
        latest_run(tmp_path, "p", "2026-03-31")
    publish_run(good, {"x": 1})
    RunRef(tmp_path, "p", "2026-03-31", "zz-failed").run_dir.mkdir(parents=True)
    assert latest_run(tmp_path, "p", "2026-03-31").run_id == "good"
    assert json.loads((good.cob_dir / LATEST_FILE).read_text())["run_id"] == "good"


def test_run_ids_and_roots(tmp_path, monkeypatch):
    assert safe_run_id("manual__2026-11-21T22:43:13.120847+00:00") == (
        "manual__2026-11-21T22_43_13.120847_00_00"
    )
    monkeypatch.setenv("REGFLOW_STORAGE", str(tmp_path / "s"))
    assert resolve_root() == (tmp_path / "s").resolve()
    assert resolve_root(f"file://{tmp_path}/x") == (tmp_path / "x").resolve()
    with pytest.raises(ConfigError, match="not supported"):
        resolve_root("gs://bucket/x")


def test_validate_cli_ok_and_plan(capsys, monkeypatch):
    monkeypatch.setenv("REGFLOW_PROJECT", str(ROOT))
    assert main(["validate"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["plan", "lcr"]) == 0
    out = capsys.readouterr().out
    assert "stage 1: weigh" in out and "stage 2: entity_buckets" in out
    assert "stage 4: lcr_star" in out and "then: load_lcr_star (lands dim_date" in out
    assert "checkpoint entity_buckets.lineage" in out


def test_cli_errors_are_clear(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("REGFLOW_PROJECT", str(ROOT))
    assert main(["plan", "nope"]) == 1
    assert "no pipeline 'nope'" in capsys.readouterr().err and True
    assert main(["export", "lcr", "entity_lcr", "--cob", "2026-13-01"]) == 1
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert (
        main(["export", "lcr", "entity_lcr", "--cob", "2026-03-31", "--storage", str(tmp_path)])
        == 1
    )
    assert "no successful run" in capsys.readouterr().err


def test_schema_cli_prints_json_schema(capsys, monkeypatch):
    monkeypatch.setenv("REGFLOW_PROJECT", str(ROOT))
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    ops = {v["properties"]["op"]["const"] for v in schema["properties"]["nodes"]["items"]["oneOf"]}
    assert {"calc", "filter", "join", "classify", "aggregate", "union", "lcr_caps"} <= ops


def test_demo_data_cli(tmp_path, capsys):
    assert (
        main(
            [
                "demo-data",
                str(tmp_path / "d"),
                "--cob",
                "2026-03-31",
                "--deals",
                "500",
                "--entities",
                "3",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert (tmp_path / "d" / "deals" / "cob=2026-03-31").is_dir()
    assert (tmp_path / "d" / "entities.parquet").is_file()


def test_no_module_reads_the_shared_folder():
    for f in [*SRC.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        if f.name == Path(__file__).name:
            continue
        assert "shared/reference" not in f.read_text(), f
    assert os.path.exists(ROOT / "pipelines" / "reference" / "lcr_categories.csv")
