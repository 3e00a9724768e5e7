"""A property's verdict on one test, and what every property check shares."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from harness.core.status import PropStatus
from harness.judge.result import NOT_JUDGED, PropertyResult
from harness.traces.test_trace import Change, Exit, TestTrace

if TYPE_CHECKING:
    from harness.judge.model import Model

PASS, FAIL, SKIP = PropStatus.PASS, PropStatus.FAIL, PropStatus.SKIP
# a property the model does not promise: what the kernel did is said, never "pass"
NA = PropStatus.NA
# the properties each judged from the VMM's exit records
_FROM_EXITS = ("visible", "once", "coalesce", "eintr-suffices", "progress", "truthful", "wake")
# properties of the kernel's notices that every trace shows, whatever the test
ALWAYS = ("prompt", "coalesce", "eintr-suffices", "history", "dedicated-exit")


def changes(m: Model, tr: TestTrace) -> list[Change]:
    out = [c for t in m.timers for c in tr.changes(t)]
    return sorted(out, key=lambda c: c.first.seq)


def describe(e: Exit | None) -> str:
    if e is None:
        return "no further exit"
    shown = f", line {e.level:x}" if e.level is not None else ""
    return f"exit {e.n} ({e.reason}{', notice' if e.notice else ''}{shown})"


def evidence(tr: TestTrace, r: PropertyResult) -> PropertyResult:
    """A pass judged on records of which some were dropped is not a pass."""
    n = tr.dropped.get("exit", 0)
    if not n or r.prop not in _FROM_EXITS or r.status not in (PASS, NA):
        return r
    if r.status == NA:
        return dataclasses.replace(r, detail=f"{r.detail} (of the kept records; {n} dropped)")
    return PropertyResult(
        r.prop,
        NOT_JUDGED,
        f"{n} exit records were dropped (over the VMM's bound); on the kept ones: {r.detail}",
        r.seq,
    )
