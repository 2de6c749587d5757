"""The driver engine: steps of a stage re-implemented exactly with pyarrow and numpy on the
driver, for data small enough that a Spark job costs more than the work.

- :mod:`.cluster`: clustering a lineage checkpoint (Spark's repartition and sort);
- :mod:`.aggregate`: finishing an aggregate from its clustered checkpoint;
- :mod:`.audit`: an adjustment audit from the rows' audit columns, the rows each rule
  changed, the star's adjusted flags per row;
- :mod:`.checks`: lineage-id checks on written data (duplicates, ids not in the input), a
  custom rollup's total rows, a join lookup's duplicate keys;
- :mod:`.copy`: a few rows held by the driver (an adjust node's small input).

Each step either gives exactly Spark's result or declines with its reason
(:class:`regflow.runtime.policy.Declined`); the caller then runs Spark. Which steps it may
take is the execution policy's choice (:class:`regflow.runtime.policy.ExecutionPolicy`).
"""
