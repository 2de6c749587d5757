"""One broken pipeline, under Airflow's real dag-processor, affects that pipeline alone.

Airflow records import errors per DAG file and marks every DAG of a file with an import error
stale (gone from the UI, runs no longer scheduled). Each pipeline has its own DAG file
(``regflow dags``), so a broken spec, a self-approved rule or a broken operator file is an
import error of the pipelines that use it, with the spec's or rule's file:line, while the
others stay active. The test runs ``airflow dag-processor --num-runs 1`` on a temporary
AIRFLOW_HOME and reads the metadata database.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY = """\
pipeline: {name}
params: {{data_root: .}}
sources:
  items:
    path: "{{data_root}}/items"
    primary_key: [item_id]
    schema: {{item_id: string, grp: string, v: "decimal(20,2)"}}
nodes:
  - id: prep
    op: {op}
    inputs: [items]
{settings}"""

TINY_OPS = '''\
"""A project operator used only by the pipeline op_user."""

from regflow import operator


@operator("tiny_copy")
def tiny_copy(df, params, ctx):
    return df
'''

RULE = """\
rule_id: T-1
pipeline: rule_user
stage: prep
conditions:
  - {field: grp, operator: "=", value: g1}
adjustments:
  - {field: v, operation: add, value: 1}
effective_date: 2026-01-01
approval:
  requested_by: a.analyst
  approved_by: a.analyst
  timestamp: 2026-01-02T09:00:00Z
reason: approved by its own author
"""

CALC = '    columns: {w: "v * 2"}\n'
BROKEN_CALC = '    colums: {w: "v * 2"}\n'


def airflow(home: Path, dags: Path, *args: str) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "REGFLOW_CACHE_DIR": str(home / "plan-cache"),
    }
    exe = Path(sys.executable).parent / "airflow"
    proc = subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def parse(home: Path, dags: Path) -> tuple[dict[str, bool], dict[str, str]]:
    """One pass of the real dag-processor over the DAGs folder; then, from the metadata
    database, each DAG's 'active' (not stale) flag and each file's import error."""
    airflow(home, dags, "dag-processor", "--num-runs", "1")
    with sqlite3.connect(home / "airflow.db") as db:
        active = {d: not stale for d, stale in db.execute("SELECT dag_id, is_stale FROM dag")}
        errors = dict(db.execute("SELECT filename, stacktrace FROM import_error").fetchall())
    return active, errors


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.mark.slow
def test_a_broken_spec_rule_or_operator_leaves_the_other_pipelines_active(tmp_path):
    from regflow.render.dagfile import write_dag_files

    project = tmp_path / "project"
    for name in ("pipelines", "operators"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    pipes = project / "pipelines"
    ops = project / "operators"
    write(pipes / "spec_user.yaml", TINY.format(name="spec_user", op="calc", settings=CALC))
    write(pipes / "rule_user.yaml", TINY.format(name="rule_user", op="calc", settings=CALC))
    write(pipes / "op_user.yaml", TINY.format(name="op_user", op="tiny_copy", settings=""))
    write(ops / "tiny_ops.py", TINY_OPS)
    write_dag_files(project)
    dags = project / "dags"
    assert sorted(p.name for p in dags.glob("*.py")) == [
        "regflow_dag_files.py",
        "regflow_lcr.py",
        "regflow_op_user.py",
        "regflow_rule_user.py",
        "regflow_spec_user.py",
    ]
    home = tmp_path / "airflow"
    airflow(home, dags, "db", "migrate")
    everyone = {"lcr", "spec_user", "rule_user", "op_user"}

    active, errors = parse(home, dags)
    assert active == dict.fromkeys(everyone, True)
    assert errors == {}

    # break three pipelines three ways, and an operator file that no pipeline uses
    write(pipes / "spec_user.yaml", TINY.format(name="spec_user", op="calc", settings=BROKEN_CALC))
    write(project / "adjustments" / "rule_user" / "T-1.yaml", RULE)
    write(ops / "tiny_ops.py", TINY_OPS.replace("return df", "return df)"))
    write(ops / "unused.py", "import no_such_module_anywhere\n")
    active, errors = parse(home, dags)
    assert active == {"lcr": True, "spec_user": False, "rule_user": False, "op_user": False}
    assert sorted(errors) == ["regflow_op_user.py", "regflow_rule_user.py", "regflow_spec_user.py"]
    spec_error = errors["regflow_spec_user.py"]
    assert f"{pipes / 'spec_user.yaml'}:12:5" in spec_error
    assert "unknown key 'colums'" in spec_error and "did you mean 'columns'" in spec_error
    rule_error = errors["regflow_rule_user.py"]
    assert "T-1.yaml:11:" in rule_error and "approved_by" in rule_error
    op_error = errors["regflow_op_user.py"]
    assert f"{pipes / 'op_user.yaml'}:10:" in op_error and "unknown op 'tiny_copy'" in op_error
    assert "tiny_ops.py" in op_error and "unused.py" in op_error

    # fixed: every DAG is active again and the import errors are gone; a new spec without
    # its DAG file is an import error of the check file, naming it, until `regflow dags`
    write(pipes / "spec_user.yaml", TINY.format(name="spec_user", op="calc", settings=CALC))
    (project / "adjustments" / "rule_user" / "T-1.yaml").unlink()
    write(ops / "tiny_ops.py", TINY_OPS)
    write(pipes / "newcomer.yaml", TINY.format(name="newcomer", op="calc", settings=CALC))
    active, errors = parse(home, dags)
    assert active == dict.fromkeys(everyone, True)
    assert list(errors) == ["regflow_dag_files.py"]
    assert "pipelines/newcomer.yaml" in errors["regflow_dag_files.py"]
    assert "run `regflow dags`" in errors["regflow_dag_files.py"]

    write_dag_files(project)
    active, errors = parse(home, dags)
    assert active == dict.fromkeys(everyone | {"newcomer"}, True)
    assert errors == {}


def test_validate_reports_a_broken_operator_file_and_a_spec_without_dag_file(
    project, monkeypatch, capsys
):
    from regflow.cli.main import main
    from regflow.ops import registry

    monkeypatch.setenv("REGFLOW_PROJECT", str(project))
    registry.forget_failures()
    write(project / "operators" / "unused.py", "import no_such_module_anywhere\n")
    newcomer = TINY.format(name="newcomer", op="calc", settings=CALC)
    write(project / "pipelines" / "newcomer.yaml", newcomer)
    assert main(["validate"]) == 1
    err = capsys.readouterr().err
    assert "unused.py" in err and "no_such_module_anywhere" in err
    assert "newcomer.yaml: no DAG file dags/regflow_newcomer.py; run `regflow dags`" in err
    assert main(["dags", "--check"]) == 1
    assert main(["dags"]) == 0
    assert "regflow_newcomer.py" in capsys.readouterr().out
    assert main(["dags", "--check"]) == 0
    (project / "operators" / "unused.py").unlink()
    assert main(["validate"]) == 0, capsys.readouterr().err


ISO_OPS = {
    "iso_a.py": '@operator("iso_only_a")\ndef a(df, params, ctx):\n    return df\n\n\n'
    '@operator("iso_dup")\ndef dup(df, params, ctx):\n    return df\n',
    "iso_b.py": '@operator("iso_dup")\ndef dup2(df, params, ctx):\n    return df.limit(1)\n',
    # registers an op, then fails: none of its ops may be used
    "iso_c.py": '@operator("iso_c_first")\ndef c(df, params, ctx):\n    return df\n\n\n'
    'raise RuntimeError("half-written file")\n',
}


@pytest.mark.parametrize(
    ("op", "error"),
    [
        ("iso_only_a", None),
        ("calc", None),
        ("iso_dup", "operator 'iso_dup' is already registered"),
        ("iso_c_first", "half-written file"),
    ],
)
def test_an_operator_file_that_fails_breaks_only_the_specs_using_its_ops(tmp_path, op, error):
    from regflow.errors import SpecError
    from regflow.ops import registry
    from regflow.plan.compiler import compile_file

    registry._reset_for_tests()
    try:
        for name, body in ISO_OPS.items():
            write(tmp_path / "operators" / name, "from regflow import operator\n\n\n" + body)
        spec = tmp_path / "pipelines" / "iso.yaml"
        write(spec, TINY.format(name="iso", op=op, settings=CALC if op == "calc" else ""))
        if error is None:
            assert [n.op for n in compile_file(spec).nodes] == [op]
        else:
            with pytest.raises(SpecError) as info:
                compile_file(spec)
            text = str(info.value)
            assert f"{spec}:10:9" in text and f"unknown op '{op}'" in text
            assert error in text
        assert sorted(Path(f).name for f in registry.import_failures()) == ["iso_b.py", "iso_c.py"]
    finally:
        registry._reset_for_tests()


def test_regflow_dags_writes_one_file_per_spec_and_removes_stale_ones(tmp_path):
    from regflow.render.dagfile import write_dag_files

    write(tmp_path / "pipelines" / "a.yaml", TINY.format(name="a", op="calc", settings=CALC))
    write(tmp_path / "pipelines" / "b.yml", TINY.format(name="b", op="calc", settings=CALC))
    dags = tmp_path / "dags"
    write(dags / "mine.py", "# a DAG file of the user's own\n")
    legacy = (  # the file as it was
        "from pathlib import Path\n\nfrom regflow.render.dagfile import dags_for_project\n\n"
        "globals().update(dags_for_project(Path(__file__).resolve().parent.parent))\n"
    )
    write(dags / "regflow_dags.py", legacy)  # the one file that built every DAG before
    written, deleted = write_dag_files(tmp_path)
    names = ["regflow_a.py", "regflow_b.py", "regflow_dag_files.py"]
    assert sorted(p.name for p in written) == names
    assert [p.name for p in deleted] == ["regflow_dags.py"]
    assert 'pipelines" / "b.yml")' in (dags / "regflow_b.py").read_text()
    assert write_dag_files(tmp_path) == ([], [])
    (tmp_path / "pipelines" / "b.yml").unlink()
    assert write_dag_files(tmp_path) == ([], [dags / "regflow_b.py"])
    assert sorted(p.name for p in dags.iterdir()) == [
        "mine.py",
        "regflow_a.py",
        "regflow_dag_files.py",
    ]


PROBE = """
import json, sys
import airflow  # (imports airflow_local_settings, as every Airflow process does at start)
print(json.dumps({m: m in sys.modules for m in sys.argv[1:]}))
"""
PRELOADED = ("regflow.render.airflow_dag", "regflow.render.k8s_operator")
PROVIDER = "airflow.providers.cncf.kubernetes.operators.spark_kubernetes"


@pytest.mark.slow
def test_the_charts_local_settings_preload_regflow_for_the_dag_processor(tmp_path):
    """The Helm chart's ``airflowLocalSettings`` (helm/values.yaml), as the chart mounts it
    in ``$AIRFLOW_HOME/config``: every Airflow process imports regflow's DAG building at
    start, and the Kubernetes operator with its provider only under
    ``REGFLOW_EXECUTOR=kubernetes``; the real dag-processor still parses the LCR DAG with
    no import error under both executors (no import cycle with Airflow's own start).

    Does not prove: the time it saves per parse (benchmarks/dag_processor.py measures it)."""
    import yaml

    from regflow.render.dagfile import write_dag_files

    values = yaml.safe_load((ROOT / "helm" / "values.yaml").read_text())
    settings = values["airflow"]["airflowLocalSettings"]
    project = tmp_path / "project"
    for name in ("pipelines", "operators"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    write_dag_files(project)
    dags = project / "dags"
    home = tmp_path / "airflow"
    (home / "config").mkdir(parents=True)
    (home / "config" / "airflow_local_settings.py").write_text(settings)
    airflow(home, dags, "db", "migrate")
    for executor in ("local", "kubernetes"):
        os.environ["REGFLOW_EXECUTOR"] = executor
        try:
            active, errors = parse(home, dags)
            env = {**os.environ, "AIRFLOW_HOME": str(home), "PYTHONWARNINGS": "ignore"}
            probe = subprocess.run(
                [sys.executable, "-c", PROBE, *PRELOADED, PROVIDER],
                env=env, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
        finally:
            del os.environ["REGFLOW_EXECUTOR"]
        assert (active, errors) == ({"lcr": True}, {}), executor
        assert probe.returncode == 0, probe.stderr[-3000:]
        loaded = json.loads(probe.stdout.strip().splitlines()[-1])
        kubernetes = executor == "kubernetes"
        assert loaded == {
            "regflow.render.airflow_dag": True,
            "regflow.render.k8s_operator": kubernetes,
            PROVIDER: kubernetes,
        }, executor
