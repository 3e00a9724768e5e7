"""Layer 1: the L1 kernel's kvm_* tracepoints, carried in "kt" records.

The VMM switches tracefs on per test with trace_clock "mono", so an
event's time is the same CLOCK_MONOTONIC as the records' t_ns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.records import Record

_LINE = re.compile(
    r"^\s*(?P<task>.+?)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>\d+\.\d+): (?P<ev>\w+): ?(?P<rest>.*)$"
)
_UPDATE = re.compile(r"VCPU: (\d+), IRQ (\d+), level (\d)")
VTIMER_IRQ, PTIMER_IRQ = 27, 30


@dataclass(frozen=True)
class KernelEvent:
    t_ns: int
    event: str
    text: str
    seq: int

    def timer_update(self) -> tuple[int, int, int] | None:
        """(vcpu, irq, level) of a kvm_timer_update_irq event."""
        if self.event != "kvm_timer_update_irq":
            return None
        m = _UPDATE.search(self.text)
        return (int(m[1]), int(m[2]), int(m[3])) if m else None


def parse_record(r: Record) -> KernelEvent | None:
    ts, ev, msg = r.get("ts"), r.get("ev"), r.get("msg", "")
    if ts is None or ev is None:  # an older or raw form: the trace file's own line
        m = _LINE.match(r.get("line") or r.get("raw") or "")
        if not m:
            return None
        ts, ev, msg = m["ts"], m["ev"], m["rest"]
    sec, _, frac = ts.partition(".")
    if not sec.isdigit():
        return None
    t_ns = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
    return KernelEvent(t_ns, ev, msg, r.seq)


def events(records: list[Record]) -> list[KernelEvent]:
    """The test's kernel events; none when the VMM had to drop some (ktdrop)."""
    if any(r.kind == "ktdrop" for r in records):
        return []
    return [e for r in records if r.kind == "kt" and (e := parse_record(r))]


def level_changes(evs: list[KernelEvent], irq: int = VTIMER_IRQ) -> list[tuple[int, int, int]]:
    """(t_ns, vcpu, level) each time the kernel's view of the timer line changed."""
    out = []
    current: dict[int, int] = {}
    for e in evs:
        u = e.timer_update()
        if u is None or u[1] != irq:
            continue
        vcpu, _, level = u
        if current.get(vcpu, 0) != level:
            out.append((e.t_ns, vcpu, level))
        current[vcpu] = level
    return out


def rises(evs: list[KernelEvent], irq: int = VTIMER_IRQ) -> int:
    return sum(1 for _, _, level in level_changes(evs, irq) if level == 1)


TIMER_IRQS = {"vtimer": VTIMER_IRQ, "ptimer": PTIMER_IRQ}
_BITS = {"vtimer": 0, "ptimer": 1}


@dataclass(frozen=True)
class UnreportedEntry:
    """The guest entered with a timer change the kernel saw but had not reported."""

    entry: KernelEvent  # the kvm_entry
    change: KernelEvent  # the kvm_timer_update_irq that made the level differ
    timer: str
    level: int  # the kernel's level then
    reported: int  # the level the last return to user space showed


def unreported_entries(
    evs: list[KernelEvent], timers: tuple[str, ...], shown: list[int | None]
) -> list[UnreportedEntry] | None:
    """Every kvm_entry at which a timer's level, as the kernel last saw it change
    (kvm_timer_update_irq), differs from the level user space was last shown:
    a change the guest ran with before user space was told. shown is the level
    bitmap the ABI showed at each of the vCPU's returns to user space, in order
    (the VMM's exit records; None where an exit shows none), the n-th for the
    n-th kvm_userspace_exit. One vCPU's events (the kt records carry no vCPU for
    entries). None when the returns do not pair up with the exit records."""
    if sum(e.event == "kvm_userspace_exit" for e in evs) != len(shown):
        return None
    irqs = {TIMER_IRQS[t]: t for t in timers}
    level = dict.fromkeys(irqs, 0)
    reported = dict(level)
    changed: dict[int, KernelEvent] = {}
    returns = iter(shown)
    out: list[UnreportedEntry] = []
    for e in evs:
        u = e.timer_update()
        if u is not None and u[1] in irqs:
            if level[u[1]] != u[2]:
                changed[u[1]] = e
            level[u[1]] = u[2]
        elif e.event == "kvm_userspace_exit":
            bitmap = next(returns)
            if bitmap is not None:
                reported = {irq: (bitmap >> _BITS[t]) & 1 for irq, t in irqs.items()}
        elif e.event == "kvm_entry":
            for irq, lvl in level.items():
                if lvl != reported[irq] and irq in changed:
                    out.append(UnreportedEntry(e, changed.pop(irq), irqs[irq], lvl, reported[irq]))
    return out
