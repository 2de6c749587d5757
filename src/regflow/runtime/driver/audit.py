"""The driver engine's audit steps: an adjustment audit's rows from the rows' audit tags,
the rows each rule changed, and the star's adjusted flags per row; exactly as Spark makes
them (:mod:`regflow.runtime.audit_rows`, the star's Spark path), else declined.

Pure pyarrow and numpy: no Spark here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from regflow.runtime.adjust_ops import TagWrite, mask_of
from regflow.runtime.driver.aggregate import arrow_type
from regflow.runtime.policy import Declined
from regflow.spec.models import LINEAGE_COLUMN


def audit_table(
    table: Any,
    tag: str,
    writes: Sequence[TagWrite],
    constants: Mapping[str, tuple[Any, str]],
) -> Any | Declined:
    """The audit rows carried in ``table``'s ``tag`` column (see
    :func:`regflow.runtime.adjust_ops.tag_changes`; ``writes`` from
    :func:`~regflow.runtime.adjust_ops.tag_writes` with the same rules): the ``constants``
    columns (name -> (value, Spark type)) then rule_id, field, lineage id, old_value,
    new_value; one row per changed value, sorted by rule id, lineage id, then write.

    A write's old value is the field before the rules or after the previous write that
    applied to the row; its new value is the field after the rules, or, when a later write
    to the field applied too, the value it set. Declined (the caller then writes the audit
    with Spark) when that needs arithmetic (an ``add``/``multiply`` followed by another
    write to the field on the same row), when the values' text cannot be made exactly as
    Spark makes it (see :func:`spark_text`), or when the lineage id is not an integer.

    Index arithmetic in numpy: the tagged rows are put in lineage id order once, each
    write's rows are then picked in that order (and in rule order, the audit's order, with
    no further sort unless a rule writes twice), and each text column is built with one
    ``take`` from a pool of the texts it draws on.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.string()
    tagged = table.select([LINEAGE_COLUMN, tag]).filter(pc.is_valid(table.column(tag)))
    lineage = tagged.column(LINEAGE_COLUMN).combine_chunks()
    if not pa.types.is_integer(lineage.type) or lineage.null_count:
        return Declined("the lineage id is not an integer, or null")
    by_id = np.argsort(lineage.to_numpy())  # (ids are unique; a deterministic order anyway)
    lineage = lineage.take(pa.array(by_id))
    tags = tagged.column(tag).combine_chunks().take(pa.array(by_id))
    n = len(tags)
    pool: list[Any] = []  # the texts old_value and new_value take from
    size = [0]

    def pooled(values: Any) -> int:
        """``values`` added to the pool; returns where they start in it."""
        start = size[0]
        pool.append(values)
        size[0] += len(values)
        return start

    # per write with rows: (rule rank, write, rows (positions in id order), old, new),
    # the old and new values as positions in the pool
    pieces: list[tuple[int, int, Any, Any, Any]] = []
    if writes and n:
        masks = {
            name: pc.fill_null(pc.struct_field(tags, name).cast(pa.int64()), 0).to_numpy()
            for name in {mask_of(w.bit)[0] for w in writes}
        }
        fields = {f.name for f in tags.type}
        for slot in dict.fromkeys(w.slot for w in writes):
            chain = [w for w in writes if w.slot == slot]
            before_rules = pc.struct_field(tags, f"o{slot}")
            old_text = spark_text(before_rules)
            # the field after the rules: in the tag, unless only sets write it (each
            # write's new value is then its constant)
            after = f"n{slot}" in fields
            new_text = spark_text(pc.struct_field(tags, f"n{slot}")) if after else None
            if old_text is None or (after and new_text is None):
                return Declined("a value's text is not made exactly as Spark makes it")
            at_old = pooled(old_text)
            at_new = pooled(new_text) if new_text is not None else -1
            hits = [(masks[mask_of(w.bit)[0]] & mask_of(w.bit)[1]) != 0 for w in chain]
            later = np.zeros(n, dtype=bool)  # a later write of the chain applied
            later_hit: list[Any] = [None] * len(chain)
            for j in range(len(chain) - 1, -1, -1):
                later_hit[j] = later
                later = later | hits[j]
            set_at = np.full(len(chain), -1, dtype=np.int64)  # each set's text in the pool
            last = np.full(n, -1, dtype=np.int64)  # the chain's last write on the row so far
            for j, w in enumerate(chain):
                rows = np.flatnonzero(hits[j])
                if not len(rows):
                    continue
                more = later_hit[j][rows]
                if not after or more.any():  # the value this write set shows
                    value = _set_text(w, before_rules.type)
                    if value is None:
                        return Declined("a value between two writes needs arithmetic")
                    set_at[j] = pooled(pa.array([value.as_py()], text))
                new = (
                    np.where(more, set_at[j], at_new + rows)
                    if after
                    else np.full(len(rows), set_at[j], dtype=np.int64)
                )
                previous = last[rows]
                old = at_old + rows
                if (previous >= 0).any():  # after an earlier write: the value it set
                    old = np.where(previous >= 0, set_at[np.maximum(previous, 0)], old)
                last[rows] = j
                pieces.append((w.bit, w.k, rows, old, new))
    pieces.sort(key=lambda p: (p[0], p[1]))
    none = np.zeros(0, dtype=np.int64)
    rows = np.concatenate([p[2] for p in pieces] or [none])
    k = np.concatenate([np.full(len(p[2]), p[1], np.int64) for p in pieces] or [none])
    old = np.concatenate([p[3] for p in pieces] or [none])
    new = np.concatenate([p[4] for p in pieces] or [none])
    ranks = [p[0] for p in pieces]
    if len(set(ranks)) < len(ranks):  # a rule writing twice: its rows interleave
        rank = np.concatenate([np.full(len(p[2]), p[0], np.int64) for p in pieces])
        order = np.lexsort((k, rows, rank))
        rows, k, old, new = rows[order], k[order], old[order], new[order]
    count = len(rows)
    k_taken = pa.array(k)
    columns: dict[str, Any] = {
        name: pa.repeat(pa.scalar(value, arrow_type(t)), count)
        for name, (value, t) in constants.items()
    }
    columns |= {
        "rule_id": pa.array([w.rule_id for w in writes], text).take(k_taken),
        "field": pa.array([w.field for w in writes], text).take(k_taken),
        LINEAGE_COLUMN: lineage.take(pa.array(rows)),
        "old_value": _take_pooled(pool, old),
        "new_value": _take_pooled(pool, new),
    }
    return pa.table(columns)


def _take_pooled(pool: Sequence[Any], at: Any) -> Any:
    """The texts at positions ``at`` of the arrays of ``pool`` laid end to end (without
    laying them end to end when all come from one)."""
    import numpy as np
    import pyarrow as pa

    if not len(at):
        return pa.array([], pa.string())
    starts = np.cumsum([0, *(len(a) for a in pool)])
    first = int(np.searchsorted(starts, at.min(), side="right")) - 1
    if at.max() < starts[first + 1]:
        return pool[first].take(pa.array(at - starts[first]))
    return pa.concat_arrays(pool).take(pa.array(at))


def _set_text(w: TagWrite, field_type: Any) -> Any | None:
    """The text of the value a ``set`` write gives its field, as Spark would make it (its
    literal cast to the field's type, then to a string), as a string scalar; None for other
    writes, and values whose text this does not reproduce exactly."""
    import datetime as dt
    import decimal

    import pyarrow as pa

    if w.adj.operation != "set":
        return None
    v = w.adj.value
    text: str | None = None
    if v is None:
        return pa.scalar(None, pa.string())
    if pa.types.is_string(field_type) and isinstance(v, str):
        text = v
    elif pa.types.is_boolean(field_type) and isinstance(v, bool):
        text = "true" if v else "false"
    elif pa.types.is_integer(field_type) and isinstance(v, int) and not isinstance(v, bool):
        text = str(v)
    elif pa.types.is_date32(field_type) and isinstance(v, dt.date | str):
        try:
            day = v if isinstance(v, dt.date) else dt.date.fromisoformat(v)
        except ValueError:
            return None
        text = day.isoformat()
    elif pa.types.is_decimal(field_type) and isinstance(v, int | decimal.Decimal | float):
        if isinstance(v, bool):
            return None
        exact = decimal.Decimal(str(v)) if isinstance(v, float) else decimal.Decimal(v)
        step = decimal.Decimal(1).scaleb(-field_type.scale)
        with decimal.localcontext() as ctx:
            ctx.prec = 80
            q = exact.quantize(step, rounding=decimal.ROUND_HALF_UP)
        if len(q.as_tuple().digits) > field_type.precision:
            return None
        text = format(abs(q) if q.is_zero() else q, "f")
    return None if text is None else pa.scalar(text, pa.string())


def spark_text(values: Any) -> Any | None:
    """``values`` as the text Spark's ``CAST(... AS STRING)`` gives, or None for a type
    whose text this does not reproduce exactly (floating point, timestamps...)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = values.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return values.cast(pa.string())
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_date32(t):
        return pc.cast(values, pa.string())
    if not pa.types.is_decimal(t):
        return None
    text = pc.cast(values, pa.string())
    # Arrow writes small magnitudes in scientific notation (1.00E-10, 0E-12); Spark writes
    # plain digits (0.000000000100): redo those few in Python
    sci = pc.fill_null(pc.match_substring(text, "E"), False)
    if not pc.any(sci).as_py():
        return text
    fixed = [
        format(d, "f") if s else x
        for d, s, x in zip(values.to_pylist(), sci.to_pylist(), text.to_pylist(), strict=True)
    ]
    return pa.array(fixed, pa.string())


def matched_rows(audit: Any) -> dict[str, int]:
    """Rows changed per rule id in an audit table (distinct lineage ids)."""
    import numpy as np

    if audit.num_rows == 0:
        return {}
    rules = audit.column("rule_id").combine_chunks().dictionary_encode()
    idx = rules.indices.to_numpy(zero_copy_only=False)
    lid = audit.column(LINEAGE_COLUMN).to_numpy()
    # by rule, then lineage id, as audits are written (one pass), else sorted so
    grouped = (idx[1:] > idx[:-1]) | ((idx[1:] == idx[:-1]) & (lid[1:] >= lid[:-1]))
    order = slice(None) if grouped.all() else np.lexsort((lid, idx))
    i, lo = idx[order], lid[order]
    first = np.ones(len(i), dtype=bool)  # the first row of each (rule, lineage id)
    first[1:] = (i[1:] != i[:-1]) | (lo[1:] != lo[:-1])
    counts = np.bincount(i[first], minlength=len(rules.dictionary))
    return {name: int(c) for name, c in zip(rules.dictionary.to_pylist(), counts, strict=True) if c}


def rules_by_row(audit: Any) -> Any | Declined:
    """Per lineage id of ``audit`` (its ``rule_id`` and lineage id columns): the ids of
    the rules that changed the row, sorted and joined by commas, as Spark's
    ``array_join(array_sort(collect_set(rule_id)), ',')`` makes them; columns
    ``lineage_id`` and ``adjustment_rules``, one row per id, by id. Declined when the lineage
    id is not an integer (Spark's path then)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    lineage = audit.column(LINEAGE_COLUMN).combine_chunks()
    if not pa.types.is_integer(lineage.type) or lineage.null_count:
        return Declined("the lineage id is not an integer, or null")
    if not len(lineage):
        return pa.table(
            {"lineage_id": pa.array([], pa.int64()), "adjustment_rules": pa.array([], pa.string())}
        )
    rules = audit.column("rule_id").combine_chunks().cast(pa.string()).dictionary_encode()
    by_name = pc.sort_indices(rules.dictionary).to_numpy()  # (strings by their bytes)
    rank = np.empty(len(by_name), dtype=np.int64)
    rank[by_name] = np.arange(len(by_name))
    r = rank[rules.indices.to_numpy(zero_copy_only=False)]
    lid = lineage.cast(pa.int64()).to_numpy()
    order = np.lexsort((r, lid))
    lid, r = lid[order], r[order]
    distinct = np.ones(len(lid), dtype=bool)  # each (id, rule) once: a set
    distinct[1:] = (lid[1:] != lid[:-1]) | (r[1:] != r[:-1])
    lid, r = lid[distinct], r[distinct]
    starts = np.flatnonzero(np.r_[True, lid[1:] != lid[:-1]])
    offsets = pa.array(np.r_[starts, len(lid)].astype(np.int32))
    names = rules.dictionary.take(pa.array(by_name)).take(pa.array(r))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, names), ",")
    return pa.table({"lineage_id": pa.array(lid[starts]), "adjustment_rules": joined})
