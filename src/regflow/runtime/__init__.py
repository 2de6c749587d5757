"""Run a stage on Spark. The only layer that imports pyspark."""
