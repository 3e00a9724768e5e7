"""Guest test specs: guest_tests/<name>.yaml, validated strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness import repo, yamlfile
from harness.errors import InputError

PROPERTIES = ("visible", "truthful", "coalesce", "eintr-suffices", "progress", "wake", "once")
ABIS = ("upstream", "v4", "v5", "v6")
TIMERS = ("vtimer", "ptimer")
EXPECT_KEYS = {"exit_code", "irqs", "edges", "spurious"}


@dataclass(frozen=True)
class Expect:
    """What a passing run of the test shows, counted from the records."""

    exit_code: int = 0
    irqs: int | None = None
    edges: dict[str, int] = field(default_factory=dict)
    spurious: int = 0


@dataclass(frozen=True)
class GuestTest:
    name: str
    description: str
    source: Path
    properties: tuple[str, ...]
    abis: tuple[str, ...]
    timeout_s: float
    vcpus: int
    expect: Expect
    spec_path: Path

    @property
    def image(self) -> Path:
        return repo.GUEST_BINS / f"{self.source.stem}.bin"


def _names(path: Path, data: yamlfile.LineDict, key: str, allowed: tuple[str, ...]) -> tuple:
    values = yamlfile.expect_type(path, data, key, list)
    for v in values:
        if v not in allowed:
            raise InputError(
                path,
                f"key '{key}': unknown value '{v}' (allowed: {', '.join(allowed)})",
                line=data.lines.get(key),
            )
    return tuple(values)


def _expect(path: Path, data: yamlfile.LineDict) -> Expect:
    yamlfile.check_keys(path, data, set(), EXPECT_KEYS)
    edges = data.get("edges", {})
    if not isinstance(edges, dict):
        raise InputError(path, "key 'edges' must be a mapping", line=data.lines.get("edges"))
    for timer, count in edges.items():
        if timer not in TIMERS or not isinstance(count, int) or isinstance(count, bool):
            raise InputError(
                path,
                f"expect.edges: '{timer}: {count}' must be one of {TIMERS} with an integer",
                line=data.lines.get("edges"),
            )
    for key in ("exit_code", "irqs", "spurious"):
        if key in data:
            yamlfile.expect_type(path, data, key, int)
    return Expect(
        exit_code=data.get("exit_code", 0),
        irqs=data.get("irqs"),
        edges=dict(edges),
        spurious=data.get("spurious", 0),
    )


def load(path: Path) -> GuestTest:
    data = yamlfile.load(path)
    yamlfile.check_keys(
        path,
        data,
        {"name", "description", "source", "properties", "abis", "expect"},
        {"timeout_s", "vcpus"},
    )
    name = yamlfile.expect_type(path, data, "name", str)
    if name != path.stem:
        raise InputError(path, f"name '{name}' must match the file name", line=data.lines["name"])
    source = path.parent / yamlfile.expect_type(path, data, "source", str)
    if not repo.inside(path.parent, source):
        raise InputError(
            path,
            f"source '{data['source']}' lies outside {repo.rel(path.parent)}",
            line=data.lines["source"],
        )
    if not source.is_file():
        raise InputError(
            path, f"source '{data['source']}' does not exist", line=data.lines["source"]
        )
    expect = data["expect"]
    if not isinstance(expect, yamlfile.LineDict):
        raise InputError(path, "key 'expect' must be a mapping", line=data.lines["expect"])
    if "timeout_s" in data:
        yamlfile.expect_type(path, data, "timeout_s", (int, float))
    if "vcpus" in data:
        yamlfile.expect_type(path, data, "vcpus", int)
    return GuestTest(
        name=name,
        description=" ".join(str(data["description"]).split()),
        source=source,
        properties=_names(path, data, "properties", PROPERTIES),
        abis=_names(path, data, "abis", ABIS),
        timeout_s=float(data.get("timeout_s", 20)),
        vcpus=data.get("vcpus", 1),
        expect=_expect(path, expect),
        spec_path=path,
    )


def load_all(directory: Path = repo.GUEST_TESTS) -> dict[str, GuestTest]:
    return {p.stem: load(p) for p in sorted(directory.glob("*.yaml"))}


def select(tests: dict[str, GuestTest], names: list[str] | None) -> list[GuestTest]:
    """The named tests (all when names is empty); unknown names list the valid ones."""
    if not names:
        return list(tests.values())
    unknown = [n for n in names if n not in tests]
    if unknown:
        raise InputError(None, f"unknown test '{unknown[0]}' (valid: {', '.join(sorted(tests))})")
    return [tests[n] for n in names]
