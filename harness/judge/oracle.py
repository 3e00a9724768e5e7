"""The architectural timer output (ENABLE && !IMASK && CVAL <= counter) as a
function of the L1 physical counter, from layer 0, judged at every VMM exit: the
virtual timer (bit 0 of the level an exit shows), and the physical timer (bit 1)
where layer 0 follows it (the guest's own hardware timer on a VHE host; its CVAL is
a physical count, with no offset).

Layer 0's lines carry QEMU's host time (-msg timestamp=on), not a counter value.
In TCG without icount the counter is QEMU's virtual clock, which runs at host
speed: host time maps to the counter by one offset. A rise the counter caused
happened at its tick (CVAL + offset) and QEMU logged it at its host time a
little later (its timer callback's latency): each such rise, of any timer the
trace shows while the VM ran (qemu_trace's anchors), gives the offset up to that
latency; the median is the estimate, its spread says how well they agree.

Each hardware change then gets an interval of counter values where it happened:
exactly its tick for a rise the counter caused while the vCPU was out (KVM
computes an unloaded timer's level from CVAL and the counter); from its tick to
QEMU's line for one while loaded (KVM reads QEMU's ISTATUS, which QEMU updates
at its line); its line's counter for a change a write made; and from the put to
the load for a change seen at a load with no tick. At an exit, the level is that
after the last change before exit.cnt; a change within the tolerance of
exit.cnt (BEFORE it, AFTER it) may go either way. KVM took the level it showed
somewhere between its vCPU thread's last line before the put (the guest's write,
the load) and the put: a change the counter made in between may go either way,
one the vCPU thread's line made stays certain (see judge_vcpu).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from harness.traces.qemu_trace import HwChange, VmTimeline
from harness.traces.test_trace import Exit, TestTrace

DEFAULT_FREQ = 62_500_000  # QEMU virt's CNTFRQ
# Ticks (16 ns) a change may lie from an exit's cnt and go either way.
# An exit's level was taken before its vCPU's put just before cnt, after the vCPU
# thread's last line before that put: layer 0 has both (see judge_vcpu). The VMM
# reads cnt 40-100 us after the put on 90% of the exits of the boots measured, but
# up to 8.6 ms on a loaded host (its thread preempted), so the put, not cnt, bounds
# the window; the host may as well deschedule the thread between the guest's exit
# and the put (11 ms seen in a loaded make test), so a change the counter made
# after the thread's last line may go either way. BEFORE is for an exit with no put
# known: a change up to this long before cnt may not show yet.
BEFORE = DEFAULT_FREQ // 1000
# IRQ_LAG: KVM learns a rise the counter caused while the vCPU ran from the
# timer's interrupt, not at the put: on two L1 CPUs under host load an exit's put
# came up to 266 us after QEMU's rise with the old level (measured over 20 boots
# of every revision; on one CPU none over 10 us). 1 ms leaves room.
IRQ_LAG = DEFAULT_FREQ // 1000
# OUT_LAG: a rise the counter caused while the vCPU was out is KVM's at a load;
# in a loaded nightly (two boots at once) an exit 264 us after such a rise's tick
# still showed the old level (v6 and upstream smp2 mmio_spin, once each in 24
# cells), so exits this close after it may show either level.
OUT_LAG = DEFAULT_FREQ // 500  # 2 ms
# AFTER: a change placed by the clock up to this long after cnt may have come
# before it: the estimate's error (see host_clock: the least-late anchors agree
# within ~15 us on one L1 CPU, ~70 us on two with few anchors); MAX_SPREAD bounds
# the spread judged. A change at its exact tick needs none.
AFTER = DEFAULT_FREQ // 5000  # 200 us
STEP_RUN = 8  # anchors on either side of a step of the clock (see _step)
# an exit's put lies this close before its cnt when it is its own (vCPU matching)
MATCH = DEFAULT_FREQ // 5000  # 200 us
# the least-late anchors' spread past which one offset is not believed (the VM
# stopped and resumed, the host clock stepped): ticks
MAX_SPREAD = DEFAULT_FREQ // 10000  # 100 us


@dataclass(frozen=True)
class HostClock:
    """Host microseconds to counter ticks: tick = us * freq / 1e6 + offset."""

    offset: int
    anchors: int
    spread: int  # how far the next tenth of the least-late anchors lies below it, ticks
    freq: int = DEFAULT_FREQ
    step: int = 0  # the largest step of the offset in the anchors' time order, ticks

    def tick(self, host_ts: float) -> int:
        return round(host_ts * 1e6) * self.freq // 1_000_000 + self.offset

    def describe(self) -> str:
        us = self.spread * 1e6 / self.freq
        return f"{self.anchors} clock anchors, the least late agreeing within {us:.1f} us"


def host_clock(vm: VmTimeline, freq: int = DEFAULT_FREQ) -> HostClock | None:
    """The offset from the anchors QEMU logged soonest after their tick.

    An anchor's offset is the true one less its latency (QEMU logs a rise at or
    after its tick), so the true offset is the anchors' upper envelope. Under host
    load the median anchor is milliseconds late (measured: the median latency up
    to 4 ms on a loaded host, the least-late tenth within ~13 us of the least).
    The estimate is the offset a tenth of the way down (a stray anchor above the
    rest does not move it); its spread is how far the next tenth lies below it."""
    in_order = [tick - us * freq // 1_000_000 for tick, us in vm.anchors]
    offsets = sorted(in_order, reverse=True)
    if not offsets:
        return None
    k = len(offsets) // 10
    nxt = offsets[min(len(offsets) - 1, k + max(1, k))]
    # an anchor far above the estimate is stray (no rise is logged before its tick)
    kept = [o for o in in_order if o <= offsets[k] + MAX_SPREAD]
    return HostClock(offsets[k], len(offsets), offsets[k] - nxt, freq, _step(kept))


def _step(offsets: list[int]) -> int:
    """The largest step of the anchors' upper envelope, in trace order: a stopped
    VM's counter falls behind host time by the pause (later anchors all lower), a
    stepped host clock moves them all. Between the anchors before and after each
    point (at least STEP_RUN on either side), the difference of their maxima: a
    host-load spell makes a few anchors late, not all after a point. Linear."""
    n, run = len(offsets), STEP_RUN
    if n < 2 * run:
        return 0
    suffix = list(itertools.accumulate(reversed(offsets), max))[::-1]
    prefix = list(itertools.accumulate(offsets, max))
    return max(abs(prefix[i - 1] - suffix[i]) for i in range(run, n - run + 1))


@dataclass(frozen=True)
class Placed:
    """A hardware change on the counter: it happened within [lo, hi]."""

    change: HwChange
    lo: int
    hi: int
    exact: bool = False  # at its tick, not placed by the clock
    timer: str = "vtimer"

    def shown_by(self) -> int:
        """The counter value after which KVM has certainly taken it: its hi, and for
        a rise the counter caused, IRQ_LAG later while loaded (KVM learns it from
        the timer's interrupt), OUT_LAG while out (at a load)."""
        c = self.change
        if c.level == 1 and c.tick is not None:
            return self.hi + (OUT_LAG if c.while_out else IRQ_LAG)
        return self.hi

    def earliest(self) -> int:
        """The earliest cnt of an exit that may show it: it may lie before its lo by
        the clock's error, unless at its exact tick."""
        return self.lo if self.exact else self.lo - AFTER

    def describe(self) -> str:
        c = self.change
        name = "ptimer " if self.timer == "ptimer" else ""
        how = "by the counter" if c.tick is not None else "by a write"
        when = "while the vCPU was out, seen at the load" if c.while_out else "while loaded"
        at = f"cnt {self.lo:x}" if self.lo == self.hi else f"cnt {self.lo:x}..{self.hi:x}"
        what = "rise" if c.level else "fall"
        if not c.index:
            return f"the {name}rise at CVAL after QEMU's trace ends (the state KVM saved, {at})"
        return f"the {name}{what} at QEMU trace line {c.index} ({how}, {when}, {at})"


def place(c: HwChange, clock: HostClock | None, timer: str = "vtimer") -> Placed | None:
    """The counter interval of a change; None when it cannot be placed."""
    if c.host_ts is None or clock is None:
        return None
    seen = clock.tick(c.host_ts)
    since = clock.tick(c.out_since) if c.out_since is not None else None
    if c.while_out:
        lo = since if since is not None else seen
        if c.tick is not None and lo - AFTER <= c.tick <= seen + AFTER:
            return Placed(c, c.tick, c.tick, exact=True, timer=timer)
        return Placed(c, min(lo, seen), seen, timer=timer)
    if c.tick is not None:
        return Placed(c, min(c.tick, seen), max(c.tick, seen), timer=timer)
    return Placed(c, seen, seen, timer=timer)


@dataclass(frozen=True)
class Mismatch:
    exit: Exit
    shown: int
    level: int  # the architectural level at the exit
    cause: Placed | None  # the change that set it (None: the reset level, 0)
    timer: str = "vtimer"


def judge_vcpu(
    exits: Sequence[Exit],
    placed: Sequence[Placed],
    puts: Sequence[tuple[int, int]],
    bit: int,
) -> Mismatch | None:
    """The first exit (in cnt order) whose shown bit is no level the oracle allows.

    puts are (put, ran) in counter order: the put and its vCPU thread's last line
    before it. KVM took the level between the two (the guest exited after its
    line; the host may deschedule the thread for milliseconds before the put), the
    VMM read cnt after the put (on a loaded host up to milliseconds later): a change
    the counter made (by_main) from ran, or any change from the put (each less the
    clock's error), to cnt may go either way; a change a vCPU-thread line made
    before the put stays certain; with no put, from cnt - BEFORE. Where the last
    put may be the vCPU's next run's, the exit may show what the window of the
    put before it allows, too (_own_put). Three pointers over exits, puts and
    changes (all in counter order): linear, plus the changes within each exit's
    window."""
    settled = 0  # changes certainly shown by the exit
    put = 0  # puts up to the exit's cnt
    ordered = sorted((e for e in exits if e.cnt is not None), key=_cnt)
    for i, e in enumerate(ordered):
        if e.level is None:
            continue
        cnt = _cnt(e)
        while put < len(puts) and puts[put][0] <= cnt + AFTER:
            put += 1
        nxt = _run_start(ordered[i + 1]) if i + 1 < len(ordered) else None
        first = _own_put(puts, put, cnt, nxt)
        taken, ran = (puts[put - 1][0] - AFTER, puts[put - 1][1] - AFTER) if put else (
            cnt - BEFORE, cnt - BEFORE)  # fmt: skip
        settled, w = _window(placed, settled, ran, taken, cnt)
        if first != put - 1:  # the exit's own put may be an earlier one: its levels too
            own = (puts[first][0] - AFTER, puts[first][1] - AFTER) if first >= 0 else (
                cnt - BEFORE, cnt - BEFORE)  # fmt: skip
            earlier = _window(placed, settled, own[1], own[0], cnt)[1]
            w = _Window(w.allowed | earlier.allowed, w.level, w.cause)
        shown = (e.level or 0) >> bit & 1
        if shown not in w.allowed:
            return Mismatch(e, shown, w.level, w.cause, "ptimer" if bit else "vtimer")
    return None


class _Window(NamedTuple):
    allowed: set[int]  # the levels the exit may show
    level: int  # the timer's output at cnt
    cause: Placed | None  # the change that set it


def _window(
    placed: Sequence[Placed], settled: int, ran: int, taken: int, cnt: int
) -> tuple[int, _Window]:
    """The levels an exit at cnt may show when KVM took its level after ran (the
    vCPU thread's last line) and before taken (the put), each less the clock's
    error; settled: the changes certainly shown by the exit before, moved here
    to ran (back too). Returns it and the window."""
    while settled < len(placed) and placed[settled].shown_by() < ran:
        settled += 1
    while settled > 0 and placed[settled - 1].shown_by() >= ran:  # an earlier put's window
        settled -= 1
    cause = placed[settled - 1] if settled else None
    level = cause.change.level if cause else 0
    allowed = {level}  # the level before the window's changes
    k = settled
    # after the vCPU thread's last line, before the put: the counter's changes
    # may go either way, a vCPU-thread line's is certain (KVM took it after)
    while k < len(placed) and placed[k].shown_by() < taken:
        cause, level = placed[k], placed[k].change.level
        allowed = allowed | {level} if placed[k].change.by_main else {level}
        k += 1
    while k < len(placed) and placed[k].lo <= cnt + AFTER:
        if placed[k].earliest() <= cnt:  # within the tolerance: either way
            allowed.add(placed[k].change.level)
        if placed[k].lo <= cnt:
            cause, level = placed[k], placed[k].change.level
        k += 1
    allowed.add(level)
    return settled, _Window(allowed, level, cause)


def _run_start(e: Exit) -> int | None:
    """The counter when the VMM entered the KVM_RUN that e ended (a little before:
    dt was taken after the counter's read)."""
    if e.cnt is None or not e.in_run_ns:
        return None
    return e.cnt - e.in_run_ns * DEFAULT_FREQ // 1_000_000_000


def _own_put(puts: Sequence[tuple[int, int]], put: int, cnt: int, nxt: int | None) -> int:
    """The earliest of the puts[:put] (those up to cnt + AFTER) that may be the
    exit's own: the exit may show what that put's window allows, or the last
    put's. A put the clock places after cnt (by its error) and after the vCPU's
    next KVM_RUN began (nxt) may as well be that run's: the VMM re-entered within
    the clock's error (a loaded host, 2 vCPUs on one L1 CPU: the next run's load
    and put came 160 us after cnt, an immediate notice exit), so the put before
    it may be the exit's own. -1: no put may be."""
    first = put - 1
    if nxt is None:
        return first
    while first >= 0 and puts[first][0] > max(cnt, nxt):
        first -= 1
    return first


def _cnt(e: Exit) -> int:
    return e.cnt or 0


@dataclass(frozen=True)
class Verdict:
    mismatch: Mismatch | None
    judged: int  # exits judged
    clock: HostClock | None
    why_not: str = ""  # set when the oracle cannot judge


TIMER_BITS = {"vtimer": 0, "ptimer": 1}  # as kernel_trace.TIMER_BITS


def judge(tr: TestTrace, vm: VmTimeline, timer: str = "vtimer") -> Verdict:
    """Every exit of the test against the oracle for the timer (vtimer, ptimer)."""
    clock = host_clock(vm)
    bit = TIMER_BITS[timer]
    if timer == "ptimer" and vm.ptimer_why is not None:
        return Verdict(None, 0, clock, f"layer 0 does not follow the ptimer: {vm.ptimer_why}")
    changes, dropped = (vm.pchanges, vm.pdropped) if bit else (vm.changes, vm.dropped)
    if dropped or vm.puts_dropped:
        return Verdict(
            None, 0, clock, f"QEMU's trace dropped {dropped} of the VM's {timer} changes and "
            f"{vm.puts_dropped} of its puts (over the bounds)",
        )  # fmt: skip
    vcpus = tr.vcpus()
    if vm.vcpus > len(vcpus):
        return Verdict(
            None, 0, clock, f"QEMU's trace shows {vm.vcpus} vCPUs for the test's {len(vcpus)}"
        )
    if clock is None and changes:
        return Verdict(None, 0, None, "no clock anchor (no timer rise the counter caused)")
    if clock is not None and clock.spread > MAX_SPREAD:
        return Verdict(None, 0, clock, f"the clock anchors disagree: {clock.describe()}")
    if clock is not None and clock.step > AFTER:
        return Verdict(
            None, 0, clock, f"the host clock's offset to the counter stepped by "
            f"{clock.step * 1e6 / clock.freq:.0f} us during the test (the VM stopped?)",
        )  # fmt: skip
    mapping = _vcpu_map(tr, vm, clock)
    if isinstance(mapping, str):
        return Verdict(None, 0, clock, mapping)
    per: dict[int, list[Placed]] = {v: [] for v in vcpus}
    for c in changes:
        p = place(c, clock, timer)
        if p is None:
            return Verdict(None, 0, clock, f"the change at QEMU trace line {c.index} has no time")
        per[mapping[c.vcpu]].append(p)
    if clock is not None and vm.trace.last_ts is not None:
        why = _after_the_end(tr, vm, clock, mapping, per, timer)
        if why:
            return Verdict(None, 0, clock, why)
    judged = sum(1 for e in tr.exits if e.cnt is not None and e.level is not None)
    puts: dict[int, list[tuple[int, int]]] = {v: [] for v in vcpus}
    for j, ps in enumerate(vm.puts):
        puts[mapping[j]] = (
            sorted((clock.tick(p.at), clock.tick(p.ran)) for p in ps) if clock else []
        )
    found = [m for v in vcpus if (m := judge_vcpu(tr.by_vcpu()[v], per[v], puts[v], bit))]
    first = min(found, key=lambda m: m.exit.seq) if found else None
    return Verdict(first, judged, clock)


def _after_the_end(
    tr: TestTrace,
    vm: VmTimeline,
    clock: HostClock,
    mapping: dict[int, int],
    per: dict[int, list[Placed]],
    timer: str = "vtimer",
) -> str:
    """Exits after the last line read of QEMU's trace (the log is written in order:
    up to it, every line is in): a vCPU put for good changes only if the counter
    passes the CVAL KVM saved (an unloaded timer's output is computed), so its
    rise is added to per at its exact tick. A str says why they cannot be judged."""
    end = clock.tick(vm.trace.last_ts or 0)
    late = [e for e in tr.exits if e.cnt is not None and e.cnt > end]
    if not late:
        return ""
    parked = {p.vcpu: p for p in vm.parked}
    for j, v in mapping.items():
        if not any(e.vcpu == v for e in late):
            continue
        p = parked.get(j)
        if p is None:
            level, ctl, cval = 0, 0, None
        elif timer == "ptimer":
            level, ctl, cval = p.p_level, p.p_ctl, p.p_cval
        else:
            level, ctl, cval = p.level, p.ctl, p.cval
        armed = p is not None and level == 0 and ctl & 3 == 1
        if p is None or (armed and cval is None):
            return (
                f"QEMU's trace read so far ends (cnt {end:x}) before exit {late[0].n} "
                f"(cnt {late[0].cnt:x}), with vCPU {v}'s {timer} not known from there"
            )
        if armed and cval is not None:
            offset = 0 if timer == "ptimer" else (vm.offsets[-1] if vm.offsets else vm.cntvoff)
            tick = cval + offset
            if tick > end:
                rise = HwChange(1, 0, None, True, tick, vm.trace.last_ts, j)
                per[v].append(Placed(rise, tick, tick, exact=True, timer=timer))
    return ""


def _vcpu_map(tr: TestTrace, vm: VmTimeline, clock: HostClock | None) -> dict[int, int] | str:
    """Layer 0's vCPUs (numbered by their first loads) to the VMM's. KVM puts a vCPU
    on each return to user space, so each VMM exit has a put of its vCPU just
    before its cnt: a layer-0 vCPU is the VMM vCPU whose first exits its first puts
    (qemu_trace.MAX_PUTS) line up with, and no other's. With one vCPU, trivially.
    A str says why they cannot be told apart."""
    vcpus = tr.vcpus()
    if len(vcpus) == 1:
        return {0: vcpus[0]}
    if clock is None:
        return "no clock to tie layer 0's vCPUs to the VMM's"
    out: dict[int, int] = {}
    for j, puts in enumerate(vm.puts):
        ticks = sorted(clock.tick(p.at) for p in puts)
        score = {v: _matches(ticks, tr.by_vcpu()[v]) for v in vcpus}
        best = max(vcpus, key=lambda v: score[v])
        second = max((score[v] for v in vcpus if v != best), default=0)
        if score[best] < max(1, 2 * second):
            return f"layer 0's vCPU {j} (loaded {j + 1}th) is no one VMM vCPU's: {score}"
        out[j] = best
    if len(set(out.values())) != len(out):
        return "two of layer 0's vCPUs line up with the same VMM vCPU"
    return out


def _matches(puts: list[int], exits: Sequence[Exit]) -> int:
    """How many of the exits have one of the puts just before (within MATCH: 90% of
    the recorded exits come 40-100 us after their put)."""
    n = 0
    for e in exits:
        if e.cnt is None:
            continue
        i = bisect.bisect_right(puts, e.cnt + AFTER)
        n += i > 0 and puts[i - 1] >= e.cnt - MATCH
    return n
