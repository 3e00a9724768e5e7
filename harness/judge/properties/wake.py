"""wake: a vCPU blocked in WFI is woken by its timer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.inputs import limits
from harness.judge.properties.held import HeldTicks
from harness.judge.property import (
    FAIL,
    NOT_JUDGED,
    PASS,
    SKIP,
    PropertyResult,
)
from harness.traces.test_trace import TestTrace

# the VT_WAKE value: IRQs taken so far, and VT_WAKE_EARLY (guest_tests/runtime/vt_ports.h)
_WAKE_EARLY = 1 << limits.get("VT_WAKE_EARLY_BIT")
_WAKE_IRQS = _WAKE_EARLY - 1

if TYPE_CHECKING:
    from harness.judge.model import Model


def wake(m: Model, tr: TestTrace) -> PropertyResult:
    """A vCPU asleep in WFI when its timer fires is woken and takes the IRQ.

    The guest's VT_WAKE says whether it was asleep before the timer fired
    (timer_arm_wfi reads ISTATUS just before the WFI); the kernel layer,
    when present, must show KVM itself blocking and waking the vCPU (a VM
    with no vGIC always traps WFI; a host booted with
    kvm-arm.wfi_trap_policy=notrap, 6.12 and later, would not).
    """
    wakes = [e for e in tr.ports("WAKE") if (e.value or 0) & _WAKE_IRQS >= 1]
    if not wakes and tr.storm is not None:
        return PropertyResult(
            "wake",
            NOT_JUDGED,
            "the VMM ended the test in an exit storm before the guest could report a "
            "wake-up from WFI",
            seq=tr.storm.seq,
        )
    if not wakes:
        return PropertyResult(
            "wake",
            FAIL,
            "the vCPU never returned from WFI with its IRQ taken",
            expected="a WAKE report after the IRQ",
            observed="none",
        )
    if all((e.value or 0) & _WAKE_EARLY for e in wakes):
        return PropertyResult(
            "wake",
            SKIP,
            "not exercised: the timer had fired before the vCPU reached its WFI",
            seq=wakes[0].seq,
        )
    events = tr.kernel_events
    if not events:
        return PropertyResult(
            "wake",
            NOT_JUDGED,
            f"the guest woke from WFI with its IRQ, but whether KVM blocked and woke the "
            f"vCPU is unknown: {tr.kernel_missing()}",
            seq=wakes[0].seq,
        )
    if not any(ev.event == "kvm_vcpu_wakeup" for ev in events):
        held = _fired_held(tr)
        if held is not None:
            return PropertyResult(
                "wake",
                NOT_JUDGED,
                f"KVM never blocked the vCPU, but its timer fired while the host's tick "
                f"waited untaken {held:.1f} ms (QEMU's trace): QEMU was not running the L1 "
                "CPU, and a WFI reached then finds the interrupt pending and does not trap",
                seq=wakes[0].seq,
            )
        return PropertyResult(
            "wake",
            FAIL,
            "the guest slept in WFI but KVM never blocked the vCPU",
            seq=wakes[0].seq,
            expected="a kvm_vcpu_wakeup event",
            observed="none among the test's kvm events",
        )
    return PropertyResult("wake", PASS, "woken from WFI by the timer")


def _fired_held(tr: TestTrace) -> float | None:
    """How long the host tick waited untaken when a vtimer rise the counter caused
    fired (layer 0), if one did."""
    if tr.hw is None:
        return None
    held = HeldTicks(tr)
    found = (held.at(c.tick) for c in tr.hw.changes if c.level == 1 and c.tick is not None)
    return next((h for h in found if h is not None), None)
