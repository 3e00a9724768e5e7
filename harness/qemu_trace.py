"""QEMU's own arm_gt_* trace (layer 0, the hardware truth), split per VM.

QEMU 7.2 reports the timer output inside arm_gt_recalc / arm_gt_imask_toggle
("irqstate N"); QEMU >= 8.2 adds arm_gt_update_irq. Both are parsed. Timer
indices: 0 phys, 1 virt, 2 hyp, 3 sec, 4 hyp-virt.

How lines are tied to tests: KVM loads a vCPU by writing the VM's CNTVOFF
(arm_gt_cntvoff_write, non-zero) and then restoring CNTV_CVAL and CNTV_CTL;
it puts the vCPU by writing CNTV_CTL = 0 and CNTVOFF = 0. Each VM has its
own offset, so the n-th distinct offset is the n-th test's VM. Between a
load (after its two restore writes) and the put, timer 1 is the guest's
virtual timer: its irqstate changes there are the hardware line. A level
restored at load that differs from the level at the last put is a change
that happened while the vCPU was out (e.g. the timer fired during WFI).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

VIRT = 1

_LINE = re.compile(r"^(?:\d+@(?P<ts>\d+\.\d+):)?(?P<event>arm_gt_\w+) (?P<text>.*)$")
_TIMER = re.compile(r"timer (\d+)")
_IRQSTATE = re.compile(r"irqstate (\d)")
_VALUE = re.compile(r"value (0x[0-9a-f]+)")
_NEXT = re.compile(r"next tick (0x[0-9a-f]+)")


@dataclass(frozen=True)
class GtEvent:
    index: int  # line number in the trace log
    event: str
    timer: int | None
    irqstate: int | None
    value: int | None
    next_tick: int | None
    host_ts: float | None


@dataclass(frozen=True)
class HwChange:
    """A change of the guest's virtual timer output, as QEMU computed it."""

    level: int
    index: int
    next_tick: int | None  # for a rise: the physical count at which it fired
    while_out: bool  # happened while the vCPU was not loaded (seen at the next load)


@dataclass
class VmTimeline:
    cntvoff: int
    loads: int = 0
    changes: list[HwChange] = field(default_factory=list)
    cval_writes: list[int] = field(default_factory=list)

    def edges(self) -> int:
        return sum(1 for c in self.changes if c.level == 1)


def parse_line(line: str, index: int) -> GtEvent | None:
    m = _LINE.match(line.strip())
    if not m:
        return None
    text = m["text"]

    def num(rx: re.Pattern, base: int = 10) -> int | None:
        g = rx.search(text)
        return int(g[1], base) if g else None

    return GtEvent(
        index=index,
        event=m["event"],
        timer=num(_TIMER),
        irqstate=num(_IRQSTATE),
        value=num(_VALUE, 16),
        next_tick=num(_NEXT, 16),
        host_ts=float(m["ts"]) if m["ts"] else None,
    )


def parse(lines: Iterable[str]) -> list[GtEvent]:
    return [e for i, line in enumerate(lines, 1) if (e := parse_line(line, i))]


def timelines(events: list[GtEvent]) -> list[VmTimeline]:
    """One timeline per VM (distinct CNTVOFF), in the order the VMs first ran."""
    vms: dict[int, VmTimeline] = {}
    current: VmTimeline | None = None
    level = 0  # the guest line as of its last observation while loaded
    restoring = 0  # restore writes still to come after a load
    hw = 0  # QEMU's current timer-1 irqstate
    pending_put: GtEvent | None = None
    for i, e in enumerate(events):
        if e.event == "arm_gt_cntvoff_write":
            if e.value:
                current = vms.setdefault(e.value, VmTimeline(e.value))
                current.loads += 1
                restoring = 2
                pending_put = None
                level = current.changes[-1].level if current.changes else 0
            else:
                current = None
            continue
        if current is None or e.timer != VIRT:
            continue
        if e.event in ("arm_gt_cval_write", "arm_gt_ctl_write"):
            if restoring:
                restoring -= 1
                continue
            if e.event == "arm_gt_ctl_write" and e.value == 0 and _put_follows(events, i):
                pending_put = e  # KVM saving the timer: not a guest change
                continue
            if e.event == "arm_gt_cval_write" and e.value is not None:
                current.cval_writes.append(e.value)
            pending_put = None
            continue
        if e.irqstate is None:
            continue
        hw = e.irqstate
        if pending_put is not None:
            continue  # the recalc of KVM's save write
        if restoring == 0 and hw != level:
            # first recalc after the restore: a change while out, else a change in the guest
            loaded_first = _first_recalc_since_load(events, i)
            current.changes.append(HwChange(hw, e.index, e.next_tick, while_out=loaded_first))
            level = hw
    return list(vms.values())


def _put_follows(events: list[GtEvent], i: int) -> bool:
    """Is events[i] (CTL=0) KVM's save, i.e. followed by CNTVOFF=0 before another CTL write?"""
    for e in events[i + 1 : i + 6]:
        if e.event == "arm_gt_cntvoff_write":
            return not e.value
        if e.event in ("arm_gt_ctl_write", "arm_gt_cval_write") and e.timer == VIRT:
            return False
    return False


def _first_recalc_since_load(events: list[GtEvent], i: int) -> bool:
    for e in reversed(events[:i]):
        if e.event == "arm_gt_cntvoff_write":
            return True
        if e.timer == VIRT and e.irqstate is not None and e.event != "arm_gt_recalc_disabled":
            return False
        if e.timer == VIRT and e.event in ("arm_gt_cval_write", "arm_gt_ctl_write"):
            continue
    return True
