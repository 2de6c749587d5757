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

from regflow.core.problems import pydantic_problems
from regflow.core.yamlpos import KeyPath, SourceMap, YamlSyntaxError, load_yaml
from regflow.errors import Problem
from regflow.ops import registry
from regflow.project import project_root
from regflow.spec.models import (
    BUILTIN_TEMPLATE_VARS,
    NODE_COMMON_KEYS,
    NodeSpec,
    PipelineHeader,
    PipelineSpec,
    SourceSpec,
    check_identifier,
)

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
    return project_root(spec_path)


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
        if isinstance(op_name, str) and registry.definition(op_name).applies_rules:
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
