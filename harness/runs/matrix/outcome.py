"""A matrix cell's outcome, from its run's results.json, and how the cells are shown.

A cell's outcome is error if any test ended ERROR (a patch that does not
apply, a kernel that did not build, a harness failure) or QEMU itself died,
else fail if any test ended FAIL or MISS (a panic, a hang), else pass. The
matrix passes when every cell's outcome is the one it expects.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.status import BootStatus, Outcome
from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED, SKIPPED

if TYPE_CHECKING:
    from harness.runs.matrix.spec import Cell

STATUSES = (PASSED, FAILED, ERROR, SKIPPED, MISSED)
HEADER = ("cell", "outcome", "expect", "ok", "pass", "fail", "error", "skip", "miss", "s", "kernel")


def outcome_of(results: list[dict], boot: dict | None = None) -> Outcome:
    """error if any test ERRORed or QEMU itself died, else fail if any test FAILed or
    was MISSed, else pass."""
    statuses = {r["status"] for r in results}
    if ERROR in statuses or not results or (boot or {}).get("status") == BootStatus.QEMU_DIED:
        return Outcome.ERROR
    if statuses & {FAILED, MISSED}:
        return Outcome.FAIL
    return Outcome.PASS


def reason_of(outcome: str, data: dict) -> str:
    """One line on why a cell did not pass."""
    if outcome == Outcome.PASS:
        return ""
    if data.get("identity", {}).get("error"):
        return data["identity"]["error"]
    bad = [t for t in data["tests"] if t["status"] not in (PASSED, SKIPPED)]
    if not bad:
        return "no tests ran"
    first = bad[0]
    why = first["reasons"][0] if first["reasons"] else first["status"]
    names = ", ".join(t["name"] for t in bad[:4]) + (", ..." if len(bad) > 4 else "")
    return f"{len(bad)} not passed ({names}); {first['name']}: {why}"


@dataclass
class CellResult:
    cell: Cell
    outcome: Outcome = Outcome.PENDING
    reason: str = ""
    all_reasons: str = ""
    run_dir: Path | None = None
    summary: dict[str, int] = field(default_factory=dict)
    kernel: dict = field(default_factory=dict)
    boot: dict | None = None
    wall_s: float | None = None
    retried: list[str] = field(default_factory=list)  # run dirs of attempts run again
    tests: dict[str, str] = field(default_factory=dict)  # test -> status

    @property
    def as_expected(self) -> bool:
        if self.outcome != self.cell.expect:
            return False
        return self.cell.expect_reason is None or self.cell.expect_reason in self.all_reasons

    @property
    def finished(self) -> bool:
        return self.outcome not in (Outcome.PENDING, Outcome.RUNNING)

    def collect(self, run_dir: Path) -> None:
        """The outcome, reasons, counts and kernel of the run in run_dir."""
        self.run_dir = run_dir
        data = json.loads((run_dir / "results.json").read_text())
        self.summary = data["summary"]
        self.tests = {t["name"]: t["status"] for t in data["tests"]}
        self.outcome = outcome_of(data["tests"], data.get("boot"))
        self.reason = reason_of(self.outcome, data)
        texts = [data["identity"].get("error") or ""]
        texts += [why for t in data["tests"] for why in t["reasons"]]
        self.all_reasons = "\n".join(texts)
        k = data["identity"].get("kernel", {})
        self.kernel |= {x: k[x] for x in ("release", "source", "cached", "build_dir") if x in k}
        if data.get("boot"):
            self.boot = {x: data["boot"][x] for x in ("status", "wall_s", "init_s")}

    def to_json(self, base: Path) -> dict:
        return self.cell.describe() | {
            "outcome": self.outcome,
            "as_expected": self.as_expected,
            "reason": self.reason,
            "run_dir": str(self.run_dir.relative_to(base)) if self.run_dir else None,
            "summary": self.summary,
            "kernel": self.kernel,
            "boot": self.boot,
            "wall_s": self.wall_s,
            "retried": self.retried,
        }


def unstable(results: list[CellResult]) -> list[dict]:
    """The tests whose status differed between runs of one cell (<cell>#<k>)."""
    by_test: dict[tuple[str, str], list[str]] = {}
    for r in results:
        base = r.cell.name.rsplit("#", 1)[0]
        for test, status in r.tests.items():
            by_test.setdefault((base, test), []).append(status)
    return [
        {"cell": cell, "test": test, "statuses": dict(collections.Counter(statuses).most_common())}
        for (cell, test), statuses in by_test.items()
        if len(set(statuses)) > 1
    ]


# -- display -------------------------------------------------------------------


def table(rows) -> list[str]:
    rows = [HEADER, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def results_table(results: list[CellResult]) -> list[str]:
    """One row per cell: outcome, expectation, counts, wall time, kernel."""
    return table(
        [
            (
                r.cell.name,
                r.outcome,
                r.cell.expect,
                "yes" if r.as_expected else "NO",
                *(str(r.summary.get(k, "-")) for k in STATUSES),
                "-" if r.wall_s is None else f"{r.wall_s:.1f}",
                (r.kernel.get("release") or "-"),
            )
            for r in results
        ]
    )


def end_line(r: CellResult) -> str:
    """How a cell ended, after its tag: '<cell>: <outcome> (<counts>) <s>, <verdict>'."""
    s = r.summary
    counts = ", ".join(f"{s[k]} {k.lower()}" for k in STATUSES if s.get(k))
    verdict = "as expected" if r.as_expected else f"NOT AS EXPECTED (expect {r.cell.expect})"
    if r.outcome == Outcome.INTERRUPTED:
        verdict = "not finished"
    why = f": {r.reason}" if r.reason else ""
    wall = f" {r.wall_s:.1f} s" if r.wall_s is not None else ""
    return (
        f"end   {r.cell.name}: {r.outcome}"
        f"{f' ({counts})' if counts else ''}{wall}, {verdict}{why[:200]}"
    )


def unstable_lines(results: list[CellResult], repeat: int) -> list[str]:
    """What --repeat found: the tests that changed status between runs of a cell."""
    rows = unstable(results)
    if not rows:
        return [f"# repeat {repeat}: every test had the same status in every run of its cell"]
    lines = [f"# repeat {repeat}: {len(rows)} test(s) changed status between runs of a cell:"]
    for row in rows:
        counts = ", ".join(f"{k.lower()} {v}" for k, v in row["statuses"].items())
        lines.append(f"#   {row['cell']} {row['test']}: {counts}")
    return lines
