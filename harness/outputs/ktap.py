"""KTAP (the kernel's test output format) for the suite, printed as tests end.

Each test the model judged carries its properties as KTAP subtests
(Documentation/dev-tools/ktap.rst, "Nested tests"): an indented block with its
own version line and plan before the test's result line, one result per
property and a last one, ``checks``, for the rest of the verdict (the VMM's end
status, the guest's checks, the spec's counts, the console's integrity), so a
KTAP parser that counts subtests counts a test failed by its guest checks too.
A property that is not a pass is never ``ok`` unqualified: ``fail`` is
``not ok`` with its reason as a diagnostic line before it; ``skip``,
``not-judged`` and ``n/a`` are ``ok ... # SKIP <why>`` (SKIP is the spec's
directive for a result that says nothing of the code; kunit_parser counts it
skipped, not passed). The test's own result line and the diagnostic lines
before it are those of a test without subtests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.judge.property import FAIL, NA, NOT_JUDGED, PASS, PropertyResult
from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED, SKIPPED, TestResult

INDENT = "  "  # one level of nesting (ktap.rst)
CHECKS = "checks"  # the subtest for the verdict besides the properties


def _flat(text: str) -> str:
    """One line (a diagnostic or a directive's text)."""
    return " ".join(text.split())


def property_line(n: int, p: PropertyResult) -> list[str]:
    """A property's KTAP result line, with its reason before it when it failed."""
    if p.status == PASS:
        return [f"ok {n} {p.prop}"]
    if p.status == FAIL:
        return [f"# {_flat(p.line())}", f"not ok {n} {p.prop}"]
    why = {NOT_JUDGED: "not judged: ", NA: "n/a: "}.get(p.status, "")
    return [f"ok {n} {p.prop} # SKIP {_flat(why + p.detail)}"]


def other_reasons(r: TestResult) -> list[str]:
    """The test's reasons that are not a failed property's own line."""
    own = {p.line() for p in r.properties if p.status == FAIL}
    return [why for why in r.reasons if why not in own]


def subtests(r: TestResult) -> list[str]:
    """The indented subtest block of a judged test (none for one never judged)."""
    if not r.properties:
        return []
    lines = ["KTAP version 1", f"# Subtest: {r.name}", f"1..{len(r.properties) + 1}"]
    for n, p in enumerate(r.properties, 1):
        lines += property_line(n, p)
    n = len(r.properties) + 1
    rest = other_reasons(r) if r.status != PASSED else []
    lines.append(f"not ok {n} {CHECKS} # {_flat('; '.join(rest))}" if rest else f"ok {n} {CHECKS}")
    return [INDENT + line for line in lines]


class KtapWriter:
    def __init__(self, out: Callable[[str], None], header: list[str], total: int) -> None:
        self._out = out
        self._n = 0
        self.lines: list[str] = []
        self._emit("KTAP version 1")
        self._emit(f"1..{total}")  # the plan follows the version line (ktap.rst)
        for h in header:
            self._emit(f"# {h}")

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        self._out(line)

    def result(self, r: TestResult) -> None:
        self._n += 1
        for line in subtests(r):
            self._emit(line)
        for p in r.not_judged():
            self._emit(f"# {r.name}: {p.line()}")
        if r.status == PASSED:
            self._emit(f"ok {self._n} {r.name}")
        elif r.status == SKIPPED:
            self._emit(f"ok {self._n} {r.name} # SKIP {'; '.join(r.reasons)}")
        else:
            for why in r.reasons:
                self._emit(f"# {r.name}: {why}")
            tag = {FAILED: "FAIL", ERROR: "ERROR", MISSED: "MISS"}[r.status]
            self._emit(f"not ok {self._n} {r.name} # {tag}")

    def emit(self, r: TestResult, diags: Sequence[str] = ()) -> None:
        """A result and the diagnostic lines after it (a judge session's emit)."""
        self.result(r)
        for d in diags:
            self.diag(d)

    def diag(self, text: str) -> None:
        """A diagnostic line between results."""
        self._emit(f"# {text}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def summary(results: list[TestResult]) -> str:
    counts = {s: 0 for s in (PASSED, FAILED, ERROR, SKIPPED, MISSED)}
    for r in results:
        counts[r.status] += 1
    return f"# totals: {counts[PASSED]} passed, {counts[FAILED]} failed, " + (
        f"{counts[ERROR]} errors, {counts[SKIPPED]} skipped, {counts[MISSED]} missed"
    )
