"""Layer 1: the L1 kernel's kvm_* tracepoints, carried in "kt" records.

The VMM switches tracefs on per test with trace_clock "mono", so an
event's time is the same CLOCK_MONOTONIC as the records' t_ns. Each event
carries the thread it ran in (tid=, the trace's task column) and the VMM's
"thread" records name each vCPU's thread, so a multi-vCPU test's events split
per vCPU (per_vcpu); kvm_timer_update_irq names its vCPU itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.traces.records import Record

_LINE = re.compile(
    r"^\s*(?P<task>.+?-(?P<tid>\d+))\s+\[(?P<cpu>\d+)\]\s+\S+\s+"
    r"(?P<ts>\d+\.\d+): (?P<ev>\w+): ?(?P<rest>.*)$"
)
_UPDATE = re.compile(r"VCPU: (\d+), IRQ (\d+), level (\d)")
VTIMER_IRQ, PTIMER_IRQ = 27, 30


@dataclass(frozen=True)
class KernelEvent:
    t_ns: int
    event: str
    text: str
    seq: int
    tid: int | None = None  # the thread it ran in (None: not recorded)
    cpu: int | None = None  # the L1 CPU it ran on

    def timer_update(self) -> tuple[int, int, int] | None:
        """(vcpu, irq, level) of a kvm_timer_update_irq event."""
        if self.event != "kvm_timer_update_irq":
            return None
        m = _UPDATE.search(self.text)
        return (int(m[1]), int(m[2]), int(m[3])) if m else None


def parse_record(r: Record) -> KernelEvent | None:
    ts, ev, msg = r.get("ts"), r.get("ev"), r.get("msg", "")
    tid, cpu = r.get("tid"), r.get("cpu")
    if ts is None or ev is None:  # an older or raw form: the trace file's own line
        m = _LINE.match(r.get("line") or r.get("raw") or "")
        if not m:
            return None
        ts, ev, msg, tid, cpu = m["ts"], m["ev"], m["rest"], m["tid"], m["cpu"]
    sec, _, frac = ts.partition(".")
    if not sec.isdigit():
        return None
    t_ns = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
    return KernelEvent(t_ns, ev, msg, r.seq, _id(tid), _id(cpu))


def _id(v: str | None) -> int | None:
    return int(v) if v is not None and v.isdigit() else None


def events(records: list[Record]) -> list[KernelEvent]:
    """The test's kernel events; none when the VMM had to drop some (ktdrop)."""
    if any(r.kind == "ktdrop" for r in records):
        return []
    return [e for r in records if r.kind == "kt" and (e := parse_record(r))]


def vcpu_threads(records: list[Record]) -> dict[int, int]:
    """The VMM's vCPU threads: thread id -> vCPU (its "thread" records)."""
    return {r.int("tid"): r.int("vcpu") for r in records if r.kind == "thread" and r.get("tid")}


# events that run wherever a host timer fires, not in the vCPU's thread
_ANY_CONTEXT = ("kvm_timer_hrtimer_expire",)


def per_vcpu(
    evs: list[KernelEvent], threads: dict[int, int], vcpus: list[int]
) -> dict[int, list[KernelEvent]] | str:
    """Each vCPU's events, in order: those its thread ran (tid in threads), and
    the kvm_timer_update_irq events that name it. An event of no vCPU thread (the
    idle task's, another process's) is left out; kvm_timer_hrtimer_expire (it runs
    in whatever task its host timer interrupts) too. A str says why the events
    cannot be split: no tid recorded (an older VMM), or no thread record for a vCPU."""
    if any(e.tid is None for e in evs):
        return "the kernel's events carry no thread (a VMM older than kt's tid=)"
    missing = sorted(set(vcpus) - set(threads.values()))
    if missing:
        return f"no thread record for vcpu {missing[0]} (the VMM names each vCPU's thread)"
    out: dict[int, list[KernelEvent]] = {v: [] for v in vcpus}
    for e in evs:
        u = e.timer_update()
        if u is not None:
            v = u[0]
        elif e.event in _ANY_CONTEXT:
            continue
        else:
            v = threads.get(e.tid if e.tid is not None else -1, -1)
        if v in out:
            out[v].append(e)
    return out


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
TIMER_BITS = {"vtimer": 0, "ptimer": 1}  # in the level bitmap an exit record shows


def _paired(evs: list[KernelEvent], shown: list[int | None]) -> bool:
    """Does each kvm_userspace_exit have its exit record (the n-th for the n-th)?"""
    return sum(e.event == "kvm_userspace_exit" for e in evs) == len(shown)


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
    n-th kvm_userspace_exit. One vCPU's events (per_vcpu splits a test's). None
    when the returns do not pair up with the exit records."""
    if not _paired(evs, shown):
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
                reported = {irq: (bitmap >> TIMER_BITS[t]) & 1 for irq, t in irqs.items()}
        elif e.event == "kvm_entry":
            for irq, lvl in level.items():
                if lvl != reported[irq] and irq in changed:
                    out.append(UnreportedEntry(e, changed.pop(irq), irqs[irq], lvl, reported[irq]))
    return out


# the host IRQ names of the timers' own interrupts (arch/arm64/kvm/arch_timer.c)
_TIMER_IRQ_NAMES = {"vtimer": "kvm guest vtimer", "ptimer": "kvm guest ptimer"}


@dataclass(frozen=True)
class NoticeCause:
    """What ended the guest run whose return to user space first showed a rise."""

    exit_index: int  # the n-th return to user space (the n-th of the vCPU's exit records)
    timer: str
    cause: str  # "timer" (its own interrupt or background timer), "no-run", "other"
    ended_by: str  # the last kvm_exit of that run, as the kernel printed it
    run_ns: int = 0  # how long that last guest run lasted (kvm_entry to kvm_exit)
    ended_ns: int | None = None  # when that run's last kvm_exit came (CLOCK_MONOTONIC)

    @property
    def stalled(self) -> bool:
        """The run outlasted STALL_NS: no host tick came in it, the host stalled QEMU."""
        return self.run_ns >= STALL_NS


# a guest run this long with no exit had no host tick (HZ=250: one each 4 ms) in it:
# the L1 CPU itself stood still, QEMU's vCPU thread stalled by the host
STALL_NS = 25_000_000


def stalled_runs(evs: list[KernelEvent]) -> list[tuple[int, int]]:
    """One vCPU's guest runs (kvm_entry to the next kvm_exit, in ns) of STALL_NS or
    more, in order: one pass."""
    out, entered = [], None
    for e in evs:
        if e.event == "kvm_entry":
            entered = e.t_ns
        elif e.event == "kvm_exit" and entered is not None:
            if e.t_ns - entered >= STALL_NS:
                out.append((entered, e.t_ns))
            entered = None
    return out


def notice_causes(
    evs: list[KernelEvent],
    timers: tuple[str, ...],
    shown: list[int | None],
    irq_traced: bool,
) -> list[NoticeCause] | None:
    """For each return to user space whose exit record first shows a timer's rise:
    did the timer's own host interrupt (irq_handler_entry of "kvm guest vtimer"),
    or its background timer for a blocked vCPU, come
    during the guest run it ended? "no-run" when the guest did not run since the
    last return (the rise was seen on the way in). None when the returns do not
    pair up with the exit records, or when timer interrupts were not recorded
    (irq_traced: the VMM had irq_handler_entry on; without it the cause
    cannot be told). A blocked vCPU's wake-up (kvm_vcpu_wakeup) counts as the
    timer's: its background timer is what wakes it."""
    if not irq_traced or not _paired(evs, shown):
        return None
    out: list[NoticeCause] = []
    prev = dict.fromkeys(timers, 0)
    ran = False
    seen: set[str] = set()  # timers whose interrupt came during the current run
    last_exit = ""
    entered, run_ns = 0, 0
    ended: int | None = None
    k = 0
    for e in evs:
        if e.event == "kvm_entry":
            ran, seen, last_exit, entered = True, set(), "", e.t_ns
        elif e.event == "kvm_exit":
            last_exit, run_ns, ended = e.text, e.t_ns - entered if ran else 0, e.t_ns
        elif e.event == "irq_handler_entry":
            seen |= {t for t in timers if e.text.endswith(f"name={_TIMER_IRQ_NAMES[t]}")}
        elif e.event in ("kvm_timer_hrtimer_expire", "kvm_vcpu_wakeup"):
            seen |= set(timers)
        elif e.event == "kvm_userspace_exit":
            bitmap = shown[k]
            if bitmap is not None:
                for t in timers:
                    level = (bitmap >> TIMER_BITS[t]) & 1
                    if level and not prev[t]:
                        cause = "timer" if t in seen else ("other" if ran else "no-run")
                        out.append(NoticeCause(k, t, cause, last_exit, run_ns, ended))
                    prev[t] = level
            k += 1
            ran, seen, run_ns, ended = False, set(), 0, None
    return out
