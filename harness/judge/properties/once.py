"""once: each edge is reported, and injected, once."""

from __future__ import annotations

from typing import TYPE_CHECKING

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


def once(m: Model, tr: TestTrace) -> PropertyResult:
    """One IRQ per injected edge, no spurious IRQ."""
    spurious = tr.ports("SPURIOUS")
    if spurious:
        return PropertyResult(
            "once",
            FAIL,
            "IRQ taken with no timer pending",
            seq=spurious[0].seq,
            expected="0 spurious IRQs",
            observed=str(len(spurious)),
        )
    extra = _reports_over_edges(m, tr)
    if extra is not None:
        return extra
    rises = [r for r in tr.injections if r.get("level") == "1"]
    irqs = tr.ports("IRQ")
    if tr.storm is not None and len(irqs) < len(rises):
        return PropertyResult(
            "once",
            NOT_JUDGED,
            f"the VMM ended the test in an exit storm after {len(rises)} injections, "
            f"before the guest could take them ({len(irqs)} IRQs taken)",
            seq=tr.storm.seq,
        )
    if len(rises) != len(irqs):
        seq = (
            irqs[len(rises)].seq
            if len(irqs) > len(rises)
            else (rises[len(irqs)].seq if rises else None)
        )
        return PropertyResult(
            "once",
            FAIL,
            "IRQs taken differ from rising edges injected",
            seq=seq,
            expected=f"{len(rises)} IRQs",
            observed=str(len(irqs)),
        )
    return PropertyResult("once", PASS, f"{len(irqs)} edges, {len(irqs)} IRQs")


def _reports_over_edges(m: Model, tr: TestTrace) -> PropertyResult | None:
    """More vtimer rises reported than the timer made (layer 1, else layer 0):
    an edge reported twice, or one it never made. Fewer is visible's and
    truthful's to judge. The guest's IRQs cannot show it when the VMM's
    injection absorbs the extra report (late_inject)."""
    if "vtimer" not in m.timers:
        return None
    shown = [c for c in tr.changes("vtimer") if c.level == 1]
    kev = tr.kernel_events
    if kev:
        edges, where = kernel_trace.rises(kev), "the kernel's kvm_timer_update_irq"
    elif tr.hw is not None:
        edges, where = tr.hw.edges(), "QEMU's timer (arm_gt_*)"
    else:
        return None
    if len(shown) <= edges:
        return None
    return PropertyResult(
        "once",
        FAIL,
        f"the ABI reported {len(shown)} vtimer rises for {edges} "
        f"edge{'' if edges == 1 else 's'} of {where}",
        seq=shown[edges].first.seq,
        expected=f"{edges} (one report per edge)",
        observed=str(len(shown)),
    )
