"""A test's verdict and a property's, as results.json keeps them: plain data, with
no judging in it, so that what runs before the boot (a VMM's SKIP verdicts, the
run's set-up) does not import the judge (harness/judge/verdict.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.core.status import PropStatus, Status

if TYPE_CHECKING:
    from harness.inputs.guest_spec import GuestTest

PASSED, FAILED, ERROR, SKIPPED, MISSED = (
    Status.PASS,
    Status.FAIL,
    Status.ERROR,
    Status.SKIP,
    Status.MISS,
)
# a check whose evidence is absent or was dropped: never a pass
NOT_JUDGED = PropStatus.NOT_JUDGED


@dataclass(frozen=True)
class PropertyResult:
    prop: str
    status: str  # pass, fail, skip
    detail: str
    seq: int | None = None  # the first record where it failed
    expected: str | None = None
    observed: str | None = None

    def to_json(self) -> dict:
        return {
            "prop": self.prop,
            "status": self.status,
            "detail": self.detail,
            "seq": self.seq,
            "expected": self.expected,
            "observed": self.observed,
        }

    def line(self) -> str:
        where = f" (record seq {self.seq})" if self.seq is not None else ""
        if self.status == NOT_JUDGED:
            return f"{self.prop} not judged: {self.detail}{where}"
        eo = ""
        if self.expected is not None:
            eo = f": expected {self.expected}, observed {self.observed}"
        return f"{self.prop}: {self.detail}{eo}{where}"


@dataclass
class TestResult:
    __test__ = False  # not a pytest class
    name: str
    status: str
    reasons: list[str] = field(default_factory=list)
    properties: list[PropertyResult] = field(default_factory=list)
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    # what was not kept of the test's evidence, per layer (exit, kernel, qemu, console)
    dropped: dict[str, int] = field(default_factory=dict)

    def not_judged(self) -> list[PropertyResult]:
        return [p for p in self.properties if p.status == NOT_JUDGED]

    def to_json(self) -> dict:
        """Its results.json entry: flat copies (asdict's deep copy of every field took
        a third of a boot's judging time, results.json being written after each test)."""
        return {
            "name": self.name,
            "status": self.status,
            "reasons": list(self.reasons),
            "properties": [p.to_json() for p in self.properties],
            "metrics": dict(self.metrics),
            "dropped": dict(self.dropped),
        }


def skipped(spec: GuestTest, why: str) -> TestResult:
    return TestResult(spec.name, SKIPPED, [why])
