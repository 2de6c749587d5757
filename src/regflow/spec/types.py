"""Column types and schemas: the public name operator authors import (docs/operators.md).

They are defined in :mod:`regflow.core.types`, below every layer (ops use them too).
"""

from regflow.core.types import (
    NUMERIC_SIMPLE,
    TYPE_HINT,
    Column,
    Schema,
    SpecValueError,
    TypeParseError,
    decimal_ps,
    is_numeric,
    normalize_type,
)

__all__ = [
    "NUMERIC_SIMPLE",
    "TYPE_HINT",
    "Column",
    "Schema",
    "SpecValueError",
    "TypeParseError",
    "decimal_ps",
    "is_numeric",
    "normalize_type",
]
