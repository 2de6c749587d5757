"""Pipeline specs: typed, immutable models of the YAML, with source positions."""
