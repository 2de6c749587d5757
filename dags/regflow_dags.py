"""Airflow DAG file: builds one DAG per pipeline spec in ``pipelines/`` (regflow).

Parsing is cheap: compiled plans are cached by content hash, and neither pyspark nor pandas is
imported here. A broken spec shows up as an import error for that pipeline only.
"""

from pathlib import Path

from regflow.render.dagfile import dags_for_project

globals().update(dags_for_project(Path(__file__).resolve().parent.parent))
