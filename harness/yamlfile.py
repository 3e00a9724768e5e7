"""Strict YAML loading: every mapping remembers the line of each key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError


class LineDict(dict):
    """A dict that knows the 1-based line of each of its keys and of itself."""

    lines: dict[str, int]
    line: int


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
        out = LineDict()
        out.lines = {}
        out.line = node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in out:
                raise InputError(
                    self.name, f"duplicate key '{key}'", line=key_node.start_mark.line + 1
                )
            out[key] = self.construct_object(value_node, deep=deep)
            out.lines[str(key)] = key_node.start_mark.line + 1
        return out


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    lambda loader, node: loader.construct_mapping(node, deep=True),
)


def load(path: Path) -> LineDict:
    """Load a YAML file whose top level is a mapping; errors name file and line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror}") from None
    try:
        loader = _Loader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise InputError(path, f"invalid YAML: {e.problem}", line=line) from None
    if not isinstance(data, LineDict):
        raise InputError(path, "top level must be a mapping")
    return data


def check_keys(
    path: Path, data: LineDict, required: set[str], optional: set[str] = frozenset()
) -> None:
    """Reject unknown keys and missing required keys, naming the line."""
    for key in data:
        if key not in required and key not in optional:
            allowed = ", ".join(sorted(required | set(optional)))
            raise InputError(
                path, f"unknown key '{key}' (allowed: {allowed})", line=data.lines.get(str(key))
            )
    for key in sorted(required):
        if key not in data:
            raise InputError(path, f"missing key '{key}'", line=getattr(data, "line", None))


def expect_type(path: Path, data: LineDict, key: str, kind: type | tuple[type, ...]) -> Any:
    """Return data[key] if it has the given type, else a one-line error."""
    value = data[key]
    if isinstance(kind, tuple):
        names = " or ".join(k.__name__ for k in kind)
    else:
        names = kind.__name__
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise InputError(
            path, f"key '{key}' must be {names}, not {value!r}", line=data.lines.get(key)
        )
    return value


def expect_choice(path: Path, data: LineDict, key: str, choices: tuple[str, ...]) -> str:
    """Return data[key] if it is one of choices, else a one-line error listing them."""
    value = data[key]
    if value not in choices:
        raise InputError(
            path,
            f"key '{key}': unknown value '{value}' (allowed: {', '.join(choices)})",
            line=data.lines.get(key),
        )
    return value
