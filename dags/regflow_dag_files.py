"""Airflow DAG file that defines no DAG: it checks that every regflow pipeline spec in
pipelines/ has its own DAG file in dags/, and is an import error naming those that do not
(`regflow dags` writes them).
"""

from pathlib import Path

from regflow.render.dagfile import check_dag_files

check_dag_files(Path(__file__).resolve().parent.parent)
