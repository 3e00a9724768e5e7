"""A test's verdict: transport integrity, the guest's outcome, the spec, the model."""

from __future__ import annotations

from harness.inputs.guest_spec import GuestTest
from harness.judge import guest_check
from harness.judge.model import FAIL, Model, PropertyResult
from harness.judge.properties import once
from harness.judge.result import (  # noqa: F401  (re-exported: the statuses, the result)
    ERROR,
    FAILED,
    MISSED,
    PASSED,
    SKIPPED,
    TestResult,
    skipped,
)
from harness.traces import correlate
from harness.traces.qemu_trace import VmTimeline
from harness.traces.records import Problem, Record
from harness.traces.test_trace import TestTrace

# the VMM's end status -> (result status, reason)
_END = {
    "ok": (PASSED, ""),
    "guest-fail": (FAILED, "the guest reported a failed check"),
    "guest-timeout": (FAILED, "the guest's bounded wait for its IRQ ran out"),
    "watchdog": (FAILED, "the test hung and the VMM watchdog ended it"),
    "vmm-error": (ERROR, "the VMM failed (see its error records)"),
    "vmm-crash": (ERROR, "the VMM crashed"),
    "storm": (FAILED, "the VMM ended the test in an exit storm"),
}


# when several properties fail, the likely cause first: a storm stops the guest, an
# unreported change starves it, a wrong level misleads it; the rest follow from these
_CAUSES = ("progress", "visible", "wake", "truthful", "prompt", "once", "coalesce")


def _cause_rank(p: PropertyResult) -> int:
    return _CAUSES.index(p.prop) if p.prop in _CAUSES else len(_CAUSES)


def _metrics(tr: TestTrace) -> dict[str, float | int | None]:
    span = (tr.exits[-1].t_ns - tr.exits[0].t_ns) / 1e9 if len(tr.exits) > 1 else None
    rises = [c for c in tr.changes("vtimer") if c.level == 1]
    return correlate.metrics(tr) | {
        "hw_vtimer_edges": tr.hw.edges() if tr.hw else None,
        "exits": len(tr.exits),
        "notice_exits": sum(1 for e in tr.exits if e.notice),
        "irqs": len(tr.ports("IRQ")),
        "injections": len(tr.injections),
        "vtimer_edges": tr.edges("vtimer"),
        "ptimer_edges": tr.edges("ptimer"),
        "exits_per_s": round(len(tr.exits) / span, 1) if span else None,
        "exits_per_edge": round(len(tr.exits) / len(rises), 1) if rises else None,
    }


def _spec_checks(spec: GuestTest, tr: TestTrace, model: Model) -> list[str]:
    exp = spec.expect
    bad = []
    code = tr.guest_exit_code
    if code != exp.exit_code:
        check = guest_check.first_failed(tr, spec.source)
        where = f" ({check.describe()})" if check else ""
        bad.append(f"exit_code: expected {exp.exit_code}, observed {code}{where}")
    if exp.irqs is not None and len(tr.ports("IRQ")) != exp.irqs:
        bad.append(f"irqs: expected {exp.irqs}, observed {len(tr.ports('IRQ'))}")
    for timer, n in exp.edges.items():
        seen = tr.edges(timer)
        # the guest's own deadlines: a rise the guest masked before taking it (once
        # confirms it a true edge) is a host stall's, not the kernel's
        masked = once.masked_rises(model, tr) if timer == "vtimer" and seen > n else 0
        if seen - masked != n:
            also = f" ({masked} of them masked by the guest before an IRQ)" if masked else ""
            bad.append(f"edges.{timer}: expected {n}, observed {seen}{also}")
    if len(tr.ports("SPURIOUS")) != exp.spurious:
        bad.append(f"spurious: expected {exp.spurious}, observed {len(tr.ports('SPURIOUS'))}")
    return bad


def trace_for(
    name: str, records: list[Record], hw: VmTimeline | None = None, hw_missing: str | None = None
) -> TestTrace:
    """The trace a test is judged on: its records, and its layer 0 or why there is none."""
    tr = TestTrace.from_records(name, records)
    tr.hw = hw
    if hw_missing:
        tr.hw_missing = hw_missing
    return tr


def evaluate(
    spec: GuestTest,
    records: list[Record],
    problems: list[Problem],
    model: Model,
    hw: VmTimeline | None = None,
    hw_missing: str | None = None,
    problems_dropped: int = 0,
    tr: TestTrace | None = None,  # made of records, hw and hw_missing (trace_for) if None
) -> TestResult:
    if tr is None:
        tr = trace_for(spec.name, records, hw, hw_missing)
    hw = tr.hw
    res = TestResult(spec.name, PASSED, metrics=_metrics(tr) if records else {})
    res.dropped = dict(tr.dropped)
    if hw is not None and hw.dropped:
        res.dropped["qemu"] = hw.dropped
    if problems_dropped:
        res.dropped["console"] = problems_dropped
    if hw is None and records:
        res.metrics["hw_vtimer_edges"] = None
    if not records:
        res.status = MISSED
        res.reasons.append("no records: the test did not run")
        return res
    if problems:
        res.status = ERROR
        res.reasons += [f"{p.source}: {p.what} (line {p.line_no})" for p in problems]
    if tr.begin is None:
        res.status = ERROR
        res.reasons.append("no begin record")
    if tr.end is None:
        res.status = ERROR
        res.reasons.append("no end record: the run stopped inside this test")
        return res
    res.reasons += [f"vmm: {e.get('msg', '?')}" for e in tr.errors]
    end_status, why = _END.get(tr.status or "", (ERROR, f"unknown end status {tr.status}"))
    if end_status != PASSED:
        res.reasons.append(why)
    res.properties = model.check(tr, spec.properties)
    spec_bad = _spec_checks(spec, tr, model) if end_status != ERROR else []
    # the broken promise first: the rest (the VMM's end status, the guest's checks) are
    # its symptoms
    failed = [p.line() for p in sorted(res.properties, key=_cause_rank) if p.status == FAIL]
    res.reasons = failed + res.reasons + spec_bad
    if res.status == ERROR or end_status == ERROR:
        res.status = ERROR
    elif end_status == FAILED or spec_bad or any(p.status == FAIL for p in res.properties):
        res.status = FAILED
    return res
