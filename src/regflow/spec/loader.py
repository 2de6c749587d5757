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
    """A spec lives in ``<project>/pipelines/``; otherwise its own folder is the project."""
    parent = spec_path.resolve().parent
    return parent.parent if parent.name == "pipelines" else parent


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


def pydantic_problems(
    exc: ValidationError, smap: SourceMap, prefix: KeyPath, model: type[BaseModel],
    extra_keys: tuple[str, ...] = (),
) -> list[Problem]:
    out = []
    allowed = _model_fields(model) | set(extra_keys)
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic puts union member names in loc (e.g. "str", "CalcColumn"): drop them
        loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()) and p != "str")
        path = (*prefix, *loc)
        etype = err["type"]
        if etype == "extra_forbidden":
            key = loc[-1] if loc else "?"
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "remove it; allowed keys: " + ", ".join(
                sorted(allowed)
            )
            out.append(smap.problem(f"unknown key '{key}'", path, key=True, hint=hint))
        elif etype == "missing":
            key = loc[-1] if loc else "?"
            out.append(
                smap.problem(
                    f"missing required key '{key}'", path, at=path[:-1],
                    hint=f"add '{key}: ...' here",
                )
            )
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(smap.problem(msg, path, hint=_hint_for(etype)))
    return out


def _hint_for(etype: str) -> str:
    return {
        "string_type": "quote the value or write text",
        "list_type": "write a YAML list, e.g. [a, b]",
        "dict_type": "write a YAML mapping (key: value)",
        "bool_type": "use true or false",
        "too_short": "add at least one entry",
        "literal_error": "use one of the allowed values",
    }.get(etype, "")


def load_spec(path: Path | str) -> LoadedSpec:
    """Parse and validate one spec file. Never raises for user mistakes: see ``problems``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return load_spec_text(text, str(path), path=path)


def load_spec_text(text: str, file: str, *, path: Path | None = None) -> LoadedSpec:
    path = path or Path(file)
    empty = PipelineSpec.model_construct(pipeline=path.stem, sources={}, nodes=())
    try:
        raw, smap = load_yaml(text, file)
    except YamlSyntaxError as exc:
        smap = SourceMap(file=file, text=text)
        return LoadedSpec(path, text, empty, smap, problems=(exc.problem,))
    if not isinstance(raw, dict):
        return LoadedSpec(
            path, text, empty, smap,
            problems=(smap.problem("a pipeline spec must be a YAML mapping", (),
                                   hint="start with 'pipeline: <id>'"),),
        )
    registry.load_entry_points()
    registry.load_operator_files(project_dir_of(path) / "operators")

    problems: list[Problem] = []
    header_raw = {k: v for k, v in raw.items() if k not in ("sources", "nodes")}
    header: PipelineHeader | None = None
    try:
        header = PipelineHeader.model_validate(header_raw)
    except ValidationError as exc:
        problems += pydantic_problems(exc, smap, (), PipelineHeader, ("sources", "nodes"))

    sources, broken = _load_sources(raw, smap, problems)
    nodes, node_index, broken_nodes = _load_nodes(raw, smap, problems, set(sources) | broken)
    broken |= broken_nodes

    params = dict(header.params) if header else {}
    _check_templates(sources, params, smap, problems)

    fields = header.model_dump() if header else {"pipeline": path.stem}
    spec = PipelineSpec.model_construct(**fields, sources=sources, nodes=tuple(nodes))
    return LoadedSpec(
        path, text, spec, smap, node_index=node_index, broken=frozenset(broken),
        problems=tuple(problems),
    )


def _load_sources(
    raw: dict[str, Any], smap: SourceMap, problems: list[Problem]
) -> tuple[dict[str, SourceSpec], set[str]]:
    sources: dict[str, SourceSpec] = {}
    broken: set[str] = set()
    raw_sources = raw.get("sources")
    if raw_sources is None:
        problems.append(smap.problem("missing required key 'sources'", (),
                                     hint="declare the datasets the pipeline reads"))
        return sources, broken
    if not isinstance(raw_sources, dict) or not raw_sources:
        problems.append(smap.problem("'sources' must be a non-empty mapping of name -> source",
                                     ("sources",)))
        return sources, broken
    for name, body in raw_sources.items():
        path: KeyPath = ("sources", name)
        try:
            check_identifier(str(name), "source name")
        except ValueError as exc:
            problems.append(smap.problem(str(exc), path, key=True))
            broken.add(str(name))
            continue
        try:
            sources[name] = SourceSpec.model_validate(body if body is not None else {})
        except ValidationError as exc:
            problems += pydantic_problems(exc, smap, path, SourceSpec)
            broken.add(name)
    return sources, broken


def _load_nodes(
    raw: dict[str, Any], smap: SourceMap, problems: list[Problem], source_names: set[str]
) -> tuple[list[NodeSpec], dict[str, int], set[str]]:
    nodes: list[NodeSpec] = []
    index: dict[str, int] = {}
    broken: set[str] = set()
    raw_nodes = raw.get("nodes")
    if raw_nodes is None:
        problems.append(smap.problem("missing required key 'nodes'", (),
                                     hint="add a list of nodes (id, op, inputs)"))
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
                first = ("nodes", index[node_id], "id") if node_id in index else (
                    "sources", node_id)
                where = smap.location(first)
                problems.append(smap.problem(
                    f"duplicate id '{node_id}' (first defined at {where})", (*path, "id"),
                    hint="node ids and source names share one namespace; rename one",
                ))
                continue
            index[node_id] = i
        common = {k: v for k, v in body.items() if k in NODE_COMMON_KEYS}
        settings = {k: v for k, v in body.items() if k not in NODE_COMMON_KEYS}
        node: NodeSpec | None = None
        try:
            node = NodeSpec.model_validate(common)
        except ValidationError as exc:
            problems += pydantic_problems(exc, smap, path, NodeSpec)
        op_name = body.get("op")
        params = None
        if isinstance(op_name, str):
            try:
                op = registry.get(op_name)
            except KeyError:
                problems.append(smap.problem(f"unknown op '{op_name}'", (*path, "op"),
                                             hint=registry.suggest(op_name)))
                op = None
            if op is not None:
                try:
                    params = op.params.model_validate(settings)
                except ValidationError as exc:
                    problems += pydantic_problems(
                        exc, smap, path, op.params, NODE_COMMON_KEYS
                    )
        if node is None or params is None:
            if isinstance(node_id, str):
                broken.add(node_id)
            continue
        nodes.append(node.model_copy(update={"params": params}))
    return nodes, index, broken


def _check_templates(
    sources: dict[str, SourceSpec], params: dict[str, Any], smap: SourceMap,
    problems: list[Problem],
) -> None:
    known = set(params) | set(BUILTIN_TEMPLATE_VARS)
    for name, src in sources.items():
        for var in _TEMPLATE_VAR.findall(src.path):
            if var not in known:
                close = difflib.get_close_matches(var, sorted(known), n=1)
                hint = f"did you mean '{{{close[0]}}}'?" if close else (
                    f"declare it under 'params:' or use one of {{cob}}, {{spec_dir}}, "
                    "{project_dir}")
                problems.append(smap.problem(
                    f"unknown template variable '{{{var}}}' in path", ("sources", name, "path"),
                    hint=hint,
                ))
