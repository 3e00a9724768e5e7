"""truthful: the level the ABI shows at each exit is the timer's output there
(layer 0's oracle), and the layers count the same rises."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.judge import oracle
from harness.judge.property import (
    FAIL,
    NOT_JUDGED,
    PASS,
    PropertyResult,
)
from harness.traces import kernel_trace
from harness.traces.test_trace import TestTrace

if TYPE_CHECKING:
    from harness.judge.model import Model


def _mismatch(v: oracle.Verdict) -> PropertyResult:
    """truthful's failure at the first exit whose level the oracle does not allow."""
    x = v.mismatch
    assert x is not None
    why = x.cause.describe() if x.cause else "the timer's reset state"
    t = x.timer
    return PropertyResult(
        "truthful",
        FAIL,
        f"exit {x.exit.n} on vcpu {x.exit.vcpu} ({x.exit.reason}, cnt {x.exit.cnt or 0:x}) "
        f"showed {t} {x.shown}, the timer's output there was {x.level}, set by {why}; "
        f"{v.clock.describe() if v.clock else 'no change, no clock needed'}",
        seq=x.exit.seq,
        expected=f"{t} {x.level} (QEMU arm_gt_*)",
        observed=f"{t} {x.shown} (lvl={x.exit.level or 0:x})",
    )


def _truthful_at_exits(
    m: Model,
    tr: TestTrace,
    v: oracle.Verdict | None,
    counts: str,
    pv: oracle.Verdict | None = None,
) -> PropertyResult:
    """truthful, the counts agreeing: judged at every exit, or why not."""
    if v is None:
        return PropertyResult(
            "truthful", NOT_JUDGED, f"this ABI reports no vtimer level to judge ({counts})"
        )
    if v.why_not:
        return PropertyResult(
            "truthful", NOT_JUDGED, f"the level at each exit is not judged: {v.why_not} ({counts})"
        )
    both = "ptimer" in m.timers and pv is not None and not pv.why_not
    if "ptimer" in m.timers and not both and tr.changes("ptimer"):
        why = pv.why_not if pv is not None else "layer 0 does not follow the ptimer"
        return PropertyResult(
            "truthful", NOT_JUDGED, f"vtimer right at all {v.judged} exits, but the ptimer the "
            f"ABI reported is not judged: {why} ({counts})",
        )  # fmt: skip
    clock = v.clock.describe() if v.clock else "no change, no clock needed"
    return PropertyResult(
        "truthful",
        PASS,
        f"{'vtimer and ptimer levels' if both else 'vtimer level'} right at all {v.judged} "
        f"exits against QEMU's timer output ({clock}); " + counts,
    )


def truthful(m: Model, tr: TestTrace) -> PropertyResult:
    """The reported level agrees with the hardware: the guest's own ISTATUS at
    IRQ entry; at every exit, the architectural timer output at its counter
    (layer 0, harness/judge/oracle.py); and the count of rises in the kernel's
    tracepoints (layer 1) and QEMU's trace."""
    for e in tr.ports("IRQ"):
        if not (e.value or 0) & 0xF:
            return PropertyResult("truthful", FAIL, "IRQ entry with no timer pending", seq=e.seq)
    verdict = oracle.judge(tr, tr.hw) if tr.hw is not None and "vtimer" in m.timers else None
    pverdict = (
        oracle.judge(tr, tr.hw, "ptimer") if tr.hw is not None and "ptimer" in m.timers else None
    )
    found = [v for v in (verdict, pverdict) if v is not None and v.mismatch is not None]
    if found:
        return _mismatch(min(found, key=lambda v: v.mismatch.exit.seq if v.mismatch else 0))
    shown = sum(1 for c in tr.changes("vtimer") if c.level == 1)
    kev = tr.kernel_events
    if kev and "vtimer" in m.timers and kernel_trace.rises(kev) != shown:
        return PropertyResult(
            "truthful", FAIL, "the ABI showed a different number of vtimer rises than the "
            "kernel's kvm_timer_update_irq saw",
            expected=f"{kernel_trace.rises(kev)} (L1 tracepoints)", observed=str(shown),
        )  # fmt: skip
    if tr.hw is None:
        kernel = (
            f"{kernel_trace.rises(kev)} in the kernel's kvm_timer_update_irq"
            if kev
            else f"layer 1: {tr.kernel_missing()}"
        )
        return PropertyResult(
            "truthful", NOT_JUDGED, f"every IRQ found its timer pending, but the level at "
            f"each exit is not judged without layer 0: {tr.hw_missing} ({shown} vtimer "
            f"rises shown, {kernel})",
        )  # fmt: skip
    if "vtimer" in m.timers and shown != tr.hw.edges():
        return PropertyResult(
            "truthful", FAIL, "the ABI showed a different number of vtimer rises than QEMU's "
            "timer produced", expected=f"{tr.hw.edges()} (QEMU arm_gt_*)", observed=str(shown),
        )  # fmt: skip
    counts = f"{shown} vtimer rises shown, {tr.hw.edges()} in QEMU's trace" + (
        f", {kernel_trace.rises(kev)} in the kernel's" if kev else ""
    )
    pshown = sum(1 for c in tr.changes("ptimer") if c.level == 1)
    if pverdict is not None and not pverdict.why_not:
        pirq = kernel_trace.PTIMER_IRQ
        if pshown != tr.hw.prises or (kev and kernel_trace.rises(kev, pirq) != pshown):
            return PropertyResult(
                "truthful", FAIL, "the ABI showed a different number of ptimer rises than "
                "the timer produced", expected=f"{tr.hw.prises} (QEMU arm_gt_* timer 0)"
                + (f", {kernel_trace.rises(kev, pirq)} (L1 tracepoints)" if kev else ""),
                observed=str(pshown),
            )  # fmt: skip
        counts += f"; {pshown} ptimer rises shown, {tr.hw.prises} in QEMU's trace"
    return _truthful_at_exits(m, tr, verdict, counts, pverdict)
