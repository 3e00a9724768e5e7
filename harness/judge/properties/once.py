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
    # with the edges confirmed (layer 1 or 0: no rise reported twice), a rise the VMM
    # lowered again before the guest took an IRQ was a true edge the guest masked first
    withdrawn = masked_rises(m, tr)
    if tr.storm is not None and len(irqs) < len(rises):
        return PropertyResult(
            "once",
            NOT_JUDGED,
            f"the VMM ended the test in an exit storm after {len(rises)} injections, "
            f"before the guest could take them ({len(irqs)} IRQs taken)",
            seq=tr.storm.seq,
        )
    owed = len(rises) - withdrawn
    if owed != len(irqs):
        seq = irqs[owed].seq if len(irqs) > owed else (rises[len(irqs)].seq if rises else None)
        also = f" ({withdrawn} lowered again before an IRQ was taken)" if withdrawn else ""
        return PropertyResult(
            "once",
            FAIL,
            f"IRQs taken differ from rising edges injected{also}",
            seq=seq,
            expected=f"{owed} IRQs",
            observed=str(len(irqs)),
        )
    also = (
        f"; {withdrawn} more rise(s) lowered again before the guest took an IRQ (it masked "
        "the timer first: a host stall between its CVAL and CTL writes)"
        if withdrawn
        else ""
    )
    return PropertyResult("once", PASS, f"{len(irqs)} edges, {len(irqs)} IRQs{also}")


def masked_rises(m: Model, tr: TestTrace) -> int:
    """Rises the VMM injected and lowered again before the guest took an IRQ, with
    the edges confirmed (layer 1 or 0): true edges the guest masked first (a host
    stall between its CVAL and CTL writes fires the old deadline); 0 unconfirmed, or
    with more rises reported than the timer made (then a lowered one may be a false
    report: _reports_over_edges)."""
    counted = _edges(m, tr)
    if counted is None or sum(c.level == 1 for c in tr.changes("vtimer")) > counted[0]:
        return 0
    return _withdrawn(tr)


def _withdrawn(tr: TestTrace) -> int:
    """Injected rises with no IRQ reported before the vCPU's next rise (or the test's
    end) that the VMM lowered again, per vCPU. The report of an IRQ the guest took can
    come after the fall it caused (the handler quiesces the timer, then reports), so a
    rise counts as taken until the next one."""
    events = sorted(
        [(r.seq, r.int("vcpu"), r.get("level")) for r in tr.injections]
        + [(x.seq, x.vcpu, "irq") for x in tr.ports("IRQ")]
    )
    state: dict[int, list[bool]] = {}  # vcpu -> [a rise is open, lowered, reported]
    n = 0
    for _seq, vcpu, what in events:
        rise = state.setdefault(vcpu, [False, False, False])
        if what == "1":
            n += rise[0] and rise[1] and not rise[2]
            state[vcpu] = [True, False, False]
        elif what == "0":
            rise[1] = True
        elif what == "irq":
            rise[2] = True
    return n + sum(r[0] and r[1] and not r[2] for r in state.values())


def _edges(m: Model, tr: TestTrace) -> tuple[int, str] | None:
    """The vtimer's rises as the kernel (layer 1) or else QEMU (layer 0) counted them,
    and which; None without either (or without a vtimer in the ABI)."""
    if "vtimer" not in m.timers:
        return None
    if tr.kernel_events:
        return kernel_trace.rises(tr.kernel_events), "the kernel's kvm_timer_update_irq"
    if tr.hw is not None:
        return tr.hw.edges(), "QEMU's timer (arm_gt_*)"
    return None


def _reports_over_edges(m: Model, tr: TestTrace) -> PropertyResult | None:
    """More vtimer rises reported than the timer made (layer 1, else layer 0):
    an edge reported twice, or one it never made. Fewer is visible's and
    truthful's to judge. The guest's IRQs cannot show it when the VMM's
    injection absorbs the extra report (late_inject)."""
    counted = _edges(m, tr)
    if counted is None:
        return None
    edges, where = counted
    shown = [c for c in tr.changes("vtimer") if c.level == 1]
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
