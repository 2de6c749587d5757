"""Read a plan's sources for one cob, and give every row its lineage id.

- :mod:`.paths`: where a source's data is for the cob (its files, its cob partitions);
- :mod:`.identity`: a source's identity, which tells a stored stage whether it read the
  same data;
- :mod:`.schema`: Spark types, the types in Parquet footers, checked casts to the declared
  types;
- :mod:`.emptiness`: whether a source has rows for the cob (footers, first lines);
- :mod:`.keys`: null and repeated primary keys;
- :mod:`.reader`: :func:`read_source`, which puts them together.
"""

from __future__ import annotations

from regflow.runtime.sources.emptiness import has_rows
from regflow.runtime.sources.identity import fingerprint, source_location
from regflow.runtime.sources.keys import duplicate_keys, duplicate_keys_error
from regflow.runtime.sources.paths import (
    EmptySourceError,
    cob_partitions,
    render_path,
    resolve_source_path,
)
from regflow.runtime.sources.reader import read_source
from regflow.runtime.sources.schema import (
    CorruptFileError,
    checked_cast,
    corrupt_file,
    read_parquet_schema,
    schema_ddl,
    spark_type,
    sql_text,
)
from regflow.runtime.spark_sql import quote_name

__all__ = [
    "CorruptFileError",
    "EmptySourceError",
    "checked_cast",
    "cob_partitions",
    "corrupt_file",
    "duplicate_keys",
    "duplicate_keys_error",
    "fingerprint",
    "has_rows",
    "quote_name",
    "read_parquet_schema",
    "read_source",
    "render_path",
    "resolve_source_path",
    "schema_ddl",
    "source_location",
    "spark_type",
    "sql_text",
]
