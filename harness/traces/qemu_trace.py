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

KVM restores at a load exactly the CVAL and CTL it saved at that vCPU's
last put, so a put parks (CVAL, CTL's ENABLE/IMASK, level) and the load
whose restore writes match takes its level back: that keeps the vCPUs of a
multi-vCPU VM apart. A new offset whose load restores a parked, non-reset
state of the VM loaded last is that VM's offset changed by user space
(KVM_SET_ONE_REG of the counter, as a save/restore does), not a new VM: a
new VM's vCPUs restore their reset state (0, 0).

With several L1 CPUs every line needs its CPU. QEMU's log backend prefixes
a line with the thread id when run with `-msg timestamp=on`; a vCPU
thread's lines are its CPU's (the thread ids come from QMP's
query-cpus-fast). A timer that fires by itself is recalculated in the main
thread, which first raises the GIC's PPI input: that line just before in
the same thread (GICv3 `gicv3_redist_set_irq`, GICv2 `gic_set_irq`) names
the CPU.
A main-thread line with no such line before it left the level unchanged
and is dropped. State is then kept per CPU; the parked vCPUs stay per VM,
so a vCPU put on one CPU and loaded on the other is followed.

The guest's physical timer (timer 0) is followed too where it is the guest's
own: on a VHE host (the host kernel's tick is a hyp timer, 2 or 4, so the trace
shows one) KVM 6.1 gives the guest the direct ptimer (get_timer_map). Its load
restores CNTP_CVAL and CNTP_CTL right after the virtual timer's, its put writes
CNTP_CTL = 0 between CNTV_CTL = 0 and CNTVOFF = 0, and it has no offset (no
ECV): a rise the counter caused is at CVAL. Its state is parked and taken back
with the vCPU's. On nVHE the host's own tick is timer 0 and KVM emulates the
guest's ptimer with an hrtimer: the VM's ptimer_why says so, and the ptimer
bit is not judged.

For harness/judge/oracle.py, which places the changes on the counter: each change
keeps its line's host time, its vCPU (numbered by first load) and, seen at a
load, the time of the put before, and whether the counter made it while loaded
(a main-thread line, no write's recalc); each VM keeps its vCPUs' puts, each with
the host time of the vCPU thread's last line before it (a guest's timer write, the
load: KVM takes the level it returns to user space between the two) and the
clock's anchors: any
timer's rise at the tick its last recalc waited for, with no write between (a
write's recalc is not the counter's doing; a CTL write that only toggles IMASK
keeps QEMU's deadline), as (tick, host time). For prompt, wake and progress,
each VM keeps the host kernel's ticks (a hyp timer's rise by the counter: its
due tick, when QEMU logged it, and the L1 tick handler's first write of that
timer; on nVHE the physical timer is the host's tick): one taken long after it
was due was held, QEMU not running the L1 CPU. All bounded, in the one pass.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

PHYS, VIRT = 0, 1
HYP_TIMERS = (2, 4)  # EL2's own timers: only a host kernel at EL2 (VHE) uses them

# one match gives every field: the thread id and time (-msg timestamp=on), the
# event, and the numbers of its text (each optional; the first of each is taken)
_LINE = re.compile(
    r"^(?:(?P<tid>\d+)@(?P<ts>\d+\.\d+):)?(?P<event>arm_gt_\w+)(?: |$)"
    r"(?:.*?timer (?P<timer>\d+))?(?:.*?irqstate (?P<irqstate>\d))?"
    r"(?:.*?value (?P<value>0x[0-9a-f]+))?(?:.*?next tick (?P<tick>0x[0-9a-f]+))?"
)
# the GIC lines that name the CPU of a PPI input change: GICv3 gives the
# redistributor's affinity, GICv2 a one-bit CPU mask
_GIC_PPI = re.compile(
    r"^(?:(?P<tid>\d+)@[\d.]+:)?(?:"
    r"gicv3_redist_set_irq .*redistributor 0x(?P<aff>[0-9a-f]+) interrupt (?P<irq3>\d+) |"
    r"gic_set_irq irq (?P<irq2>\d+) level \d cpumask 0x(?P<mask>[0-9a-f]+) )"
)
_TIMER_PPIS = range(26, 31)  # the generic timers' PPIs on the virt board (INTIDs 26-30)
# (the events these lines come from are enabled by harness/boot/qemu_runner.py's
# TRACE_EVENTS_SMP on smp > 1)


class GtEvent(NamedTuple):
    """One arm_gt_* line (a tuple: a storm's trace makes millions)."""

    index: int  # line number in the trace log
    event: str
    timer: int | None
    irqstate: int | None
    value: int | None
    next_tick: int | None
    host_ts: float | None
    cpu: int = 0  # the L1 CPU


@dataclass(frozen=True)
class HwChange:
    """A change of the guest's virtual timer output, as QEMU computed it."""

    level: int
    index: int
    next_tick: int | None  # for a rise: the physical count at which it fired
    while_out: bool  # happened while the vCPU was not loaded (seen at the next load)
    tick: int | None = None  # a rise's physical count: CVAL + offset when the counter caused it
    host_ts: float | None = None  # QEMU's host time of the line (-msg timestamp=on)
    vcpu: int = 0  # the VM's vCPU, numbered in the order of their first loads
    out_since: float | None = None  # while_out: the host time of the put before it
    # made by the counter while loaded (QEMU's main thread, a timer callback), not by
    # a line of the vCPU's thread (a write's recalc, a load's)
    by_main: bool = False


class HostTick(NamedTuple):
    """One of the host kernel's ticks: the counter value it was due at, the host
    time QEMU logged its rise (late when QEMU itself did not run) and that of the
    L1 tick handler's first write of its timer (late when the L1 CPU did not run)."""

    due: int
    rose: float
    taken: float


class Put(NamedTuple):
    """A vCPU's put: its host time, and that of its thread's last line before it (a
    guest's timer write, the load's): KVM took the level it returns to user space
    between the two (on a loaded host the thread may be descheduled ms in between)."""

    at: float
    ran: float


@dataclass(frozen=True)
class _Parked:
    """A vCPU's virtual timer (and physical, when direct) as KVM saved it at a put."""

    cval: int | None  # None: set through TVAL, not known from the trace
    ctl: int  # ENABLE and IMASK
    level: int
    vcpu: int = 0
    put_ts: float | None = None
    p_cval: int | None = 0  # the physical timer's (no offset: its CVAL is a physical count)
    p_ctl: int = 0
    p_level: int = 0


@dataclass
class Progress:
    """How far the trace has been read: shared by the timelines of one trace."""

    last_ts: float | None = None  # the host time of the last line read


@dataclass
class VmTimeline:
    cntvoff: int  # the first offset; offsets lists every one it had
    loads: int = 0
    changes: list[HwChange] = field(default_factory=list)  # the first MAX_CHANGES
    cval_writes: list[int] = field(default_factory=list)  # the first MAX_CVAL_WRITES
    offsets: list[int] = field(default_factory=list)
    parked: list[_Parked] = field(default_factory=list, repr=False)
    rises: int = 0  # every rise, kept in changes or not
    dropped: int = 0  # changes not kept (over MAX_CHANGES)
    # host time of each vCPU's first load (the first MAX_PARKED vCPUs), and of the
    # VM's last line seen: layer 0 is complete up to there
    vcpu_starts: list[float | None] = field(default_factory=list)
    # each vCPU's puts (the VM's first MAX_PUTS): KVM takes the level it returns to
    # user space between its thread's last line and its put, and the puts tie layer
    # 0's vCPUs to the VMM's exits
    puts: list[list[Put]] = field(default_factory=list, repr=False)
    puts_dropped: int = 0
    _nputs: int = field(default=0, repr=False)
    trace: Progress = field(default_factory=Progress, repr=False)
    vcpus: int = 0
    last_ts: float | None = None
    # the clock's anchors while the VM ran (the first MAX_ANCHORS): a timer's rise the
    # counter caused, as (its tick, the host time of the line in microseconds)
    anchors: list[tuple[int, int]] = field(default_factory=list, repr=False)
    # the guest's physical timer (QEMU's timer 0), followed when KVM gives it the
    # hardware one (a VHE host: get_timer_map's direct_ptimer); ptimer_why says why
    # not when it is not (nVHE: KVM emulates it with an hrtimer QEMU never sees)
    pchanges: list[HwChange] = field(default_factory=list)  # the first MAX_CHANGES
    prises: int = 0
    pdropped: int = 0
    ptimer_why: str | None = None
    # the host kernel's ticks while the VM was loaded on their CPU, or (one L1 CPU)
    # was the last loaded (the first MAX_HOST_TICKS): one taken much later than it
    # was due was held, QEMU not running the L1 CPU (judge/properties/held.py)
    host_ticks: list[HostTick] = field(default_factory=list, repr=False)

    def add_pchange(self, c: HwChange) -> None:
        self.prises += c.level == 1
        if len(self.pchanges) < MAX_CHANGES:
            self.pchanges.append(c)
        else:
            self.pdropped += 1

    def no_ptimer(self, why: str) -> None:
        if self.ptimer_why is None:
            self.ptimer_why = why

    def add_change(self, c: HwChange) -> None:
        self.rises += c.level == 1
        if len(self.changes) < MAX_CHANGES:
            self.changes.append(c)
        else:
            self.dropped += 1

    def add_host_tick(self, tick: HostTick) -> None:
        if len(self.host_ticks) < MAX_HOST_TICKS:
            self.host_ticks.append(tick)

    def add_anchor(self, tick: int, us: int) -> None:
        if len(self.anchors) < MAX_ANCHORS:
            self.anchors.append((tick, us))

    def add_put(self, vcpu: int, host_ts: float | None, ran: float | None = None) -> None:
        self.last_ts = host_ts
        if host_ts is None or vcpu >= MAX_PARKED:
            return
        while len(self.puts) <= vcpu:
            self.puts.append([])
        if self._nputs < MAX_PUTS:
            self.puts[vcpu].append(Put(host_ts, host_ts if ran is None else min(ran, host_ts)))
            self._nputs += 1
        else:
            self.puts_dropped += 1

    def add_cval_write(self, value: int) -> None:
        if len(self.cval_writes) < MAX_CVAL_WRITES:
            self.cval_writes.append(value)

    def park(self, p: _Parked) -> None:
        self.parked.append(p)
        if len(self.parked) > MAX_PARKED:
            del self.parked[0]  # a vCPU never loaded again (or not recognised)

    def unpark(self, cval: int | None, ctl: int) -> _Parked | None:
        """The parked vCPU whose state a load restores (one parked: that one,
        unless the load restores the reset state of a vCPU's first load)."""
        for p in self.parked:
            if p.cval == cval and p.ctl == ctl:
                break
        else:
            if (cval, ctl) == (0, 0):
                return None  # a vCPU's first load: its reset state
            candidates = [p for p in self.parked if p.cval is None and p.ctl == ctl]
            if len(self.parked) == 1:
                candidates = self.parked
            if not candidates:
                return None
            p = candidates[0]
        self.parked.remove(p)
        return p

    def edges(self) -> int:
        return self.rises

    def pedges(self) -> int | None:
        """The physical timer's rises; None when layer 0 does not follow it."""
        return None if self.ptimer_why is not None else self.prises


def parse_line(line: str, index: int) -> GtEvent | None:
    m = _LINE.match(line.strip())
    return _event(m, index) if m else None


def _event(m: re.Match, index: int, cpu: int = 0) -> GtEvent:
    _tid, ts, event, timer, irqstate, value, tick = m.groups()
    return GtEvent(
        index,
        event,
        None if timer is None else int(timer),
        None if irqstate is None else int(irqstate),
        None if value is None else int(value, 16),
        None if tick is None else int(tick, 16),
        None if ts is None else float(ts),
        cpu,
    )


class CpuOf:
    """Gives each line its L1 CPU (see the module docstring).

    threads maps a vCPU thread id to its CPU index; None for one CPU, where
    every line is CPU 0's. The GICv3 redistributor's affinity is the CPU
    index (true of the virt board's flat topology). event() is None for a
    line that is no arm_gt_* event or whose CPU is not known."""

    def __init__(self, threads: dict[int, int] | None = None) -> None:
        self.threads = threads
        self._gic: dict[int | None, int] = {}  # the CPU of a thread's PPI line just before

    def event(self, line: str, index: int) -> GtEvent | None:
        if self.threads is None:
            return parse_line(line, index)
        if g := _GIC_PPI.match(line):
            tid = int(g["tid"]) if g["tid"] else None
            if g["aff"] is not None:
                irq, cpu = int(g["irq3"]), int(g["aff"], 16)
            else:
                irq, cpu = int(g["irq2"]), int(g["mask"], 16).bit_length() - 1
            if irq in _TIMER_PPIS:
                self._gic[tid] = cpu
            return None
        m = _LINE.match(line.strip())
        if not m:
            return None
        tid = int(m["tid"]) if m["tid"] else None
        before = self._gic.pop(tid, None)
        cpu = self.threads.get(tid, before)  # a vCPU thread's, else the GIC line's
        if cpu is None:
            return None  # a main-thread line that changed nothing: no CPU, dropped
        return _event(m, index, cpu)


def parse(lines: Iterable[str], threads: dict[int, int] | None = None) -> list[GtEvent]:
    cpu_of = CpuOf(threads)
    events = (cpu_of.event(line, i) for i, line in enumerate(lines, 1))
    return [e for e in events if e is not None]


_EMULATED = (
    "the host runs at EL1 (no hyp timer in QEMU's trace: nVHE), so KVM emulates the "
    "guest's physical timer with an hrtimer, which QEMU's trace does not show"
)
_NO_RESTORE = "the vCPU load at QEMU trace line {} restored no physical timer (CNTP_CVAL, CNTP_CTL)"
_NEVER = (1 << 64) - 1  # QEMU's next tick for a timer that will not fire

# what layer 0 keeps per VM: a storming kernel makes millions of changes; the
# counts stay exact, the lists keep the first ones (dropped says how many not)
MAX_CHANGES = 20_000
MAX_CVAL_WRITES = 20_000
MAX_ANCHORS = 4096
MAX_HOST_TICKS = 16384  # 65 s of a 250 Hz tick
MAX_PUTS = 20_000  # put times kept per VM
RECENT_ANCHORS = 64  # anchors from before its first load a VM starts with
MAX_PARKED = 16  # parked vCPU states per VM (a VM has at most 4 vCPUs)
# events held on one CPU while a load's restore writes or a put are still to
# come: KVM writes them within a few events; past this the decision is taken
MAX_HELD = 256


class _RestoreScan:
    """The (CVAL, CTL & 3) a load restores: its CPU's next two timer-1 CVAL/CTL
    writes, before the next CNTVOFF write."""

    def __init__(self) -> None:
        self.cval: int | None = None
        self.ctl = 0
        self.seen = 0

    def see(self, e: GtEvent) -> bool:
        """Take the next event of the CPU; True once the answer is known."""
        if e.event == "arm_gt_cntvoff_write":
            return True
        if e.timer != VIRT or e.event not in ("arm_gt_cval_write", "arm_gt_ctl_write"):
            return False
        if e.event == "arm_gt_cval_write":
            self.cval = e.value
        else:
            self.ctl = (e.value or 0) & 3
        self.seen += 1
        return self.seen == 2


class _PutScan:
    """Is a CTL=0 write KVM's save, i.e. followed by CNTVOFF=0 before another
    timer-1 write? The put saves the other timers in between (the physical one,
    the hyp timer it arms for a blocked vCPU): those do not count."""

    def __init__(self) -> None:
        self.put = False
        self.virt = 0

    def see(self, e: GtEvent) -> bool:
        if e.event == "arm_gt_cntvoff_write":
            self.put = not e.value
            return True
        if e.timer != VIRT:
            return False
        if e.event in ("arm_gt_ctl_write", "arm_gt_cval_write", "arm_gt_tval_write"):
            return True
        self.virt += 1
        return self.virt >= 5


_WRITES = ("arm_gt_cval_write", "arm_gt_ctl_write", "arm_gt_tval_write")


@dataclass
class _Cpu:
    """What one L1 CPU has loaded (see Builder), and its load and put."""

    current: VmTimeline | None = None
    level: int = 0  # the loaded vCPU's line as of its last observation while loaded
    restoring: int = 0  # restore writes still to come after a load
    pending_put: GtEvent | None = None
    cval: int | None = 0  # the loaded vCPU's timer state, as written
    ctl: int = 0
    offset: int = 0  # the CNTVOFF in force
    vcpu: int = 0  # the loaded vCPU (VmTimeline numbering)
    out_since: float | None = None  # the host time of the loaded vCPU's last put
    wrote: bool = False  # the guest's last timer-1 event was a write
    recalc_seen: bool = False  # a timer-1 level event since the CPU's last CNTVOFF write
    # an event whose meaning depends on the CPU's events after it, and those events
    deferred: GtEvent | None = None
    scan: _RestoreScan | _PutScan | None = None
    held: list[GtEvent] = field(default_factory=list)
    armed: dict[int, int] = field(default_factory=dict)  # timer -> the tick it waits for
    written: set[int] = field(default_factory=set)  # timers whose next level event a write made
    # the loaded vCPU's physical timer, when direct (see _PhysTimer)
    p_level: int = 0
    p_cval: int | None = 0
    p_ctl: int = 0
    p_restoring: int = 0  # KVM's restore writes (CVAL, CTL) still to come after a load
    p_restored: bool = False  # the restore's last write was the CPU's last timer-0 event
    p_wrote: bool = False
    load_index: int = 0  # the trace line of the load
    ran: float | None = None  # the host time of the loaded vCPU thread's last line
    # the host tick's rise not yet taken (its handler has not written the timer), and
    # the VM loaded then
    tick_due = 0  # its tick (the counter value it was due at)
    tick_since: float | None = None
    tick_vm: VmTimeline | None = None

    def load(self, vm: VmTimeline, e: GtEvent, r_cval: int | None, r_ctl: int, el2: bool) -> None:
        """vm's vCPU loaded by e (its CNTVOFF write), restoring (r_cval, r_ctl): the
        parked vCPU whose state that is, or a new vCPU; el2: the host runs at EL2."""
        assert e.value is not None
        self.current = vm
        parked = vm.unpark(r_cval, r_ctl)
        if parked is None:  # a vCPU's first load
            self.vcpu, self.out_since = vm.vcpus, None
            vm.vcpus += 1
            if len(vm.vcpu_starts) < MAX_PARKED:
                vm.vcpu_starts.append(e.host_ts)
        else:
            self.vcpu, self.out_since = parked.vcpu, parked.put_ts
        vm.last_ts = e.host_ts
        self.offset, self.wrote, self.restoring, self.pending_put = e.value, False, 2, None
        self.level = parked.level if parked else 0
        self.cval, self.ctl = r_cval, r_ctl
        self.p_level = parked.p_level if parked else 0
        self.p_cval, self.p_ctl = (parked.p_cval, parked.p_ctl) if parked else (0, 0)
        self.p_restored = self.p_wrote = False
        self.load_index = e.index
        self.ran = e.host_ts
        if not el2:
            vm.no_ptimer(_EMULATED)
        self.p_restoring = 0 if vm.ptimer_why is not None else 2

    def put(self, e: GtEvent) -> None:
        """KVM's put (e: its CNTVOFF=0 write): park the loaded vCPU's state."""
        vm = self.current
        if vm is not None:
            if self.p_restoring:
                vm.no_ptimer(_NO_RESTORE.format(self.load_index))
            vm.park(
                _Parked(self.cval, self.ctl, self.level, self.vcpu, e.host_ts, self.p_cval,
                        self.p_ctl, self.p_level)
            )  # fmt: skip
            vm.add_put(self.vcpu, e.host_ts, self.ran)
        self.current = None


class _Anchors:
    """The clock's anchors. A timer (any of the CPU's) that rises at the tick its last
    recalc waited for, not in a write's recalc: the counter caused it, at that tick,
    and the line's host time is when QEMU saw it: an anchor of the host clock to the
    counter. A CTL write that only toggles IMASK keeps QEMU's deadline."""

    def __init__(self) -> None:
        # the latest anchors: a new VM starts with them (the L1 kernel's own timers
        # tick between tests; a test may have no anchor of its own)
        self.recent: deque[tuple[int, int]] = deque(maxlen=RECENT_ANCHORS)

    def see(self, c: _Cpu, e: GtEvent) -> tuple[int, int] | None:
        """Each event of the CPU c, once, in trace order: (tick, host us) for an anchor."""
        if e.event in _WRITES:
            c.written.add(e.timer or 0)
            return None
        if e.event == "arm_gt_cntvoff_write":
            c.written.update((VIRT, 4))
            return None
        if e.timer is None or e.irqstate is None:
            return None
        wrote = e.timer in c.written
        c.written.discard(e.timer)
        if e.event == "arm_gt_imask_toggle":
            return None
        if e.irqstate == 0 and e.next_tick is not None and e.next_tick < _NEVER:
            c.armed[e.timer] = e.next_tick
        elif wrote or e.irqstate == 0:
            c.armed.pop(e.timer, None)
        elif e.timer in c.armed and e.host_ts is not None:
            anchor = (c.armed.pop(e.timer), round(e.host_ts * 1e6))
            self.recent.append(anchor)
            return anchor
        return None


class _Vms:
    """The trace's VMs by offset (a VM may have had several), in the order they first
    ran: which VM a load's offset is (see the module docstring)."""

    def __init__(self, progress: Progress, recent: Iterable[tuple[int, int]]) -> None:
        self.by_offset: dict[int, VmTimeline] = {}
        self.order: list[VmTimeline] = []
        self.last: VmTimeline | None = None  # the VM loaded last
        self._progress = progress
        self._recent = recent

    def of_load(self, offset: int, r_cval: int | None, r_ctl: int) -> VmTimeline:
        """The VM a load of offset restoring (r_cval, r_ctl) is: a known offset's; the
        last VM's, its offset set by user space, when it restores a parked, non-reset
        state of it; else a new VM, which starts with the latest anchors."""
        vm = self.by_offset.get(offset)
        if vm is None:
            last = self.last
            if (
                last is not None
                and (r_cval, r_ctl) != (0, 0)
                and any(p.cval == r_cval and p.ctl == r_ctl for p in last.parked)
            ):
                vm = last  # the same VM, its offset set by user space
            else:
                vm = VmTimeline(offset, trace=self._progress)
                vm.anchors.extend(self._recent)
                self.order.append(vm)
            self.by_offset[offset] = vm
            vm.offsets.append(offset)
        vm.loads += 1
        self.last = vm
        return vm


Handle = Callable[[_Cpu, GtEvent, "_RestoreScan | _PutScan | None"], None]


class _Lookahead:
    """Holds a CPU's events while an event's meaning depends on what the CPU does
    next (a load's restore writes, whether a CTL=0 write is KVM's put), then hands
    the event, with what was found, and the held ones to handle, in order. Bounded
    (MAX_HELD): the work stays linear in the trace."""

    def __init__(self, handle: Handle) -> None:
        self._handle = handle

    def feed(self, c: _Cpu, e: GtEvent) -> None:
        if c.scan is not None:
            c.held.append(e)
            if c.scan.see(e) or len(c.held) >= MAX_HELD:
                self.resolve(c)
            return
        if (scan := self._needs_scan(c, e)) is not None:
            c.deferred, c.scan = e, scan
            return
        self._handle(c, e, None)

    def resolve(self, c: _Cpu) -> None:
        e, scan, held = c.deferred, c.scan, c.held
        c.deferred, c.scan, c.held = None, None, []
        assert e is not None
        self._handle(c, e, scan)
        for later in held:
            self.feed(c, later)

    def finish(self, cpus: Iterable[_Cpu]) -> None:
        """The trace ended: decide what is still held with what is known."""
        for c in cpus:
            while c.scan is not None:
                self.resolve(c)

    @staticmethod
    def _needs_scan(c: _Cpu, e: GtEvent) -> _RestoreScan | _PutScan | None:
        if e.event == "arm_gt_cntvoff_write":
            return _RestoreScan() if e.value else None
        if c.current is None or e.timer != VIRT or c.restoring:
            return None
        if e.event == "arm_gt_ctl_write" and e.value == 0:
            return _PutScan()
        return None


class _VirtTimer:
    """The loaded vCPU's virtual timer (QEMU's timer 1): the guest's writes (not KVM's
    restore and save), and the level changes QEMU computes."""

    @staticmethod
    def write(c: _Cpu, e: GtEvent, put: bool) -> None:
        assert c.current is not None
        if not put:
            c.ran = e.host_ts  # the vCPU thread's line (the guest's, or the load's)
        if c.restoring and e.event != "arm_gt_tval_write":
            c.restoring -= 1
            return
        if c.p_restoring:  # the guest runs: the physical timer's restore never came
            c.current.no_ptimer(_NO_RESTORE.format(c.load_index))
        if put:
            c.pending_put = e  # KVM saving the timer: not a guest change
            return
        if e.event == "arm_gt_cval_write" and e.value is not None:
            c.current.add_cval_write(e.value)
            c.cval = e.value
        elif e.event == "arm_gt_tval_write":
            c.cval = None
        elif e.value is not None:
            c.ctl = e.value & 3
        c.pending_put = None
        c.wrote = True

    @staticmethod
    def level(c: _Cpu, e: GtEvent, loaded_first: bool) -> None:
        """A level event; loaded_first: the CPU's first since its load."""
        assert c.current is not None
        if e.irqstate is None or c.pending_put is not None:
            return  # no level, or the recalc of KVM's save write
        hw = e.irqstate
        if c.restoring == 0 and hw != c.level:
            # first recalc after the restore: a change while out, else a change in the guest
            by_counter = hw == 1 and c.cval is not None and (loaded_first or not c.wrote)
            tick = c.cval + c.offset if by_counter and c.cval is not None else None
            out_since = c.out_since if loaded_first else None
            main = not loaded_first and not c.wrote
            c.current.add_change(
                HwChange(hw, e.index, e.next_tick, loaded_first, tick, e.host_ts, c.vcpu, out_since,
                         main)
            )  # fmt: skip
            c.level = hw
        if c.restoring == 0:
            c.wrote = False


class _PhysTimer:
    """The guest's physical timer, direct on a VHE host: KVM restores it right after
    the virtual one at a load (CNTP_CVAL, CNTP_CTL) and saves it at the put between
    CNTV_CTL=0 and CNTVOFF=0 (CNTP_CTL=0). It has no offset. As for the virtual
    timer, the first level after the restore that differs from the one parked at the
    put is a change while out; a rise at the CVAL the last recalc waited for (no
    write between) is the counter's, at tick CVAL."""

    @staticmethod
    def see(c: _Cpu, e: GtEvent) -> None:
        vm = c.current
        assert vm is not None
        if c.pending_put is None and e.event in _WRITES:
            c.ran = e.host_ts  # the vCPU thread's line (the guest's, or the load's)
        if vm.ptimer_why is not None or c.pending_put is not None:
            return  # not followed, or KVM's save at the put
        if e.event in _WRITES:
            if e.event == "arm_gt_cval_write":
                c.p_cval = e.value
            elif e.event == "arm_gt_tval_write":
                c.p_cval = None
            elif e.value is not None:
                c.p_ctl = e.value & 3
            c.p_restored = c.p_restoring == 1
            c.p_wrote = not c.p_restoring
            c.p_restoring = max(0, c.p_restoring - 1)
            return
        if e.irqstate is None or c.p_restoring:
            return  # no level, or a recalc amid the restore
        out = c.p_restored
        c.p_restored = False
        hw = e.irqstate
        if hw != c.p_level:
            by_counter = hw == 1 and c.p_cval is not None and (out or not c.p_wrote)
            tick = c.p_cval if by_counter else None
            since = c.out_since if out else None
            main = not out and not c.p_wrote
            vm.add_pchange(
                HwChange(hw, e.index, e.next_tick, out, tick, e.host_ts, c.vcpu, since, main)
            )
            c.p_level = hw
        c.p_wrote = False


class Builder:
    """VM timelines from arm_gt_* events in one pass (see the module docstring).

    feed() takes events in trace order. Where an event's meaning depends on
    what its CPU does next (a load's restore writes, whether a CTL=0 write is
    KVM's put), the CPU's events are held until that is known (_Lookahead): a
    bounded look-ahead, so the work is linear in the trace and the memory
    bounded. Each event then goes to its CPU's load or put (_Cpu, the VM from
    _Vms), or to the loaded vCPU's timer (_VirtTimer, _PhysTimer); the clock's
    anchors (_Anchors) see every event once, as fed."""

    def __init__(self) -> None:
        self._cpus: dict[int, _Cpu] = {}
        self.progress = Progress()
        self.host_el2 = False  # a hyp timer seen: the host kernel runs at EL2 (VHE)
        self._anchors = _Anchors()
        self._vms = _Vms(self.progress, self._anchors.recent)
        self._ahead = _Lookahead(self._handle)

    @property
    def vms(self) -> dict[int, VmTimeline]:
        return self._vms.by_offset

    @property
    def order(self) -> list[VmTimeline]:
        return self._vms.order

    @property
    def last(self) -> VmTimeline | None:
        return self._vms.last

    def feed(self, e: GtEvent) -> None:
        c = self._cpus.setdefault(e.cpu, _Cpu())
        if e.host_ts is not None:
            self.progress.last_ts = e.host_ts
        if e.timer in HYP_TIMERS:
            self.host_el2 = True
        if (anchor := self._anchors.see(c, e)) is not None:  # once per event, in trace order
            self._add_anchor(anchor)
            if self._host_tick(e) and c.tick_since is None:
                # the VM loaded on the CPU; with one L1 CPU, the VM in use, loaded or out
                out = self._vms.last if len(self._cpus) == 1 else None
                c.tick_due, c.tick_since, c.tick_vm = anchor[0], e.host_ts, c.current or out
        elif self._host_tick(e) and e.event in _WRITES and c.tick_since is not None:
            self._tick_taken(c, e)
        self._ahead.feed(c, e)

    def _host_tick(self, e: GtEvent) -> bool:
        """e is the host kernel's tick timer's: a hyp timer (VHE), else (nVHE, no hyp
        timer seen) the physical one, which KVM then never gives the guest."""
        return e.timer in HYP_TIMERS or (e.timer == PHYS and not self.host_el2)

    @staticmethod
    def _tick_taken(c: _Cpu, e: GtEvent) -> None:
        """The host tick's handler wrote its timer (e): the VM keeps the tick (whether
        it was held is the clock's to say: QEMU may log the rise late too)."""
        since, vm = c.tick_since, c.tick_vm
        c.tick_since = c.tick_vm = None
        if vm is not None and since is not None and e.host_ts is not None:
            vm.add_host_tick(HostTick(c.tick_due, since, e.host_ts))

    def _add_anchor(self, anchor: tuple[int, int]) -> None:
        """To every VM loaded on a CPU, and the VM loaded last."""
        vms = {id(x.current): x.current for x in self._cpus.values() if x.current}
        if self._vms.last is not None:
            vms[id(self._vms.last)] = self._vms.last
        for vm in vms.values():
            vm.add_anchor(*anchor)

    def finish(self) -> list[VmTimeline]:
        """The trace ended: decide what is still held with what is known."""
        self._ahead.finish(self._cpus.values())
        return self.order

    def _handle(self, c: _Cpu, e: GtEvent, scan: _RestoreScan | _PutScan | None) -> None:
        """e, its meaning known (scan: what the look-ahead found, if it was needed)."""
        loaded_first = not c.recalc_seen  # no level event since this CPU's last load
        if e.event == "arm_gt_cntvoff_write":
            c.recalc_seen = False
            if isinstance(scan, _RestoreScan):
                assert e.value is not None
                vm = self._vms.of_load(e.value, scan.cval, scan.ctl)
                c.load(vm, e, scan.cval, scan.ctl, self.host_el2)
            else:
                c.put(e)
            return
        if e.timer == VIRT and e.irqstate is not None and e.event != "arm_gt_recalc_disabled":
            c.recalc_seen = True
        if c.current is None:
            return
        c.current.last_ts = e.host_ts
        if e.timer == PHYS:
            _PhysTimer.see(c, e)
        elif e.timer != VIRT:
            return
        elif e.event in _WRITES:
            _VirtTimer.write(c, e, isinstance(scan, _PutScan) and scan.put)
        else:
            _VirtTimer.level(c, e, loaded_first)


def timelines(events: Iterable[GtEvent]) -> list[VmTimeline]:
    """One timeline per VM, in the order the VMs first ran."""
    b = Builder()
    for e in events:
        b.feed(e)
    return b.finish()


class Growing(Protocol):
    """A trace log still being written (boot/channels.py's TraceFile)."""

    kept: int  # bytes of it that count so far (what QEMU wrote, to the log's bound)

    def look(self) -> int: ...  # kept, looked at now

    def wait(self, seen: int, timeout: float) -> bool: ...


class Reader:
    """Follows a growing trace log: parses only what was appended since the last
    call, in bounded blocks, and keeps the timelines, not the events. With the log's
    writer (growing), wait_more() sleeps until more of it is written."""

    BLOCK = 4 << 20

    def __init__(
        self, path: Path, threads: dict[int, int] | None = None, growing: Growing | None = None
    ) -> None:
        self.path = path
        self.growing = growing
        self._cpu_of = CpuOf(threads)
        self._builder = Builder()
        self._pos = 0  # bytes of the log read
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._seen = 0  # the writer's byte count when the log was last read
        self.lines = 0  # trace lines read so far
        self.events = 0  # arm_gt_* events among them

    def timelines(self) -> list[VmTimeline]:
        end = None  # the whole log, or as much of it as the writer says counts
        if self.growing is not None:
            self._seen = end = self.growing.look()  # all of that is read below
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                while True:
                    n = self.BLOCK if end is None else min(self.BLOCK, end - self._pos)
                    chunk = f.read(n) if n > 0 else b""
                    if not chunk:
                        break
                    self._pos += len(chunk)
                    self._take(self._decoder.decode(chunk))
        except OSError:
            pass
        return self._builder.order

    def wait_more(self, timeout: float) -> bool:
        """Sleep until the log grows past what timelines() read (False: it did not
        within timeout, or it is complete)."""
        if self.growing is None:
            return False
        return self.growing.wait(self._seen, max(0.0, timeout))

    def _take(self, chunk: str) -> None:
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next call
        for line in lines:
            self.lines += 1
            e = self._cpu_of.event(line, self.lines)
            if e is not None:
                self.events += 1
                self._builder.feed(e)
