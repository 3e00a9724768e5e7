"""PyYAML's loaders with this project's rules (harness/core/yamlfile.py): tags, merge
keys, keys that are not plain values, duplicate keys and numbers out of range are
one InputError naming the line. Imported only to parse a file that is not in the
parse cache (yamlfile.load): importing PyYAML is a tenth of the harness's start.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
import yaml.cyaml

from harness.core.errors import InputError
from harness.core.yamlfile import INT_RANGE, LineDict, _kind

# a YAML 1.1 key '<<' merges another mapping in; not supported here
MERGE_TAG = "tag:yaml.org,2002:merge"
YAML_TAG_PREFIX = "tag:yaml.org,2002:"


def _line(node: yaml.Node | yaml.Event) -> int:
    return node.start_mark.line + 1


class _Rules:
    """What this project allows of YAML, on top of a loader's composer and constructor."""

    name: str

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = tag.replace(YAML_TAG_PREFIX, "!!", 1)
            raise InputError(self.name, f"YAML tags ('{shown}') are not allowed", line=_line(event))
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> LineDict:
        if not isinstance(node, yaml.MappingNode):
            raise InputError(self.name, "expected a mapping", line=_line(node))
        out = LineDict()
        out.lines = {}
        out.line = _line(node)
        for key_node, value_node in node.value:
            line = _line(key_node)
            if key_node.tag == MERGE_TAG:
                raise InputError(self.name, "merge keys ('<<') are not supported", line=line)
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise InputError(
                    self.name, f"a key must be a plain value, not {_kind(key)}", line=line
                ) from None
            if key in out:
                raise InputError(self.name, f"duplicate key '{key}'", line=line)
            out[key] = self.construct_object(value_node, deep=deep)
            out.lines[str(key)] = line
        return out

    def _number(self, node: yaml.ScalarNode, kind: type) -> Any:
        construct = super().construct_yaml_int if kind is int else super().construct_yaml_float
        try:
            return construct(node)
        except ValueError:  # e.g. 0b_ (the resolver takes it for an int)
            raise InputError(
                self.name, f"'{node.value}' is not a valid number", line=_line(node)
            ) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = self._number(node, int)
        low, high = INT_RANGE
        if not low <= value <= high:
            raise InputError(self.name, f"integer {node.value} is out of range", line=_line(node))
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = self._number(node, float)
        if not math.isfinite(value):
            raise InputError(self.name, f"number {node.value} is not finite", line=_line(node))
        return value


class _Loader(_Rules, yaml.SafeLoader):
    """The rules on PyYAML's own reader, scanner and parser (its error messages)."""


class _FastLoader(
    _Rules,
    yaml.composer.Composer,  # before CParser: its Python composing calls our compose_node
    yaml.cyaml.CParser,  # libyaml's scanner and parser: the events, with their marks
    yaml.constructor.SafeConstructor,
    yaml.resolver.Resolver,
):
    """The same rules on libyaml's parser: the suite's files load five times faster.
    A file it rejects is loaded again by _Loader, whose messages are the ones users see."""

    def __init__(self, stream: str) -> None:
        yaml.cyaml.CParser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


for _cls in (_Loader, _FastLoader):
    _cls.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
        lambda loader, node: loader.construct_mapping(node, deep=True),
    )
    _cls.add_constructor("tag:yaml.org,2002:int", _cls.construct_yaml_int)
    _cls.add_constructor("tag:yaml.org,2002:float", _cls.construct_yaml_float)
    # a bare '=' (YAML 1.1's value key) is just the string "=", a date (2020-13-45 is
    # one to YAML 1.1) is its text: no config holds dates
    _cls.add_constructor("tag:yaml.org,2002:value", _cls.construct_yaml_str)
    _cls.add_constructor("tag:yaml.org,2002:timestamp", _cls.construct_yaml_str)


def parse(path: Path, text: str) -> Any:
    if not yaml.reader.Reader.NON_PRINTABLE.search(text):
        fast = _FastLoader(text)
        fast.name = str(path)
        try:
            return fast.get_single_data()
        except (yaml.YAMLError, RecursionError):
            pass  # said below, in PyYAML's words
        finally:
            fast.dispose()
    return _parse_slowly(path, text)


def _parse_slowly(path: Path, text: str) -> Any:
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise InputError(
            path, f"unprintable character U+{e.character:04X} is not allowed", line=line
        ) from None
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise InputError(path, f"invalid YAML: {e.problem or e.context}", line=line) from None
    except RecursionError:
        raise InputError(path, "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
