"""Load a pipeline spec from YAML, collecting every problem with its file:line:col.

Each part (header, every source, every node and its op settings) is validated on its own,
so one typo never hides the others. The result keeps only the valid parts, plus the names
of broken ones, so the compiler can still check the graph and columns around them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from regflow.errors import Problem
from regflow.ops import registry
from regflow.spec.models import (
    BUILTIN_TEMPLATE_VARS,
    NODE_COMMON_KEYS,
    NodeSpec,
    PipelineHeader,
    PipelineSpec,
    SourceSpec,
    check_identifier,
)
from regflow.spec.yamlpos import KeyPath, SourceMap, YamlSyntaxError, load_yaml

_TEMPLATE_VAR = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class LoadedSpec:
    """A parsed spec: its valid parts, where everything is, and what was wrong."""

    path: Path
    text: str
    spec: PipelineSpec
    smap: SourceMap
    node_index: dict[str, int] = field(default_factory=dict)
    broken: frozenset[str] = frozenset()
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def project_dir(self) -> Path:
        return project_dir_of(self.path)

    def node_path(self, node_id: str, *rest: str | int) -> KeyPath:
        return ("nodes", self.node_index.get(node_id, 0), *rest)


def project_dir_of(spec_path: Path) -> Path:
    """The spec's project root (:func:`regflow.project.project_root`): ``$REGFLOW_PROJECT``,
    else the folder above ``pipelines/``, else the spec's own folder."""
    from regflow.project import project_root

    return project_root(spec_path)


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


def _validate(
    model: type[BaseModel],
    data: Any,
    smap: SourceMap,
    path: KeyPath,
    problems: list[Problem],
    extra_keys: tuple[str, ...] = (),
) -> Any:
    """Validate ``data`` as ``model``, adding its problems. When the only problems are
    unknown keys, the part is still returned without them, so that the checks downstream
    of it (columns, graph) still run: one typo must not hide the other errors."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems += pydantic_problems(exc, smap, path, model, extra_keys, data=data)
        errs = exc.errors()
        if not isinstance(data, dict) or not all(
            e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in errs
        ):
            return None
        unknown = {e["loc"][0] for e in errs}
        try:
            return model.model_validate({k: v for k, v in data.items() if k not in unknown})
        except ValidationError:
            return None


def load_spec(path: Path | str) -> LoadedSpec:
    """Parse and validate one spec file. Never raises for user mistakes: see ``problems``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return load_spec_text(text, str(path), path=path)


def load_spec_text(text: str, file: str, *, path: Path | None = None) -> LoadedSpec:
    path = path or Path(file)
    empty = PipelineSpec.model_construct(pipeline=path.stem, sources={}, nodes=())
    yaml_problems: list[Problem] = []
    try:
        raw, smap = load_yaml(text, file, problems=yaml_problems)
    except YamlSyntaxError as exc:
        smap = SourceMap(file=file, text=text)
        return LoadedSpec(path, text, empty, smap, problems=(exc.problem,))
    if not isinstance(raw, dict):
        return LoadedSpec(
            path,
            text,
            empty,
            smap,
            problems=(
                *yaml_problems,
                smap.problem(
                    "a pipeline spec must be a YAML mapping", (), hint="start with 'pipeline: <id>'"
                ),
            ),
        )
    registry.load_entry_points()
    # a broken operator file breaks only the specs that use its ops (they name it)
    registry.load_operator_files(project_dir_of(path) / "operators", strict=False)

    problems: list[Problem] = list(yaml_problems)
    header_raw = {k: v for k, v in raw.items() if k not in ("sources", "nodes")}
    header: PipelineHeader | None = _validate(
        PipelineHeader, header_raw, smap, (), problems, ("sources", "nodes")
    )

    sources, broken = _load_sources(raw, smap, problems)
    nodes, node_index, broken_nodes = _load_nodes(raw, smap, problems, set(sources) | broken)
    broken |= broken_nodes

    raw_params = raw.get("params")
    params = (
        dict(header.params)
        if header
        else (dict(raw_params) if isinstance(raw_params, dict) else {})
    )
    _check_templates(raw.get("sources"), params, smap, problems)

    fields = dict(header) if header else {"pipeline": path.stem}  # (nested models kept)
    spec = PipelineSpec.model_construct(**fields, sources=sources, nodes=tuple(nodes))
    return LoadedSpec(
        path,
        text,
        spec,
        smap,
        node_index=node_index,
        broken=frozenset(broken),
        problems=tuple(problems),
    )


def _load_sources(
    raw: dict[str, Any], smap: SourceMap, problems: list[Problem]
) -> tuple[dict[str, SourceSpec], set[str]]:
    sources: dict[str, SourceSpec] = {}
    broken: set[str] = set()
    raw_sources = raw.get("sources")
    if raw_sources is None:
        problems.append(
            smap.problem(
                "missing required key 'sources'", (), hint="declare the datasets the pipeline reads"
            )
        )
        return sources, broken
    if not isinstance(raw_sources, dict) or not raw_sources:
        problems.append(
            smap.problem("'sources' must be a non-empty mapping of name -> source", ("sources",))
        )
        return sources, broken
    for name, body in raw_sources.items():
        path: KeyPath = ("sources", name)
        try:
            check_identifier(str(name), "source name")
        except ValueError as exc:
            problems.append(smap.problem(str(exc), path, key=True, hint=getattr(exc, "hint", "")))
            broken.add(str(name))
            continue
        src = _validate(SourceSpec, body if body is not None else {}, smap, path, problems)
        if src is None:
            broken.add(name)
        else:
            sources[name] = src
    return sources, broken


def _load_nodes(
    raw: dict[str, Any], smap: SourceMap, problems: list[Problem], source_names: set[str]
) -> tuple[list[NodeSpec], dict[str, int], set[str]]:
    nodes: list[NodeSpec] = []
    index: dict[str, int] = {}
    broken: set[str] = set()
    raw_nodes = raw.get("nodes")
    if raw_nodes is None:
        problems.append(
            smap.problem(
                "missing required key 'nodes'", (), hint="add a list of nodes (id, op, inputs)"
            )
        )
        return nodes, index, broken
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.append(smap.problem("'nodes' must be a non-empty list", ("nodes",)))
        return nodes, index, broken
    for i, body in enumerate(raw_nodes):
        path: KeyPath = ("nodes", i)
        if not isinstance(body, dict):
            problems.append(smap.problem("a node must be a mapping with id, op and inputs", path))
            continue
        node_id = body.get("id")
        if isinstance(node_id, str):
            if node_id in index or node_id in source_names:
                first = (
                    ("nodes", index[node_id], "id") if node_id in index else ("sources", node_id)
                )
                where = smap.location(first, key=first[0] == "sources")
                what = "a source" if first[0] == "sources" else "a node"
                problems.append(
                    smap.problem(
                        f"duplicate id '{node_id}' (already {what} at line {where.line})",
                        (*path, "id"),
                        hint="node ids and source names share one namespace; rename one",
                    )
                )
                continue
            index[node_id] = i
        common = {k: v for k, v in body.items() if k in NODE_COMMON_KEYS}
        settings = {k: v for k, v in body.items() if k not in NODE_COMMON_KEYS}
        node: NodeSpec | None = _validate(NodeSpec, common, smap, path, problems)
        op_name = body.get("op")
        params = None
        if op_name == "adjust":
            problems.append(
                smap.problem(
                    "op 'adjust' is reserved for adjustment rules",
                    (*path, "op"),
                    hint="write a rule file under adjustments/<pipeline>/ instead; the compiler "
                    "splices it in",
                )
            )
            op_name = None
        if isinstance(op_name, str):
            try:
                op = registry.get(op_name)
            except KeyError:
                problems.append(
                    smap.problem(
                        f"unknown op '{op_name}'", (*path, "op"), hint=registry.suggest(op_name)
                    )
                )
                op = None
            if op is not None:
                params = _validate(op.params, settings, smap, path, problems, NODE_COMMON_KEYS)
        if node is None or params is None:
            if isinstance(node_id, str):
                broken.add(node_id)
            continue
        nodes.append(node.model_copy(update={"params": params}))
    return nodes, index, broken


def _check_templates(
    raw_sources: Any,
    params: dict[str, Any],
    smap: SourceMap,
    problems: list[Problem],
) -> None:
    # The raw paths, so that a source broken for another reason is still checked.
    known = set(params) | set(BUILTIN_TEMPLATE_VARS)
    for name, body in (raw_sources if isinstance(raw_sources, dict) else {}).items():
        src_path = body.get("path") if isinstance(body, dict) else None
        if not isinstance(src_path, str):
            continue
        for var in _TEMPLATE_VAR.findall(src_path):
            if var not in known:
                close = difflib.get_close_matches(var, sorted(known), n=1)
                hint = (
                    f"did you mean '{{{close[0]}}}'?"
                    if close
                    else (
                        "declare it under 'params:' or use one of {cob}, {spec_dir}, {project_dir}"
                    )
                )
                problems.append(
                    smap.problem(
                        f"unknown template variable '{{{var}}}' in path",
                        ("sources", name, "path"),
                        hint=hint,
                    )
                )


def pipeline_files(project_dir: Path) -> list[Path]:
    """The pipeline specs of a project: ``pipelines/*.yaml`` (and ``*.yml``)."""
    folder = project_dir / "pipelines"
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
