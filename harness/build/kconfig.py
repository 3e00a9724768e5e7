"""Kconfig fragments: merge them, and check that every option stuck."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


@dataclass(frozen=True)
class Option:
    name: str
    value: str  # "n" for "is not set"

    def line(self) -> str:
        return f"# {self.name} is not set" if self.value == "n" else f"{self.name}={self.value}"


def parse(text: str) -> dict[str, Option]:
    out: dict[str, Option] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            out[m[1]] = Option(m[1], m[2])
        elif m := _UNSET.match(line):
            out[m[1]] = Option(m[1], "n")
    return out


def merge(fragments: list[Path]) -> str:
    """One fragment text from several; later fragments win."""
    merged: dict[str, Option] = {}
    for frag in fragments:
        merged.update(parse(frag.read_text()))
    return "".join(o.line() + "\n" for o in merged.values())


def missing(wanted: str, dot_config: str) -> list[str]:
    """The wanted options that the final .config does not have as asked."""
    have = parse(dot_config)
    bad = []
    for opt in parse(wanted).values():
        got = have.get(opt.name)
        actual = got.value if got else "n"
        if actual != opt.value:
            bad.append(f"{opt.name}={opt.value} (got {actual})")
    return bad
