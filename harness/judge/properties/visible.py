"""visible: every change the kernel saw reaches user space before the guest runs on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.judge.property import (
    FAIL,
    NOT_JUDGED,
    PASS,
    PropertyResult,
    changes,
)
from harness.traces import kernel_trace
from harness.traces.test_trace import TestTrace

if TYPE_CHECKING:
    from harness.judge.model import Model


def visible(m: Model, tr: TestTrace) -> PropertyResult:
    """Every change of a reported timer's level reaches the VMM."""
    for c in changes(m, tr):
        if c.read_at is None:
            return PropertyResult(
                "visible",
                FAIL,
                f"{c.timer} change to {c.level} on vcpu {c.vcpu}, first shown on "
                f"exit {c.first.n} ({c.first.reason}), never read by the VMM",
                seq=c.first.seq,
                expected="read on an exit",
                observed="never read",
            )
    kev = tr.kernel_events
    split = tr.kernel_by_vcpu if kev else {}
    entered = _unreported_entry(m, tr, split)
    if isinstance(entered, PropertyResult):
        return entered
    paired = entered
    several = len(tr.vcpus()) > 1
    if tr.status == "guest-timeout":
        fail = tr.ports("FAIL")
        return PropertyResult(
            "visible",
            FAIL,
            "the guest's bounded wait for its IRQ ran out: a change never reached it",
            seq=fail[0].seq if fail else None,
        )
    n = len(changes(m, tr))
    if not kev:
        return PropertyResult(
            "visible",
            NOT_JUDGED,
            f"the VMM read all {n} changes it was shown, but which changes the kernel saw "
            f"is unknown: {tr.kernel_missing()}",
        )
    if isinstance(split, str):
        return PropertyResult(
            "visible", PASS, f"{n} changes all read (layer 1 not checked per vCPU: {split})"
        )
    if not paired:
        return PropertyResult(
            "visible",
            NOT_JUDGED,
            f"the VMM read all {n} changes it was shown, but the kernel's returns to user "
            "space do not pair up with the VMM's exit records",
        )
    per = f" on any of {len(split)} vCPUs" if several else ""
    return PropertyResult(
        "visible", PASS, f"{n} changes all read; no guest entry{per} with a change unreported"
    )


def _unreported_entry(m: Model, tr: TestTrace, split) -> PropertyResult | bool:
    """Layer 1, per vCPU: the FAIL for a guest entry with a change unreported, else
    whether every vCPU's returns to user space paired up with its exit records."""
    paired = True
    several = len(tr.vcpus()) > 1
    for vcpu, evs in split.items() if isinstance(split, dict) else ():
        shown = [e.level for e in tr.by_vcpu()[vcpu]]
        bad = kernel_trace.unreported_entries(evs, m.timers, shown)
        paired = paired and bad is not None
        if bad:
            b = bad[0]
            on = f" on vcpu {vcpu}" if several else ""
            return PropertyResult(
                "visible",
                FAIL,
                f"the guest was entered{on} with a {b.timer} change unreported: the kernel "
                f"saw level {b.level} (kvm_timer_update_irq at {b.change.t_ns / 1e9:.6f} s) "
                f"and ran the guest (kvm_entry at {b.entry.t_ns / 1e9:.6f} s) before any "
                f"return to user space; {len(bad)} such entries",
                seq=b.entry.seq,
                expected=f"a return to user space showing {b.level} before the next entry",
                observed=f"kvm_entry with level {b.reported} last reported",
            )
    return paired
