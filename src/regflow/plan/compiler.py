"""Compile a loaded spec into a :class:`Plan`: graph checks, schemas, stages and hashes.

Pure and side-effect free; imports neither airflow nor pyspark.
"""

from __future__ import annotations

import datetime as dt
import difflib
import graphlib
import hashlib
import json
from pathlib import Path
from typing import Any

from regflow import __version__
from regflow.core.types import Column, Schema
from regflow.errors import Problem, SpecError
from regflow.ops import registry
from regflow.plan.model import Plan, PlanNode, PlanSource, Stage
from regflow.spec.loader import LoadedSpec, load_spec
from regflow.spec.models import LINEAGE_COLUMN, SourceSpec


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def source_schema(src: SourceSpec) -> Schema:
    if src.schema_ is None:
        return Schema.unknown()
    return Schema.of(src.schema_).with_columns([Column(LINEAGE_COLUMN, "bigint")])


def compile_file(path: Path | str) -> Plan:
    """Load and compile one spec file; raises :class:`SpecError` with every problem."""
    return compile_spec(load_spec(path))


def check_file(path: Path | str) -> tuple[Plan | None, list[Problem]]:
    """Like :func:`compile_file` but returns the problems (errors and warnings) instead."""
    loaded = load_spec(path)
    try:
        plan = compile_spec(loaded)
    except SpecError as exc:
        return None, list(exc.problems)
    return plan, [w for w in loaded.problems]


def compile_spec(loaded: LoadedSpec) -> Plan:
    spec, smap = loaded.spec, loaded.smap
    problems: list[Problem] = list(loaded.problems)
    sources = spec.sources
    nodes = {n.id: n for n in spec.nodes}
    known = set(sources) | set(nodes) | set(loaded.broken)

    # ---- sources: keys and cob column exist in the declared schema
    src_schemas: dict[str, Schema] = {}
    for name, src in sources.items():
        schema = source_schema(src)
        src_schemas[name] = schema
        if schema.known:
            for i, key in enumerate(src.primary_key):
                if key not in schema:
                    problems.append(
                        smap.problem(
                            f"primary key column '{key}' is not in the declared schema",
                            ("sources", name, "primary_key", i),
                            hint=_close(key, schema),
                        )
                    )
            if src.cob_column and src.cob_column not in schema:
                problems.append(
                    smap.problem(
                        f"cob_column '{src.cob_column}' is not in the declared schema",
                        ("sources", name, "cob_column"),
                        hint=_close(src.cob_column, schema),
                    )
                )

    # ---- graph: dangling inputs, input counts, cycles
    graph: dict[str, set[str]] = {}
    bad_arity: set[str] = set()  # nodes whose op cannot be checked with these inputs
    for node in spec.nodes:
        op = registry.get(node.op)
        graph[node.id] = set()
        for j, inp in enumerate(node.inputs):
            if inp not in known:
                close = difflib.get_close_matches(inp, sorted(known), n=1)
                problems.append(
                    smap.problem(
                        f"input '{inp}' of node '{node.id}' is neither a source nor a node",
                        loaded.node_path(node.id, "inputs", j),
                        hint=f"did you mean '{close[0]}'?"
                        if close
                        else "declare it under 'sources:' or add a node with that id",
                    )
                )
            elif inp in nodes:
                graph[node.id].add(inp)
                if registry.get(nodes[inp].op).lineage == "sink":
                    problems.append(
                        smap.problem(
                            f"node '{inp}' ({nodes[inp].op}) is a sink: no node can read it",
                            loaded.node_path(node.id, "inputs", j),
                            hint=f"read the inputs of '{inp}' instead",
                        )
                    )
        n_in = len(node.inputs)
        if n_in < op.min_inputs or (op.max_inputs is not None and n_in > op.max_inputs):
            want = (
                str(op.min_inputs)
                if op.max_inputs == op.min_inputs
                else f"{op.min_inputs}..{op.max_inputs or 'n'}"
            )
            problems.append(
                smap.problem(
                    f"op '{node.op}' takes {want} input(s), got {n_in}",
                    loaded.node_path(node.id, "inputs"),
                    hint="list the inputs in order: the main input first",
                )
            )
            bad_arity.add(node.id)
    order, in_cycles = _order(graph, loaded, problems)

    # ---- schemas and column references, in topological order
    schemas: dict[str, Schema] = dict(src_schemas)
    for name in (*loaded.broken, *in_cycles):
        schemas[name] = Schema.unknown()
    for node_id in order:
        node = nodes[node_id]
        op = registry.get(node.op)
        ins = [schemas.get(i, Schema.unknown()) for i in node.inputs]
        if node_id in bad_arity:
            schemas[node_id] = Schema.unknown()
            continue
        if op.check is not None:
            named = op.extra.get("named_inputs")
            checks = (
                op.check(ins, node.params, node.inputs)  # type: ignore[call-arg]
                if named
                else op.check(ins, node.params)
            )
            for chk in checks:
                problems.append(
                    smap.problem(chk.message, loaded.node_path(node_id, *chk.path), hint=chk.hint)
                )
        if op.lineage in ("rowwise", "rollup", "union"):
            for inp, s in zip(node.inputs, ins, strict=True):
                if s.known and LINEAGE_COLUMN not in s:
                    problems.append(
                        smap.problem(
                            f"input '{inp}' has no lineage column",
                            loaded.node_path(node_id, "inputs"),
                            hint=f"the op of '{inp}' must declare an output schema"
                            " with _lineage_id",
                        )
                    )
        try:
            schemas[node_id] = op.infer(ins, node.params)
        except Exception as exc:  # a custom op's schema rule is user code
            problems.append(
                smap.problem(
                    f"op '{node.op}' could not infer its output schema: {exc}",
                    loaded.node_path(node_id, "op"),
                )
            )
            schemas[node_id] = Schema.unknown()

    if any(p.severity == "error" for p in problems):
        raise SpecError(problems)
    return _build_plan(loaded, order, schemas, problems)


def _order(
    graph: dict[str, set[str]], loaded: LoadedSpec, problems: list[Problem]
) -> tuple[list[str], set[str]]:
    """Topological order of the nodes outside cycles, and the nodes in cycles.

    Every cycle is reported, in data-flow order; the rest of the graph is still checked.
    """
    graph = {k: set(v) for k, v in graph.items()}
    rank = {n: k for k, n in enumerate(graph)}
    in_cycles: set[str] = set()
    while True:
        # sorted predecessors: the order (and so the plan's hash) must not depend on set order
        sorter = graphlib.TopologicalSorter(
            {k: sorted(v, key=rank.__getitem__) for k, v in graph.items()}
        )
        try:
            order = list(sorter.static_order())
            return [n for n in order if n not in in_cycles], in_cycles
        except graphlib.CycleError as exc:
            # each node of the list is an input of the next one; first == last
            cycle = list(exc.args[1])
            start = min(range(len(cycle) - 1), key=lambda k: loaded.node_index.get(cycle[k], 0))
            cycle = [*cycle[start:-1], *cycle[:start], cycle[start]]
            problems.append(
                loaded.smap.problem(
                    f"cycle in the node graph: {' -> '.join(cycle)} "
                    "(each node reads the one before)",
                    loaded.node_path(cycle[0], "inputs"),
                    hint="a node cannot depend on its own output; break the loop",
                )
            )
            in_cycles |= set(cycle)
            for n in cycle:
                graph[n] = set()  # cut the loop; downstream nodes see an unknown schema


def _close(name: str, schema: Schema) -> str:
    close = difflib.get_close_matches(name, schema.names, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return "available columns: " + ", ".join(n for n in schema.names if not n.startswith("_"))


def _build_plan(
    loaded: LoadedSpec, order: list[str], schemas: dict[str, Schema], problems: list[Problem]
) -> Plan:
    spec = loaded.spec
    nodes = {n.id: n for n in spec.nodes}
    consumers: dict[str, list[str]] = {n: [] for n in nodes}
    for n in spec.nodes:
        for i in n.inputs:
            if i in consumers:
                consumers[i].append(n.id)

    def boundary(node_id: str) -> str | None:
        n = nodes[node_id]
        if registry.get(n.op).lineage == "aggregate":
            return "aggregate"
        if registry.get(n.op).lineage == "sink":
            return "sink"
        if any(registry.get(nodes[c].op).lineage == "sink" for c in consumers[node_id]):
            return "warehouse"  # a sink (star schema) reads stored outputs only
        if n.checkpoint:
            return "checkpoint"
        if not consumers[node_id]:
            return "sink"
        if len(consumers[node_id]) > 1:
            return "fan-out"
        return None

    # ---- stages: merge each node into the open chain(s) feeding it
    stage_of: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for node_id in order:
        open_inputs = [i for i in nodes[node_id].inputs if i in nodes and boundary(i) is None]
        merged: list[str] = []
        for i in open_inputs:
            merged += members.pop(stage_of[i])
        members[node_id] = [*merged, node_id]
        for m in members[node_id]:
            stage_of[m] = node_id
    # stage ids are their last (boundary) node
    data_hash: dict[str, str] = {}
    plan_sources = []
    for name, src in spec.sources.items():
        h = _hash(
            {
                "format": src.format,
                "path": src.path,
                "pk": src.primary_key,
                "schema": src.schema_,
                "cob": src.cob_column,
                "options": src.options,
                # (only when set: the hashes of sources without it stay as they were)
                **({"allow_empty": True} if src.allow_empty else {}),
            }
        )
        data_hash[name] = h
        plan_sources.append(
            PlanSource(
                name=name,
                format=src.format,
                path=src.path,
                primary_key=src.primary_key,
                schema=schemas[name],
                cob_column=src.cob_column,
                options=dict(src.options),
                description=src.description,
                data_hash=h,
                allow_empty=src.allow_empty,
            )
        )
    plan_nodes = []
    for node_id in order:
        n = nodes[node_id]
        op = registry.get(n.op)
        params = n.params.model_dump(mode="json", exclude_none=False, by_alias=True)
        h = _hash(
            {
                "op": n.op,
                "code": _op_code_hash(op),
                "params": params,
                "inputs": [data_hash.get(i, i) for i in n.inputs],
                "checkpoint": n.checkpoint,
            }
        )
        data_hash[node_id] = h
        plan_nodes.append(
            PlanNode(
                id=node_id,
                op=n.op,
                inputs=n.inputs,
                params=params,
                schema=schemas[node_id],
                lineage=op.lineage,
                stage=stage_of[node_id],
                persisted=boundary(node_id) is not None,
                checkpoint=n.checkpoint,
                description=n.description,
                data_hash=h,
            )
        )
    by_id = {pn.id: pn for pn in plan_nodes}
    stages = []
    for stage_id, ids in members.items():
        ids_sorted = [i for i in order if i in set(ids)]
        reads_sources: list[str] = []
        reads_nodes: list[str] = []
        for i in ids_sorted:
            for inp in nodes[i].inputs:
                if inp in spec.sources and inp not in reads_sources:
                    reads_sources.append(inp)
                elif inp in nodes and stage_of[inp] != stage_id and inp not in reads_nodes:
                    reads_nodes.append(inp)
        checkpoints = [
            by_id[i].lineage_checkpoint for i in ids_sorted if by_id[i].lineage_checkpoint
        ]
        upstream = sorted({stage_of[i] for i in reads_nodes})
        stages.append(
            Stage(
                id=stage_id,
                nodes=tuple(ids_sorted),
                sources=tuple(reads_sources),
                inputs=tuple(reads_nodes),
                outputs=(stage_id,),
                checkpoints=tuple(c for c in checkpoints if c),
                upstream=tuple(upstream),
                boundary=boundary(stage_id) or "sink",
            )
        )
    stage_rank = {nid: k for k, nid in enumerate(order)}
    stages.sort(key=lambda s: stage_rank[s.id])
    meta: dict[str, Any] = {
        "description": spec.description,
        "owner": spec.owner,
        "tags": spec.tags,
        "schedule": spec.schedule,
        "start_date": str(spec.start_date),
        "nodes": {n.id: n.description for n in spec.nodes},
        "sources": {k: v.description for k, v in spec.sources.items()},
    }
    holidays = tuple(d.isoformat() for d in spec.cob.holidays)
    if spec.cob.rule != "run_date":  # (scheduling, not results: the metadata hash)
        meta["cob"] = {"rule": spec.cob.rule, "holidays": holidays}
    return Plan(
        pipeline=spec.pipeline,
        file=str(loaded.path),
        description=spec.description,
        owner=spec.owner,
        tags=tuple(spec.tags),
        schedule=spec.schedule,
        start_date=str(spec.start_date),
        params=_json_params(spec.params),
        sources=tuple(plan_sources),
        nodes=tuple(plan_nodes),
        stages=tuple(stages),
        data_hash=_hash(
            {
                "params": spec.params,
                "nodes": [data_hash[n] for n in order],
                "sources": [s.data_hash for s in plan_sources],
            }
        ),
        metadata_hash=_hash(meta),
        regflow_version=__version__,
        warnings=tuple(p.format() for p in problems if p.severity == "warning"),
        cob_rule=spec.cob.rule,
        cob_holidays=holidays,
    )


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Param defaults as JSON values (YAML reads 2024-01-01 as a date), so plans serialise."""
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in params.items()}


def _op_code_hash(op: Any) -> str:
    """Builtins change with regflow's version; custom ops with their source file."""
    if op.func is None:
        return __version__
    try:
        import inspect

        return hashlib.sha256(inspect.getsource(op.func).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return op.origin
