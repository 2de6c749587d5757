"""Airflow DAG file of the regflow pipeline pipelines/lcr.yaml (written by `regflow dags`).

A broken spec, rule or operator of this pipeline is an import error of this file alone.
"""

from pathlib import Path

from regflow.render.dagfile import pipeline_dag

dag = pipeline_dag(Path(__file__).resolve().parent.parent / "pipelines" / "lcr.yaml")
