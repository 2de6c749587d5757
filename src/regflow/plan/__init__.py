"""Plans: the compiled, frozen description of what runs (nodes, stages, schemas, hashes).
No airflow, no pyspark."""
