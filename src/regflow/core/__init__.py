"""The shared vocabulary below every other layer: column types and schemas (``types``), ids,
column names and the lineage column (``names``), YAML that remembers where every value came
from (``yamlpos``) and validation errors located in it (``problems``).

It imports nothing of regflow but ``errors``; every other package may import it.
"""
