"""diff: what changed between two runs, or two matrix runs, cell by cell.

Each side is a run directory (results.json), a matrix run directory
(matrix.json; cells are paired by name) or a matrix cell directory (the one
run directory inside it). Per test: a new failure is PASS/SKIP (or absent)
-> FAIL/ERROR/MISS, a fix is the reverse, any other change of status is a
status change.

Metrics and noise (NOISE): a metric change counts only when its absolute
change exceeds the metric's floor AND its factor (the larger value over the
smaller, so doubling and halving weigh the same) exceeds the metric's
factor; a latency (a median over the test's edges) also needs at least
min_n samples on both sides. Measured here (nested TCG, 2 host cores): 30
sequential runs of one configuration moved single-sample latencies by up to
8x but under 1 ms; two matrix runs with two boots at a time moved them to
10-65 ms now and then (one edge, a host scheduling hiccup), and medians over
3-4 edges by up to 6 ms; exits per edge were constant except where the
count follows the guest's timing (mmio_spin 8-71, never_inject 11-23,
masked_progress 13-24). The regressions this harness is after are coarser:
a missing forced exit delays an IRQ to the next natural exit or the guest's
2 s bounded wait (100+ ms), an exit storm multiplies exits per edge by 100.
One finer regression has a rule of its own: a notice that waits for the
host's tick moves a sub-millisecond notice-latency median tenfold (0.38 ms to
4.1 ms on both_timers), which counts when the factor exceeds 9 from a median
under 1 ms and the change exceeds 3 ms (3 samples a side, as above). Healthy
noise comes close: the recorded nightly pair (tests/data/diff-nightly) moved
v5 eintr-only rearm_n's median from 0.26 to 2.31 ms over 5 edges (x8.9,
+2.0 ms), which this rule leaves out.
Smaller changes are shown (text with --all, grey in the HTML) but not
counted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.core import repo, resultsfile
from harness.core.errors import InputError
from harness.core.status import Outcome
from harness.judge.verdict import PASSED, SKIPPED
from harness.outputs import templating
from harness.runs.matrix.outcome import outcome_of

GOOD = (PASSED, SKIPPED)


@dataclass(frozen=True)
class Noise:
    factor: float  # the larger value over the smaller must exceed this
    floor: float  # the absolute change must exceed this, in unit
    unit: str
    min_n: int = 0  # a latency's samples needed on both sides
    # a second way past the noise, for a latency: a change by more than sharp_factor
    # from a median under sharp_below (a notice that now waits for the host's tick:
    # 0.4 ms -> 4 ms), when the absolute change also exceeds sharp_floor
    sharp_factor: float | None = None
    sharp_below: float = 0.0
    sharp_floor: float = 0.0


NOISE = {
    "notice_latency_us": Noise(
        factor=2.0,
        floor=10_000.0,
        unit="µs",
        min_n=3,
        sharp_factor=9.0,
        sharp_below=1_000.0,
        sharp_floor=3_000.0,
    ),
    "irq_latency_us": Noise(factor=2.0, floor=10_000.0, unit="µs", min_n=3),
    "exits_per_edge": Noise(factor=4.0, floor=20.0, unit="exits"),
}


@dataclass
class TestChange:
    __test__ = False  # not a pytest class
    cell: str
    test: str
    a: str | None  # status in run a (None: absent)
    b: str | None
    kind: str  # new-failure, fix, status-change, added, removed, same
    reasons: list[str] = field(default_factory=list)  # run b's (a's for a fix)


@dataclass
class MetricChange:
    cell: str
    test: str
    metric: str
    a: float
    b: float
    beyond_noise: bool
    samples: tuple[int | None, int | None] = (None, None)  # a latency's n on each side

    @property
    def factor(self) -> float:
        low, high = sorted((abs(self.a), abs(self.b)))
        return float("inf") if low == 0 else high / low

    def line(self) -> str:
        unit = NOISE[self.metric].unit
        f = "inf" if self.factor == float("inf") else f"{self.factor:.1f}"
        n = f", n {self.samples[0]}/{self.samples[1]}" if self.samples[0] is not None else ""
        way = "up" if self.b > self.a else "down"
        return f"{self.metric}: {self.a:g} -> {self.b:g} {unit} (x{f} {way}{n})"


@dataclass
class CellDiff:
    name: str
    a_dir: Path | None
    b_dir: Path | None
    a_outcome: str
    b_outcome: str
    tests: list[TestChange] = field(default_factory=list)
    metrics: list[MetricChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # identity and boot changes


@dataclass
class Diff:
    a: Path
    b: Path
    kind: str  # run or matrix
    cells: list[CellDiff]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[TestChange]:
        return [t for c in self.cells for t in c.tests if t.kind == kind]

    @property
    def regressions(self) -> list[TestChange]:
        return self.of_kind("new-failure")

    @property
    def fixes(self) -> list[TestChange]:
        return self.of_kind("fix")

    @property
    def status_changes(self) -> list[TestChange]:
        return self.of_kind("status-change")

    @property
    def metric_changes(self) -> list[MetricChange]:
        return [m for c in self.cells for m in c.metrics if m.beyond_noise]

    @property
    def outcome_changes(self) -> list[CellDiff]:
        return [c for c in self.cells if c.a_outcome != c.b_outcome]


# -- loading -------------------------------------------------------------------


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read: {e}") from None


def _run_file(path: Path) -> Path | None:
    """results.json of a run directory, or of the only run inside a matrix cell directory."""
    if (path / "results.json").is_file():
        return path / "results.json"
    inner = [p for p in path.iterdir() if (p / "results.json").is_file()] if path.is_dir() else []
    return inner[0] / "results.json" if len(inner) == 1 else None


def _outcome(data: dict | None) -> str:
    return Outcome.ERROR if data is None else outcome_of(data["tests"], data.get("boot"))


def load(path: Path) -> tuple[str, dict[str, tuple[Path | None, dict | None]]]:
    """('run', {label: (dir, results)}) or ('matrix', {cell: (dir, results or None)})."""
    if not path.is_dir():
        raise InputError(path, "not a directory (a run or a matrix run under results/)")
    if (path / "matrix.json").is_file():
        m = _read(path / "matrix.json")
        cells: dict[str, tuple[Path | None, dict | None]] = {}
        for c in m["cells"]:
            run_dir = path / c["run_dir"] if c.get("run_dir") else None
            data = _read(run_dir / "results.json") if run_dir else None
            cells[c["name"]] = (run_dir, data)
        return "matrix", cells
    f = _run_file(path)
    if f is None:
        raise InputError(path, "no results.json or matrix.json in it")
    data = _read(f)
    ident = data["identity"]
    label = f"{ident['revision']}-{ident['machine']['name']}-{ident['policy']}"
    return "run", {label: (f.parent, data)}


# -- comparing -----------------------------------------------------------------


def _kind(a: str | None, b: str | None) -> str:
    if a == b:
        return "same"
    if b is None:
        return "removed"
    if b not in GOOD and (a is None or a in GOOD):
        return "new-failure"
    if a is not None and a not in GOOD and b in GOOD:
        return "fix"
    if a is None:
        return "added"
    return "status-change"


def _value(metrics: dict, name: str) -> tuple[float | None, int | None]:
    """A metric's value, and for a latency ({median, max, n}) its number of samples."""
    v, n = metrics.get(name), None
    if isinstance(v, dict):
        v, n = v.get("median"), v.get("n")
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return (float(v) if ok else None), n


def metric_change(
    cell: str, test: str, name: str, a: float, b: float, n: tuple[int | None, int | None]
) -> MetricChange:
    rule = NOISE[name]
    m = MetricChange(cell, test, name, a, b, False, n)
    enough = all((k or 0) >= rule.min_n for k in n) if rule.min_n else True
    coarse = abs(b - a) > rule.floor and m.factor > rule.factor
    sharp = (
        rule.sharp_factor is not None
        and min(a, b) < rule.sharp_below
        and abs(b - a) > rule.sharp_floor
        and m.factor > rule.sharp_factor
    )
    m.beyond_noise = enough and (coarse or sharp)
    return m


def _identity_notes(a: dict, b: dict) -> list[str]:
    notes = []

    def get(d: dict, *keys: str):
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    for what, keys in (
        ("kernel", ("identity", "kernel", "release")),
        ("kernel source", ("identity", "kernel", "source")),
        ("QEMU", ("boot", "qemu_version")),
        ("harness", ("identity", "harness")),
        ("VMM", ("identity", "vmm_sha256")),
        ("boot", ("boot", "status")),
    ):
        va, vb = get(a, *keys), get(b, *keys)
        if va != vb:
            if what == "VMM":  # a sha256: its first 12 digits tell them apart
                va, vb = str(va)[:12], str(vb)[:12]
            notes.append(f"{what}: {va or 'none'} -> {vb or 'none'}")
    pa, pb = a["identity"].get("patches", {}), b["identity"].get("patches", {})
    if pa != pb:
        notes.append(f"patches: {len(pa)} -> {len(pb)} (content changed)")
    ia, ib = get(a, "boot", "init_s"), get(b, "boot", "init_s")
    if isinstance(ia, (int, float)) and isinstance(ib, (int, float)) and abs(ib - ia) > 2.0:
        notes.append(f"boot to /init: {ia:.1f} -> {ib:.1f} s")
    return notes


def compare_cell(
    name: str, a: tuple[Path | None, dict | None], b: tuple[Path | None, dict | None]
) -> CellDiff:
    (a_dir, da), (b_dir, db) = a, b
    cd = CellDiff(name, a_dir, b_dir, _outcome(da), _outcome(db))
    ta = {t["name"]: t for t in (da or {}).get("tests", [])}
    tb = {t["name"]: t for t in (db or {}).get("tests", [])}
    for test in [*ta, *(t for t in tb if t not in ta)]:
        x, y = ta.get(test), tb.get(test)
        sa, sb = (x or {}).get("status"), (y or {}).get("status")
        kind = _kind(sa, sb)
        src = x if kind == "fix" else y
        cd.tests.append(TestChange(name, test, sa, sb, kind, list((src or {}).get("reasons", []))))
        if x and y:
            for metric in NOISE:
                (va, na), (vb, nb) = _value(x["metrics"], metric), _value(y["metrics"], metric)
                if va is not None and vb is not None and va != vb:
                    cd.metrics.append(metric_change(name, test, metric, va, vb, (na, nb)))
    if da and db:
        cd.notes = _identity_notes(da, db)
    elif da is None and db is not None:
        cd.notes = ["run a has no results (the cell failed before its run)"]
    elif db is None and da is not None:
        cd.notes = ["run b has no results (the cell failed before its run)"]
    return cd


def compare(a: Path, b: Path) -> Diff:
    kind_a, cells_a = load(a)
    kind_b, cells_b = load(b)
    if kind_a != kind_b:
        raise InputError(b, f"run b is a {kind_b}, run a a {kind_a}: compare like with like")
    if kind_a == "run":  # one run each: pair them whatever their labels
        ((la, va),) = cells_a.items()
        ((lb, vb),) = cells_b.items()
        name = la if la == lb else f"{la} | {lb}"
        return Diff(a, b, "run", [compare_cell(name, va, vb)])
    names = [*cells_a, *(n for n in cells_b if n not in cells_a)]
    d = Diff(a, b, "matrix", [])
    for n in names:
        if n not in cells_b:
            d.only_a.append(n)
        elif n not in cells_a:
            d.only_b.append(n)
        else:
            d.cells.append(compare_cell(n, cells_a[n], cells_b[n]))
    return d


# -- output --------------------------------------------------------------------


def _first(reasons: list[str]) -> str:
    return f"  ({reasons[0][:160]})" if reasons else ""


def text(d: Diff, show_all: bool = False) -> list[str]:
    """The diff as lines of text, most important first."""
    matrix = d.kind == "matrix"

    def who(t: TestChange | MetricChange) -> str:
        return f"{t.cell}: {t.test}" if matrix else t.test

    out = [
        f"# diff {d.kind}: a = {repo.rel(d.a)}",
        f"#            b = {repo.rel(d.b)}",
        f"# {len(d.regressions)} new failure(s), {len(d.fixes)} fix(es), "
        f"{len(d.status_changes)} other status change(s), "
        f"{len(d.metric_changes)} metric change(s) beyond noise"
        + (f", {len(d.outcome_changes)} cell outcome change(s)" if matrix else ""),
    ]
    for title, items in (
        ("new failures", d.regressions),
        ("fixes", d.fixes),
        ("status changes", d.status_changes),
    ):
        if items:
            out.append(f"{title}:")
            out += [f"  {who(t)}: {t.a or 'absent'} -> {t.b}{_first(t.reasons)}" for t in items]
    added = d.of_kind("added") + d.of_kind("removed")
    if added:
        out.append("tests added or removed:")
        out += [f"  {who(t)}: {t.a or 'absent'} -> {t.b or 'absent'}" for t in added]
    if d.metric_changes:
        out.append("metric changes beyond noise (see harness/runs/diff.py NOISE):")
        out += [f"  {who(m)}: {m.line()}" for m in d.metric_changes]
    if matrix and (d.outcome_changes or show_all):
        out.append("cells:")
        for c in d.cells:
            if c.a_outcome != c.b_outcome or show_all:
                out.append(f"  {c.name}: {c.a_outcome} -> {c.b_outcome}")
    if d.only_a or d.only_b:
        out.append("cells in one run only:")
        out += [f"  {n}: only in a" for n in d.only_a]
        out += [f"  {n}: only in b" for n in d.only_b]
    notes: dict[str, list[str]] = {}  # a note, the cells it holds for
    for c in d.cells:
        for n in c.notes:
            notes.setdefault(n, []).append(c.name)
    if notes:
        out.append("inputs and boot:")
        for n, cells in notes.items():
            if not matrix:
                out.append(f"  {n}")
            elif len(cells) == len(d.cells) > 1:
                out.append(f"  all {len(cells)} cells: {n}")
            else:
                out += [f"  {c}: {n}" for c in cells]
    if show_all:
        same = [m for c in d.cells for m in c.metrics if not m.beyond_noise]
        if same:
            out.append("metric changes within noise:")
            out += [f"  {who(m)}: {m.line()}" for m in same]
    if not (d.regressions or d.fixes or d.status_changes or d.metric_changes or added):
        out.append("no test changed status and no metric changed beyond noise")
    return out


def html(d: Diff, where: Path) -> str:
    """The page, its links to each run's report.html relative to the directory where."""

    def link(p: Path | None) -> str | None:
        return None if p is None else os.path.relpath(p / "report.html", where)

    cells = []
    for c in d.cells:
        rows = []
        metrics = {(m.test, m.metric): m for m in c.metrics}
        for t in c.tests:
            rows.append(
                {
                    "test": t.test,
                    "a": t.a or "absent",
                    "b": t.b or "absent",
                    "kind": t.kind,
                    "reason": t.reasons[0] if t.reasons and t.kind != "same" else "",
                    "metrics": [
                        {
                            "name": name,
                            "text": metrics[(t.test, name)].line().split(": ", 1)[1],
                            "beyond": metrics[(t.test, name)].beyond_noise,
                        }
                        for name in NOISE
                        if (t.test, name) in metrics
                    ],
                }
            )
        cells.append(
            {
                "name": c.name,
                "a_outcome": c.a_outcome,
                "b_outcome": c.b_outcome,
                "a_dir": link(c.a_dir),
                "b_dir": link(c.b_dir),
                "notes": c.notes,
                "rows": rows,
                "changed": any(t.kind != "same" for t in c.tests)
                or any(m.beyond_noise for m in c.metrics)
                or c.a_outcome != c.b_outcome,
            }
        )
    return (
        templating.env()
        .get_template("diff.html.j2")
        .render(
            a=repo.rel(d.a),
            b=repo.rel(d.b),
            kind=d.kind,
            summary=text(d)[2].lstrip("# "),
            regressions=d.regressions,
            fixes=d.fixes,
            status_changes=d.status_changes,
            metric_changes=d.metric_changes,
            only_a=d.only_a,
            only_b=d.only_b,
            cells=cells,
            noise=NOISE,
        )
    )


def write_html(d: Diff, path: Path | None = None) -> Path:
    """The HTML page, by default in run b's directory as diff-<run a>.html."""
    out = path or d.b / f"diff-{d.a.resolve().name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    resultsfile.write_atomic(out, html(d, out.parent))
    return out
