"""Operator definitions: params models, schema rules and the registry (no pyspark here;
the Spark implementations live in ``regflow.runtime``)."""
