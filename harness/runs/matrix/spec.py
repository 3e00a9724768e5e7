"""The matrix file format: its cells, loaded and validated, and their names.

A cell's keys: revision, source, machine, policy (each a value or a list),
tests (a list of guest tests; default the whole suite), expect (pass, fail or
error; default pass), expect_reason (a text the cell's reasons must contain),
timeout_s (every test's watchdog in the cell instead of the test's own timeout_s,
within what a guest spec's timeout_s may be), name (only for a cell that does
not expand). Kernel sources: a Debian
linux-source-X package (built with the revision's series, see
harness/build/kernel.py), a prebuilt linux-image-X-arm64 package
(harness/build/debkernel.py; revision upstream only), or tree:PATH, a local
kernel tree built out of tree (harness/build/tree.py; PATH relative to the
matrix file, ~ expanded): there the revision only names the profile that judges
it, its series is not applied.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from harness.build import debkernel, kernel
from harness.core import yamlfile
from harness.core.errors import InputError
from harness.core.status import Outcome
from harness.inputs import guest_spec, revision
from harness.inputs import machine as machmod
from harness.inputs.options import POLICIES, TREE_PREFIX, tree_source

EXPECTS = (Outcome.PASS, Outcome.FAIL, Outcome.ERROR)
AXES = ("revision", "source", "machine", "policy")
CELL_KEYS = {*AXES, "tests", "expect", "expect_reason", "timeout_s", "name"}
DEFAULT_KEYS = {"source", "machine", "policy", "tests"}


@dataclass(frozen=True)
class Cell:
    name: str
    revision: str
    source: str
    machine: str  # a name under qemu_configs/ or a path to a machine file
    policy: str
    tests: tuple[str, ...] = ()
    expect: Outcome = Outcome.PASS
    expect_reason: str | None = None
    line: int | None = None  # in the matrix file
    timeout_s: float | None = None  # every test's watchdog (None: each test's own)

    @property
    def prebuilt(self) -> bool:
        return debkernel.is_package(self.source)

    @property
    def tree(self) -> Path | None:
        return tree_source(self.source)

    def kernel_key(self) -> tuple[str, ...]:
        """Cells with the same key boot the same kernel (prepared once)."""
        if self.prebuilt:
            return ("prebuilt", self.source)
        fragments = machmod.load(self.machine).kernel_fragments
        return ("build", self.source, self.revision, *map(str, fragments))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "revision": self.revision,
            "source": self.source,
            "machine": self.machine,
            "policy": self.policy,
            "tests": list(self.tests),
            "expect": self.expect,
            "expect_reason": self.expect_reason,
            "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True)
class Matrix:
    name: str
    description: str
    path: Path
    cells: tuple[Cell, ...]
    repeat: int = 1  # runs of each cell (repeated())

    def repeated(self, n: int) -> Matrix:
        """Each cell n times, named <cell>#<k>: round k runs every cell once, so a
        cell's runs have different neighbours. Kernels are prepared once."""
        if n <= 1:
            return self
        cells = tuple(replace(c, name=f"{c.name}#{k}") for k in range(1, n + 1) for c in self.cells)
        return replace(self, cells=cells, repeat=n)

    def select(self, names: list[str]) -> Matrix:
        """Only the named cells (in file order); an unknown name lists the valid ones."""
        if not names:
            return self
        known = {c.name for c in self.cells}
        for n in names:
            if n not in known:
                raise InputError(
                    self.path, f"no cell '{n}' (cells: {', '.join(c.name for c in self.cells)})"
                )
        return replace(self, cells=tuple(c for c in self.cells if c.name in names))


def short_source(source: str) -> str:
    """linux-source-6.12 -> 6.12; linux-image-6.1.0-56-arm64 -> deb6.1.0-56."""
    if m := debkernel.PACKAGE.match(source):
        return f"deb{m[1]}"
    if (t := tree_source(source)) is not None:
        return f"tree-{t.name}"
    return source.removeprefix("linux-source-")


def _machine_name(value: str) -> str:
    return Path(value).stem if value.endswith(".yaml") else value


def cell_name(rev: str, source: str, machine: str, policy: str) -> str:
    return f"{rev}-{short_source(source)}-{_machine_name(machine)}-{policy}"


# -- loading -------------------------------------------------------------------


def load(path: Path) -> Matrix:
    """Load and validate a matrix file; every error is one line naming file, line and key."""
    data = yamlfile.load(path)
    _check_top(path, data)
    known_tests = guest_spec.load_all()
    defaults = _defaults(path, data, known_tests)
    cells = _cells(path, data, defaults, known_tests)
    return Matrix(data["name"], data.get("description", ""), path, cells)


def _check_top(path: Path, data: yamlfile.LineDict) -> None:
    yamlfile.check_keys(path, data, {"name", "cells"}, {"description", "defaults"})
    yamlfile.expect_name(path, data, "name")  # results/<time>-matrix-<name>-<id>/
    if "description" in data:
        yamlfile.expect_type(path, data, "description", str)


def _defaults(path: Path, data: yamlfile.LineDict, known_tests: dict) -> dict:
    """The file's defaults over the harness's: every axis and tests."""
    defaults: dict = {"source": kernel.DEFAULT_SOURCE, "machine": "virt-gicv3"}
    defaults |= {"policy": "every-exit", "tests": ()}
    if "defaults" not in data:
        return defaults
    d = data["defaults"]
    if not isinstance(d, yamlfile.LineDict):
        raise InputError(path, "key 'defaults' must be a mapping", line=data.lines["defaults"])
    yamlfile.check_keys(path, d, set(), DEFAULT_KEYS)
    for key in d:
        if key == "tests":
            defaults["tests"] = _tests(path, d, known_tests)
        else:
            yamlfile.expect_type(path, d, key, str)
            defaults[key] = _check_axis(path, key, d[key], d.lines.get(key), path.parent)
    return defaults


def _cells(path: Path, data: yamlfile.LineDict, defaults: dict, known_tests: dict) -> tuple:
    """Every cell of the file, expanded, in file order; no name twice."""
    cells_data = data["cells"]
    if not isinstance(cells_data, list) or not cells_data:
        raise InputError(path, "key 'cells' must be a non-empty list", line=data.lines["cells"])
    cells: list[Cell] = []
    seen: dict[str, int | None] = {}
    for item in cells_data:
        if not isinstance(item, yamlfile.LineDict):
            raise InputError(path, "each cell must be a mapping", line=data.lines["cells"])
        for cell in _item_cells(path, item, defaults, known_tests):
            if cell.name in seen:
                raise InputError(
                    path,
                    f"duplicate cell '{cell.name}' (first at line {seen[cell.name]})",
                    line=item.line,
                )
            seen[cell.name] = item.line
            cells.append(cell)
    return tuple(cells)


def _item_cells(
    path: Path, item: yamlfile.LineDict, defaults: dict, known_tests: dict
) -> Iterator[Cell]:
    """The cells one item of 'cells' expands to, each checked just before it is yielded."""
    yamlfile.check_keys(path, item, {"revision"}, CELL_KEYS - {"revision"})
    axes = _axes(path, item, defaults)
    tests = _tests(path, item, known_tests) if "tests" in item else defaults["tests"]
    expect, reason = _expectation(path, item)
    timeout = guest_spec.check_timeout(path, item) if "timeout_s" in item else None
    combos = list(itertools.product(*(axes[k] for k in AXES)))
    if "name" in item:
        _check_name(path, item, len(combos))
    for rev, source, mach, policy in combos:
        _check_combination(path, item, rev, source, mach)
        name = item["name"] if "name" in item else cell_name(rev, source, mach, policy)
        yield Cell(name, rev, source, mach, policy, tests, expect, reason, item.line, timeout)


def _axes(path: Path, item: yamlfile.LineDict, defaults: dict) -> dict[str, list[str]]:
    """Each axis's checked values in one item (the default's when the item has none)."""
    axes: dict[str, list[str]] = {}
    for key in AXES:
        if key in item:
            vals = _values(path, item, key)
            line = item.lines.get(key)
            axes[key] = [_check_axis(path, key, v, line, path.parent) for v in vals]
        else:
            axes[key] = [defaults[key]]
    return axes


def _expectation(path: Path, item: yamlfile.LineDict) -> tuple[Outcome, str | None]:
    """An item's expect (default pass) and expect_reason (only with fail or error)."""
    expect = Outcome.PASS
    if "expect" in item:
        expect = Outcome(yamlfile.expect_choice(path, item, "expect", EXPECTS))
    reason = None
    if "expect_reason" in item:
        reason = yamlfile.expect_type(path, item, "expect_reason", str)
        if expect == Outcome.PASS:
            raise InputError(
                path,
                "key 'expect_reason' needs expect: fail or error",
                line=item.lines["expect_reason"],
            )
    return expect, reason


def _check_name(path: Path, item: yamlfile.LineDict, n_cells: int) -> None:
    # <matrix dir>/<name>/; '#' separates the round of a repeated cell
    yamlfile.expect_name(path, item, "name", forbidden="/#")
    if n_cells > 1:
        raise InputError(
            path,
            f"key 'name': the cell expands to {n_cells} cells, a name fits only one",
            line=item.lines["name"],
        )


def _check_combination(
    path: Path, item: yamlfile.LineDict, rev: str, source: str, mach: str
) -> None:
    """A revision, source and machine that can boot together."""
    if debkernel.is_package(source) and rev != "upstream":
        raise InputError(
            path,
            f"key 'source': the prebuilt kernel {source} carries no patches: "
            f"only revision upstream runs on it, not {rev}",
            line=item.lines.get("source", item.line),
        )
    if not debkernel.is_package(source) and not machmod.load(mach).kernel_fragments:
        raise InputError(
            path,
            f"key 'machine': {_machine_name(mach)} has no kernel fragments "
            f"(it is for prebuilt kernels), so {source} cannot be built for it",
            line=item.lines.get("machine", item.line),
        )


def _values(path: Path, data: yamlfile.LineDict, key: str) -> list[str]:
    """A key's value as a list of strings (a scalar is a list of one)."""
    value = data[key]
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise InputError(
            path,
            f"key '{key}' must be a name or a non-empty list of names, not {value!r}",
            line=data.lines.get(key),
        )
    return items


def _tests(path: Path, data: yamlfile.LineDict, known: dict) -> tuple[str, ...]:
    value = data["tests"]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(path, "key 'tests' must be a list of test names", line=data.lines["tests"])
    for t in value:
        if t not in known:
            raise InputError(
                path,
                f"key 'tests': unknown test '{t}' (valid: {', '.join(sorted(known))})",
                line=data.lines["tests"],
            )
    return tuple(value)


def _check_axis(path: Path, key: str, value: str, line: int | None, base: Path) -> str:
    """A valid value of one axis (machine paths resolved against the matrix file)."""

    def bad(msg: str) -> InputError:
        return InputError(path, f"key '{key}': {msg}", line=line)

    if key == "revision":
        if value not in revision.available():
            valid = ", ".join(revision.available())
            raise bad(f"unknown revision '{value}' (valid: {valid})")
    elif key == "policy":
        if value not in POLICIES:
            raise bad(f"unknown policy '{value}' (valid: {', '.join(POLICIES)})")
    elif key == "source":
        if (t := tree_source(value)) is not None:
            t = t if t.is_absolute() else base / t
            if not (t / "Makefile").is_file():
                raise bad(f"'{value}': not a kernel source tree (no {t}/Makefile)")
            value = TREE_PREFIX + str(t.resolve())
        elif value not in kernel.SOURCES and not debkernel.is_package(value):
            raise bad(
                f"unknown kernel source '{value}' (valid: {', '.join(kernel.SOURCES)}, "
                "a prebuilt linux-image-X.Y.Z-N-arm64, or tree:PATH)"
            )
    elif key == "machine":
        if value.endswith(".yaml"):
            p = Path(value) if Path(value).is_absolute() else base / value
            if not p.is_file():
                raise bad(f"machine file '{value}' not found")
            value = str(p)
        elif value not in machmod.available():
            raise bad(f"unknown machine '{value}' (valid: {', '.join(machmod.available())})")
        try:
            machmod.load(value)
        except InputError as e:
            raise bad(f"machine '{value}' is invalid: {e}") from None
    return value
