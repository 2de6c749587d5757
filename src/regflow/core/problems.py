"""Pydantic validation errors as problems located in the YAML (``file:line:col``, the key
path, a hint). Shared by the spec loader and the adjustment-rule loader."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from regflow.core.yamlpos import KeyPath, SourceMap
from regflow.errors import Problem


def _model_fields(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """Every field name (and alias) of ``model`` and of the models nested in it, for hints."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        for t in _nested_models(info.annotation):
            names |= _model_fields(t, seen)
    return names


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    import typing

    out = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        out.append(annotation)
    for arg in typing.get_args(annotation):
        out += _nested_models(arg)
    return out


_NO_DATA = object()


def _data_loc(loc: tuple[Any, ...], data: Any, etype: str) -> tuple[tuple[Any, ...], bool]:
    """The part of a pydantic ``loc`` that is a real path into ``data``, and whether it
    names a mapping key (``[key]``).

    pydantic puts union members (``str``, ``CalcColumn``, ``list[str]``) and validator tags
    in ``loc``; a user's key may look just like them, so the data decides what is a path.
    """
    out: list[Any] = []
    cur = data
    is_key = False
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if part == "[key]":
            is_key = True
        elif (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        ):
            out.append(part)
            cur = cur[part]
        elif last and etype == "missing":
            out.append(part)
    return tuple(out), is_key


def _legacy_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    return tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()) and p != "str")


def pydantic_problems(
    exc: ValidationError,
    smap: SourceMap,
    prefix: KeyPath,
    model: type[BaseModel],
    extra_keys: tuple[str, ...] = (),
    data: Any = _NO_DATA,
) -> list[Problem]:
    """Problems of a pydantic error, located in the YAML. Pass the validated ``data`` so
    that union-member names in pydantic's locations are told apart from real keys."""
    out: list[Problem] = []
    allowed = _model_fields(model) | set(extra_keys)
    located = []
    for err in exc.errors():
        if data is _NO_DATA:
            located.append((err, _legacy_loc(tuple(err["loc"])), False))
        else:
            located.append((err, *_data_loc(tuple(err["loc"]), data, err["type"])))
    for err, loc, is_key in located:
        etype = err["type"]
        if _other_member_fits(err, loc, located):
            continue
        path = (*prefix, *loc)
        cause = (err.get("ctx") or {}).get("error")
        hint = getattr(cause, "hint", "") or _hint_for(etype)
        if etype == "extra_forbidden":
            key = loc[-1] if loc else "?"
            hint = _suggest_key(str(key), allowed)
            out.append(smap.problem(f"unknown key '{key}'", path, key=True, hint=hint))
        elif etype == "missing":
            key = loc[-1] if loc else "?"
            out.append(
                smap.problem(
                    f"missing required key '{key}'",
                    path,
                    at=path[:-1],
                    key=True,
                    hint=f"add '{key}: ...' here",
                )
            )
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if etype == "tuple_type":  # YAML has lists; tuples are how the models store them
                msg = "Input should be a valid list"
            problem = smap.problem(msg, path, hint=hint, key=is_key)
            if problem not in out:
                out.append(problem)
    return out


# Words authors reach for, and the key regflow calls it.
_KEY_SYNONYMS = {
    "columns": "schema",
    "key": "primary_key",
    "keys": "primary_key",
    "pk": "primary_key",
    "input": "inputs",
    "operator": "op",
    "name": "id",
}


def _suggest_key(key: str, allowed: set[str]) -> str:
    synonyms = {k: v for k, v in _KEY_SYNONYMS.items() if v in allowed and k not in allowed}
    close = difflib.get_close_matches(key, sorted(allowed | set(synonyms)), n=1)
    if close:
        return f"did you mean '{synonyms.get(close[0], close[0])}'?"
    return "remove it; allowed keys: " + ", ".join(sorted(allowed))


def _other_member_fits(err: Any, loc: KeyPath, located: list[Any]) -> bool:
    """A union member's type error for a mapping or list (``str | CalcColumn`` given a
    mapping) is noise when another member took the value and reported what is wrong inside."""
    if not err["type"].endswith("_type") or not isinstance(err.get("input"), dict | list):
        return False
    return any(
        other is not err and len(oloc) > len(loc) and oloc[: len(loc)] == loc
        for other, oloc, _ in located
    )


def _hint_for(etype: str) -> str:
    return {
        "string_type": "quote the value or write text",
        "list_type": "write a YAML list, e.g. [a, b]",
        "dict_type": "write a YAML mapping (key: value)",
        "bool_type": "use true or false",
        "too_short": "add at least one entry",
        "literal_error": "use one of the allowed values",
        "tuple_type": "write a YAML list, e.g. [a, b]",
        "int_parsing": "write a whole number",
        "bool_parsing": "use true or false",
        "model_type": "write a YAML mapping (key: value)",
        "model_attributes_type": "write a YAML mapping (key: value)",
    }.get(etype, "")
