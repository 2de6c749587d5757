"""YAML loading that remembers where every value came from.

``load_yaml`` returns plain Python data plus a :class:`SourceMap` from key paths
(``("nodes", 3, "inputs", 0)``) to 1-based ``(line, col)``, so that validation errors can
point at ``file.yaml:line:col`` and show the offending line with a caret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regflow.errors import Location, Problem

try:  # the C loader is several times faster; fall back to pure Python
    _Base: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover
    _Base = yaml.SafeLoader


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """YAML 1.2 booleans: only true/false. YAML 1.1 reads ``on:`` (a join key!) as True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    """A date-like scalar that is no date (``2026-02-30``) stays text: the model that reads
    it then reports it at its place, instead of the YAML reader crashing."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)

KeyPath = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Positions of values (and mapping keys) in one YAML text."""

    file: str
    text: str
    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: KeyPath, *, key: bool = False) -> tuple[int, int] | None:
        """Position of ``path``; falls back to the nearest enclosing value that is known."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        p = tuple(path)
        while p:
            if p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))

    def location(self, path: KeyPath, *, key: bool = False) -> Location:
        pos = self.position(path, key=key)
        if pos is None:
            return Location(self.file)
        return Location(self.file, pos[0], pos[1])

    def context(self, path: KeyPath, *, key: bool = False) -> str:
        """The offending line with a caret under the value."""
        pos = self.position(path, key=key)
        if pos is None:
            return ""
        line_no, col = pos
        lines = self.text.splitlines()
        if not 1 <= line_no <= len(lines):
            return ""
        line = lines[line_no - 1]
        gutter = f"{line_no:>4} | "
        return f"{gutter}{line}\n{' ' * (len(gutter) + col - 1)}^"

    def problem(
        self,
        message: str,
        path: KeyPath,
        *,
        hint: str = "",
        key: bool = False,
        severity: str = "error",
        at: KeyPath | None = None,
    ) -> Problem:
        """A problem about ``path``, located at ``at`` (default: ``path`` itself)."""
        where = path if at is None else at
        return Problem(
            message=message,
            location=self.location(where, key=key),
            key_path=format_path(path),
            context=self.context(where, key=key),
            hint=hint,
            severity=severity,
        )


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class YamlSyntaxError(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(problem.format())


def load_yaml(
    text: str, file: str, *, problems: list[Problem] | None = None
) -> tuple[Any, SourceMap]:
    """Parse ``text`` into Python data and a :class:`SourceMap`.

    Duplicate mapping keys are an error (PyYAML silently keeps the last one). With
    ``problems`` given, they are appended there (the first entry is kept) and loading goes
    on, so that the other problems of the file are reported too; otherwise the first one
    raises :class:`YamlSyntaxError`.
    """
    smap = SourceMap(file=file, text=text)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, smap
        data = _build(node, (), smap, loader, problems)
    except yaml.MarkedYAMLError as exc:
        n_lines = len(text.splitlines())
        mark = exc.problem_mark
        if mark is None or (mark.line >= n_lines and exc.context_mark is not None):
            # "unexpected end of stream": the line that opened the construct is more useful
            mark = exc.context_mark or mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        smap.values[("<syntax>",)] = (line or 1, col or 1)
        message = f"invalid YAML: {exc.problem or exc}"
        cm = exc.context_mark
        if exc.context and cm is not None and (cm.line + 1, cm.column + 1) != (line, col):
            message += f" ({exc.context} at {cm.line + 1}:{cm.column + 1})"
        raise YamlSyntaxError(
            Problem(
                message=message,
                location=Location(file, line, col),
                context=smap.context(("<syntax>",)),
                hint="check indentation and quoting near this line",
            )
        ) from None
    finally:
        loader.dispose()
    return data, smap


def _build(
    node: yaml.Node,
    path: KeyPath,
    smap: SourceMap,
    loader: yaml.SafeLoader,
    problems: list[Problem] | None = None,
) -> Any:
    smap.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                key = str(key)
            child = (*path, key)
            here = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                first = smap.keys[child]
                # point at the second entry; the first keeps its recorded position
                dup = SourceMap(file=smap.file, text=smap.text, keys={child: here})
                problem = dup.problem(
                    f"duplicate key '{key}' (first at line {first[0]})",
                    child,
                    key=True,
                    hint="remove or rename one of the two entries",
                )
                if problems is None:
                    raise YamlSyntaxError(problem)
                problems.append(problem)
                continue
            smap.keys[child] = here
            out[key] = _build(value_node, child, smap, loader, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), smap, loader, problems) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def read_yaml_file(path: Path) -> tuple[Any, SourceMap]:
    return load_yaml(path.read_text(encoding="utf-8"), str(path))
