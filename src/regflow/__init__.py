"""regflow: YAML pipeline specs compiled into Airflow 3 DAGs of lineage-preserving PySpark ops.

The public API for operator authors is :func:`operator` and :class:`OpParams`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["OpParams", "__version__", "operator"]


def __getattr__(name: str) -> Any:  # keep `import regflow` cheap
    if name == "operator":
        from regflow.ops.registry import operator

        return operator
    if name == "OpParams":
        from regflow.ops.base import OpParams

        return OpParams
    raise AttributeError(name)
