"""One Airflow DAG file per pipeline spec: ``dags/regflow_<spec>.py``, written by ``regflow dags``.

Airflow's dag-processor parses *files*: an import error marks every DAG of its file stale (they
vanish from the UI and their runs stop being scheduled). So each pipeline has a DAG file of its
own. A broken spec, a broken rule in its adjustments folder, or a broken operator file whose op
it uses is an import error of that pipeline's file alone, carrying the spec's or rule's
file:line message, listed in Airflow's import errors; the other pipelines' DAGs stay active.

``dags/regflow_dag_files.py`` defines no DAG: it raises an import error naming the specs that
have no DAG file yet, so a new spec never silently misses its DAG.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from regflow.errors import ConfigError
from regflow.spec.loader import pipeline_files

if TYPE_CHECKING:
    from airflow.sdk import DAG

CHECK_FILE = "regflow_dag_files.py"
PREFIX = "regflow_"

DAG_FILE = '''\
"""Airflow DAG file of the regflow pipeline pipelines/{spec} (written by `regflow dags`).

A broken spec, rule or operator of this pipeline is an import error of this file alone.
"""

from pathlib import Path

from regflow.render.dagfile import pipeline_dag

dag = pipeline_dag(Path(__file__).resolve().parent.parent / "pipelines" / "{spec}")
'''

CHECK = '''\
"""Airflow DAG file that defines no DAG: it checks that every regflow pipeline spec in
pipelines/ has its own DAG file in dags/, and is an import error naming those that do not
(`regflow dags` writes them).
"""

from pathlib import Path

from regflow.render.dagfile import check_dag_files

check_dag_files(Path(__file__).resolve().parent.parent)
'''


def dag_file_name(spec: Path) -> str:
    """The DAG file of a spec: ``regflow_<stem>.py`` (prefixed: the DAGs folder is on
    ``sys.path``, and a file named after a module, such as ``yaml.py``, would shadow it)."""
    return f"{PREFIX}{spec.stem}.py"


def pipeline_dag(spec: Path | str) -> DAG:
    """The DAG of one spec with its adjustment rules; raises the spec's (or rule's) error,
    which Airflow records as this DAG file's import error."""
    from regflow.plan.cache import load_plan
    from regflow.render.airflow_dag import build_dag

    spec = Path(spec)
    if not spec.is_file():
        raise ConfigError(
            f"pipeline spec {spec} does not exist: delete this DAG file "
            f"(dags/{dag_file_name(spec)}), or run `regflow dags`, which does"
        )
    return build_dag(load_plan(spec))


def missing_dag_files(project_dir: Path) -> list[Path]:
    """The specs of a project without their DAG file in ``dags/``."""
    dags = project_dir / "dags"
    return [s for s in pipeline_files(project_dir) if not (dags / dag_file_name(s)).is_file()]


def check_dag_files(project_dir: Path | str) -> None:
    missing = missing_dag_files(Path(project_dir))
    if missing:
        names = ", ".join(f"pipelines/{s.name}" for s in missing)
        raise ConfigError(
            f"no DAG file for {names}: run `regflow dags` in the project and commit "
            "what it writes to dags/ (one file per pipeline)"
        )


def write_dag_files(project_dir: Path | str) -> tuple[list[Path], list[Path]]:
    """Write ``dags/regflow_<spec>.py`` for every spec and the check file; delete the DAG
    files of specs that no longer exist. Returns (written or changed, deleted)."""
    project_dir = Path(project_dir)
    dags = project_dir / "dags"
    dags.mkdir(exist_ok=True)
    specs = pipeline_files(project_dir)
    wanted = {CHECK_FILE: CHECK}
    for spec in specs:
        name = dag_file_name(spec)
        if name in wanted:
            raise ConfigError(
                f"pipelines/{spec.name}: its DAG file would be dags/{name}, which is taken "
                "(by another spec of that name, or by the check file); rename the spec"
            )
        wanted[name] = DAG_FILE.format(spec=spec.name)
    written = []
    for name, text in wanted.items():
        path = dags / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    deleted = []
    for path in sorted(dags.glob(f"{PREFIX}*.py")):
        text = path.read_text(encoding="utf-8")
        # DAG files of removed specs, and the one file that built every DAG before (it would
        # define each DAG a second time)
        if path.name not in wanted and (
            text.startswith('"""Airflow DAG file of the regflow pipeline ')
            or "dags_for_project(" in text
        ):
            path.unlink()
            deleted.append(path)
    return written, deleted
