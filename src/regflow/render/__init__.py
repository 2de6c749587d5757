"""Render plans as Airflow DAGs. The only layer that imports airflow."""
