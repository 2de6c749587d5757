"""The JSON Schema of a pipeline spec, for editors (``regflow schema``)."""

from __future__ import annotations

from typing import Any

from regflow.ops import registry
from regflow.spec.models import NODE_COMMON_KEYS, NodeSpec, PipelineHeader, SourceSpec


def _inline(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    defs.update(schema.pop("$defs", {}))
    return schema


def spec_json_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    header = _inline(PipelineHeader.model_json_schema(), defs)
    source = _inline(SourceSpec.model_json_schema(by_alias=True), defs)
    common = _inline(NodeSpec.model_json_schema(), defs)
    common_props = {k: v for k, v in common["properties"].items() if k in NODE_COMMON_KEYS}
    variants = []
    for name in registry.names():
        op = registry.get(name)
        params = _inline(op.params.model_json_schema(), defs)
        props = {**common_props, **params.get("properties", {}), "op": {"const": name}}
        variants.append(
            {
                "title": f"{name} node",
                "description": op.doc,
                "type": "object",
                "properties": props,
                "required": sorted({"id", "op", "inputs", *params.get("required", [])}),
                "additionalProperties": False,
            }
        )
    header["properties"]["sources"] = {
        "type": "object",
        "additionalProperties": source,
        "minProperties": 1,
    }
    header["properties"]["nodes"] = {"type": "array", "minItems": 1, "items": {"oneOf": variants}}
    header["required"] = sorted({*header.get("required", []), "sources", "nodes"})
    header["additionalProperties"] = False
    header["title"] = "regflow pipeline spec"
    header["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    header["$defs"] = defs
    return header
