"""Guest test specs: guest_tests/<name>.yaml, validated strictly."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

from harness.core import repo, yamlfile
from harness.core.errors import InputError
from harness.inputs import limits

_T = TypeVar("_T")  # a spec with a timeout_s: a guest test's or a QEMU test's

PROPERTIES = (
    "visible", "truthful", "coalesce", "eintr-suffices", "progress", "wake", "once", "prompt",
    "history", "dedicated-exit",  # v5's user_timer_pending, v4's own exit
)  # fmt: skip
ABIS = ("upstream", "v4", "v5", "v6")
TIMERS = ("vtimer", "ptimer")
EXPECT_KEYS = {"exit_code", "irqs", "edges", "spurious"}
INJECT = ("now", "late", "never")
VMM_KEYS = {
    "inject", "inject_delay_ms", "alarm_us", "save_restore", "downtime_ms",
    "crash_after_exits", "garble_record",
}  # fmt: skip
TAGS = ("fault",)  # fault: a test of the harness itself, run only when named
# a test name is one word of the manifest and a record's test field
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class VmmOptions:
    """How the VMM behaves for one test (the spec's vmm: mapping)."""

    inject: str = "now"  # now, late (after inject_delay_ms) or never
    inject_delay_ms: int = 0
    alarm_us: int = 0  # a SIGALRM to each vCPU thread this often during KVM_RUN
    save_restore: bool = False  # honour the guest's VT_SAVE port
    downtime_ms: int = 0  # between save and restore
    crash_after_exits: int = 0  # fault injection: the VMM crashes at this exit
    garble_record: int = 0  # fault injection: this record is mangled, the next one lost

    def manifest_args(self) -> str:
        """The manifest's key=value words for the options that differ from the default."""
        default = VmmOptions()
        words = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                words.append(f"{f.name}={int(value) if isinstance(value, bool) else value}")
        return " ".join(words)


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
    vmm: VmmOptions = field(default_factory=VmmOptions)
    tags: tuple[str, ...] = ()

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


def _count(path: Path, data: yamlfile.LineDict, key: str, low: int, high: int) -> int:
    value = yamlfile.expect_type(path, data, key, int)
    if not low <= value <= high:
        raise InputError(
            path, f"key '{key}' must be in {low}..{high}, not {value}", line=data.lines.get(key)
        )
    return value


def _vmm(path: Path, data: yamlfile.LineDict) -> VmmOptions:
    yamlfile.check_keys(path, data, set(), VMM_KEYS)
    opts: dict = {}
    if "inject" in data:
        opts["inject"] = yamlfile.expect_choice(path, data, "inject", INJECT)
    if "inject_delay_ms" in data:
        opts["inject_delay_ms"] = _count(
            path, data, "inject_delay_ms", 1, limits.get("VT_INJECT_DELAY_MS_MAX")
        )
    if (opts.get("inject") == "late") != ("inject_delay_ms" in opts):
        key = "inject_delay_ms" if "inject_delay_ms" in data else "inject"
        raise InputError(
            path,
            f"key '{key}': 'inject: late' and 'inject_delay_ms' go together",
            line=data.lines.get(key, data.line),
        )
    if "alarm_us" in data:
        opts["alarm_us"] = _count(path, data, "alarm_us", 100, limits.get("VT_ALARM_US_MAX"))
    if "save_restore" in data:
        opts["save_restore"] = yamlfile.expect_type(path, data, "save_restore", bool)
    for key in ("crash_after_exits", "garble_record"):
        if key in data:
            opts[key] = _count(path, data, key, 1, limits.get("VT_FAULT_COUNT_MAX"))
    if "downtime_ms" in data:
        opts["downtime_ms"] = _count(path, data, "downtime_ms", 0, limits.get("VT_DOWNTIME_MS_MAX"))
        if not opts.get("save_restore"):
            raise InputError(
                path,
                "key 'downtime_ms' needs 'save_restore: true'",
                line=data.lines["downtime_ms"],
            )
    return VmmOptions(**opts)


def _check_name(path: Path, data: yamlfile.LineDict, name: str) -> None:
    most = limits.get("VT_NAME_MAX")
    if len(name) > most or not _NAME.fullmatch(name):
        raise InputError(
            path,
            f"name '{name[:80]}' must be 1..{most} characters of letters, digits, '_', '-', '.'",
            line=data.lines["name"],
        )


def timeout_problem(value: object) -> str | None:
    """Why value is not a test watchdog /init takes (whole ms, VT_TIMEOUT_MS_MAX), or
    None: the one rule for a spec's timeout_s, a matrix cell's and --test-timeout."""
    most = limits.get("VT_TIMEOUT_MS_MAX") / 1000
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number of seconds, not {value!r}"
    if not 0.001 <= value <= most:  # NaN fails the comparison too
        return f"must be in 0.001..{most:g} seconds, not {value}"
    return None


def check_timeout(path: Path, data: yamlfile.LineDict) -> float:
    """data's timeout_s, within what /init's watchdog takes (timeout_problem)."""
    value = yamlfile.expect_type(path, data, "timeout_s", (int, float))
    if (why := timeout_problem(value)) is not None:
        raise InputError(path, f"key 'timeout_s' {why}", line=data.lines.get("timeout_s"))
    return float(value)


def source_beside(path: Path, data: yamlfile.LineDict) -> Path:
    """The spec's source: a .c file directly beside the spec, for the Makefile builds
    only those (GUEST_SRCS is guest_tests/*.c, QEMU_GUEST_SRCS guest_tests/qemu/*.c)."""
    name = yamlfile.expect_type(path, data, "source", str)
    source = path.parent / name

    def bad(problem: str) -> InputError:
        return InputError(path, f"source '{name}' {problem}", line=data.lines["source"])

    def where() -> str:  # only for a message: resolve() is a walk of lstats
        return repo.rel(path.parent)

    if not repo.inside(path.parent, source):
        raise bad(f"lies outside {where()}")
    # a plain file name is beside the spec as it is
    if source.parent != path.parent and source.parent.resolve() != path.parent.resolve():
        raise bad(f"lies in a subdirectory: the Makefile builds only the .c files in {where()}/")
    if source.suffix != ".c":
        raise bad(f"must be a .c file in {where()}/ (the Makefile builds only those)")
    if not source.is_file():
        raise bad("does not exist")
    return source


def load(path: Path) -> GuestTest:
    data = yamlfile.load(path)
    yamlfile.check_keys(
        path,
        data,
        {"name", "description", "source", "properties", "abis", "expect"},
        {"timeout_s", "vcpus", "vmm", "tags"},
    )
    name = yamlfile.expect_type(path, data, "name", str)
    if name != path.stem:
        raise InputError(path, f"name '{name}' must match the file name", line=data.lines["name"])
    _check_name(path, data, name)
    source = source_beside(path, data)
    expect = data["expect"]
    if not isinstance(expect, yamlfile.LineDict):
        raise InputError(path, "key 'expect' must be a mapping", line=data.lines["expect"])
    if "timeout_s" in data:
        check_timeout(path, data)
    if "vcpus" in data:
        _count(path, data, "vcpus", 1, limits.get("VT_MAX_VCPUS"))
    vmm = VmmOptions()
    if "vmm" in data:
        if not isinstance(data["vmm"], yamlfile.LineDict):
            raise InputError(path, "key 'vmm' must be a mapping", line=data.lines["vmm"])
        vmm = _vmm(path, data["vmm"])
    return GuestTest(
        name=name,
        description=" ".join(yamlfile.expect_type(path, data, "description", str).split()),
        source=source,
        properties=_names(path, data, "properties", PROPERTIES),
        abis=_names(path, data, "abis", ABIS),
        timeout_s=float(data.get("timeout_s", 20)),
        vcpus=data.get("vcpus", 1),
        expect=_expect(path, expect),
        spec_path=path,
        vmm=vmm,
        tags=_names(path, data, "tags", TAGS) if "tags" in data else (),
    )


def load_all(directory: Path = repo.GUEST_TESTS) -> dict[str, GuestTest]:
    return {p.stem: load(p) for p in sorted(directory.glob("*.yaml"))}


def with_timeout(specs: list[_T], timeout_s: float | None) -> list[_T]:
    """specs, each with timeout_s as its watchdog (a matrix cell's timeout_s, boot-test's
    --test-timeout); unchanged when it is None."""
    if timeout_s is None:
        return list(specs)
    return [dataclasses.replace(s, timeout_s=timeout_s) for s in specs]


def select(tests: dict[str, GuestTest], names: list[str] | None) -> list[GuestTest]:
    """The named tests (all but the fault tests when names is empty); unknown names list
    the valid ones."""
    if not names:
        return [t for t in tests.values() if "fault" not in t.tags]
    unknown = [n for n in names if n not in tests]
    if unknown:
        raise InputError(None, f"unknown test '{unknown[0]}' (valid: {', '.join(sorted(tests))})")
    return [tests[n] for n in names]
