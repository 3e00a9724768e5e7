"""The verdicts of the tests a stream left without one (judge/session.py's close).

Tests run one after the other and a test's own records arrive when it ends, so
once /init is up the first unfinished test is the one the boot died in; the
ones never started are MISS. At the end of a stream, /init's own error records
say why a test never ran: a manifest line it rejected (that test ERROR, in
/init's words) or a suite error (every MISS's reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.judge.verdict import ERROR, MISSED, TestResult
from harness.traces import records


def unfinished(
    parsed: records.Parsed, left: Sequence[str], status: str, why: str
) -> list[TestResult]:
    """The tests in left (in suite order): the running one status, the rest MISS."""
    recs = parsed.records
    started = {r.test for r in recs}
    if left and any(r.kind == "boot" for r in recs):
        started.add(left[0])
    return [
        TestResult(name, status, [why])
        if name in started
        else TestResult(name, MISSED, [f"never ran: {why}"])
        for name in left
    ]


@dataclass
class SuiteSaid:
    """/init's error records: the manifest lines it rejected, its other errors."""

    rejected: dict[str, str] = field(default_factory=dict)  # test -> why
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, parsed: records.Parsed, line_of: dict[int, str]) -> SuiteSaid:
        said = cls()
        for r in parsed.of(records.SUITE):
            if r.kind != "error":
                continue
            test = line_of.get(r.int("line", -1))
            if test is not None:
                said.rejected[test] = (
                    f"/init rejected its manifest line {r.get('line')}: {r.get('msg')}"
                )
            else:
                said.errors.append(r.get("msg", "?"))
        return said

    def never_ran(self, name: str) -> TestResult:
        """A test with no records: ERROR if /init rejected it, else MISS."""
        if name in self.rejected:
            return TestResult(name, ERROR, [self.rejected[name]])
        why = "; ".join(self.errors) or "/init did not run it and said nothing"
        return TestResult(name, MISSED, [f"never ran: {why}"])
