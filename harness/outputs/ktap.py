"""KTAP (the kernel's test output format) for the suite, printed as tests end."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED, SKIPPED, TestResult


class KtapWriter:
    def __init__(self, out: Callable[[str], None], header: list[str], total: int) -> None:
        self._out = out
        self._n = 0
        self.lines: list[str] = []
        self._emit("KTAP version 1")
        for h in header:
            self._emit(f"# {h}")
        self._emit(f"1..{total}")

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        self._out(line)

    def result(self, r: TestResult) -> None:
        self._n += 1
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
