"""The warehouse layer: star schemas landed in PostgreSQL (local) or Redshift (production).

``model`` describes the tables once; ``dialects`` and ``sql`` turn that into SQL; ``loader``
lands a staged star in one transaction; ``targets`` picks the database; ``s3stage`` hands
Parquet to Redshift through S3; ``powerbi`` and ``generate`` write ``sql/``. No pyspark here:
the Spark half is :mod:`regflow.runtime.star`.
"""
