"""The architectural virtual timer output (ENABLE && !IMASK && CVAL <= counter) as a
function of the L1 physical counter, from layer 0, judged at every VMM exit.

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
exit.cnt (BEFORE it, AFTER it) may go either way.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from harness.qemu_trace import HwChange, VmTimeline
from harness.trace import Exit, TestTrace

DEFAULT_FREQ = 62_500_000  # QEMU virt's CNTFRQ
# Ticks (16 ns) a change may lie from an exit's cnt and go either way.
# BEFORE: a change up to this long before cnt may not show yet. The kernel takes
# the level on its way out of KVM_RUN and the VMM reads cnt after, in emulated
# time (QEMU TCG running L1 and the VMM); an exit the change itself caused comes
# after it by that path too. On the recorded healthy runs and the boots measured
# (see tests/test_oracle.py) the level shown lagged a change by at most ~0.3 ms:
# 1 ms leaves room for a loaded host. The clock error (AFTER) adds to it.
BEFORE = DEFAULT_FREQ // 1000
# AFTER: a change placed by the clock up to this long after cnt may have come
# before it: the estimate's error. The median anchor's latency is a few us over
# the least on one L1 CPU (anchors within ~3 us median deviation) and ~70 us on
# two (QEMU's main loop logs a rise late); MAX_SPREAD bounds the spread judged.
# A change at its exact tick needs none: it came after the level was taken.
AFTER = DEFAULT_FREQ // 5000  # 200 us
# the anchors' median absolute deviation past which one offset is not believed
# (the VM stopped and resumed, the host clock stepped): ticks
MAX_SPREAD = DEFAULT_FREQ // 10000  # 100 us


@dataclass(frozen=True)
class HostClock:
    """Host microseconds to counter ticks: tick = us * freq / 1e6 + offset."""

    offset: int
    anchors: int
    spread: int  # the anchors' median absolute deviation from the estimate, ticks
    freq: int = DEFAULT_FREQ

    def tick(self, host_ts: float) -> int:
        return round(host_ts * 1e6) * self.freq // 1_000_000 + self.offset

    def describe(self) -> str:
        us = self.spread * 1e6 / self.freq
        return f"{self.anchors} clock anchors agreeing within {us:.1f} us (median deviation)"


def host_clock(vm: VmTimeline, freq: int = DEFAULT_FREQ) -> HostClock | None:
    offsets = [tick - us * freq // 1_000_000 for tick, us in vm.anchors]
    if not offsets:
        return None
    offset = round(statistics.median(offsets))
    spread = round(statistics.median(abs(o - offset) for o in offsets))
    return HostClock(offset, len(offsets), spread, freq)


@dataclass(frozen=True)
class Placed:
    """A hardware change on the counter: it happened within [lo, hi]."""

    change: HwChange
    lo: int
    hi: int
    exact: bool = False  # at its tick, not placed by the clock

    def earliest(self) -> int:
        """The earliest cnt of an exit that may show it: it may lie before its lo by
        the clock's error, unless at its exact tick."""
        return self.lo if self.exact else self.lo - AFTER

    def describe(self) -> str:
        c = self.change
        how = "by the counter" if c.tick is not None else "by a write"
        when = "while the vCPU was out, seen at the load" if c.while_out else "while loaded"
        at = f"cnt {self.lo:x}" if self.lo == self.hi else f"cnt {self.lo:x}..{self.hi:x}"
        what = "rise" if c.level else "fall"
        return f"the {what} at QEMU trace line {c.index} ({how}, {when}, {at})"


def place(c: HwChange, clock: HostClock | None) -> Placed | None:
    """The counter interval of a change; None when it cannot be placed."""
    if c.host_ts is None or clock is None:
        return None
    seen = clock.tick(c.host_ts)
    since = clock.tick(c.out_since) if c.out_since is not None else None
    if c.while_out:
        lo = since if since is not None else seen
        if c.tick is not None and lo - AFTER <= c.tick <= seen + AFTER:
            return Placed(c, c.tick, c.tick, exact=True)
        return Placed(c, min(lo, seen), seen)
    if c.tick is not None:
        return Placed(c, min(c.tick, seen), max(c.tick, seen))
    return Placed(c, seen, seen)


@dataclass(frozen=True)
class Mismatch:
    exit: Exit
    shown: int
    level: int  # the architectural level at the exit
    cause: Placed | None  # the change that set it (None: the reset level, 0)


def judge_vcpu(exits: Sequence[Exit], placed: Sequence[Placed], bit: int) -> Mismatch | None:
    """The first exit (in cnt order) whose shown bit is no level the oracle allows.

    Two pointers over exits and changes (both in counter order): linear, plus the
    changes within the tolerance of each exit."""
    settled = 0  # changes whose hi lies before the exit's window
    for e in sorted((e for e in exits if e.cnt is not None and e.level is not None), key=_cnt):
        cnt = _cnt(e)
        while settled < len(placed) and placed[settled].hi < cnt - BEFORE:
            settled += 1
        cause = placed[settled - 1] if settled else None
        level = cause.change.level if cause else 0
        allowed = {level}  # the level before the window's changes
        k = settled
        while k < len(placed) and placed[k].lo <= cnt + AFTER:
            if placed[k].earliest() <= cnt:  # within the tolerance: either way
                allowed.add(placed[k].change.level)
            if placed[k].lo <= cnt:
                cause, level = placed[k], placed[k].change.level
            k += 1
        allowed.add(level)
        shown = (e.level or 0) >> bit & 1
        if shown not in allowed:
            return Mismatch(e, shown, level, cause)
    return None


def _cnt(e: Exit) -> int:
    return e.cnt or 0


@dataclass(frozen=True)
class Verdict:
    mismatch: Mismatch | None
    judged: int  # exits judged
    clock: HostClock | None
    why_not: str = ""  # set when the oracle cannot judge


def judge(tr: TestTrace, vm: VmTimeline, bit: int = 0) -> Verdict:
    """Every exit of the test against the oracle for the timer at bit (0: vtimer)."""
    clock = host_clock(vm)
    if vm.dropped:
        return Verdict(None, 0, clock, f"QEMU's trace dropped {vm.dropped} of the VM's changes")
    vcpus = tr.vcpus()
    if vm.vcpus > len(vcpus):
        return Verdict(
            None, 0, clock, f"QEMU's trace shows {vm.vcpus} vCPUs for the test's {len(vcpus)}"
        )
    if clock is None and vm.changes:
        return Verdict(None, 0, None, "no clock anchor (no timer rise the counter caused)")
    if clock is not None and clock.spread > MAX_SPREAD:
        return Verdict(None, 0, clock, f"the clock anchors disagree: {clock.describe()}")
    mapping = _vcpu_map(tr, vm, clock)
    if isinstance(mapping, str):
        return Verdict(None, 0, clock, mapping)
    per: dict[int, list[Placed]] = {v: [] for v in vcpus}
    for c in vm.changes:
        p = place(c, clock)
        if p is None:
            return Verdict(None, 0, clock, f"the change at QEMU trace line {c.index} has no time")
        per[mapping[c.vcpu]].append(p)
    if clock is not None and vm.last_ts is not None:
        end = clock.tick(vm.last_ts)
        late = [e for e in tr.exits if e.cnt is not None and e.cnt > end + BEFORE]
        if late:
            return Verdict(
                None, 0, clock, f"QEMU's trace ends (cnt {end:x}) before exit {late[0].n} "
                f"(cnt {late[0].cnt:x})",
            )  # fmt: skip
    judged = sum(1 for e in tr.exits if e.cnt is not None and e.level is not None)
    found = [m for v in vcpus if (m := judge_vcpu(tr.by_vcpu()[v], per[v], bit))]
    first = min(found, key=lambda m: m.exit.seq) if found else None
    return Verdict(first, judged, clock)


def _vcpu_map(tr: TestTrace, vm: VmTimeline, clock: HostClock | None) -> dict[int, int] | str:
    """Layer 0's vCPUs (numbered by their first loads) to the VMM's: by when each
    first ran (its first exit's cnt less its time in KVM_RUN), matched to the first
    loads in order; each load must come after its vCPU's start and before the next
    vCPU's. With one vCPU, trivially. A str says why they cannot be told apart."""
    vcpus = tr.vcpus()
    if len(vcpus) == 1:
        return {0: vcpus[0]}
    if clock is None or None in vm.vcpu_starts or len(vm.vcpu_starts) < vm.vcpus:
        return "the vCPUs' first loads have no time: layer 0's vCPUs cannot be told apart"
    starts: list[tuple[int, int]] = []
    for v in vcpus:
        first = tr.by_vcpu()[v][0]
        if first.cnt is None:
            return f"vCPU {v}'s first exit has no counter value"
        starts.append((first.cnt - first.in_run_ns * clock.freq // 10**9, v))
    starts.sort()
    loads = sorted((clock.tick(ts or 0), i) for i, ts in enumerate(vm.vcpu_starts))
    ends = [s for s, _ in starts[1:]] + [None]
    for (load, _), (start, v), end in zip(loads, starts, ends, strict=False):
        if load < start - AFTER or (end is not None and load > end - AFTER):
            return (
                f"vCPU {v} first ran at cnt {start:x}, layer 0's load at cnt {load:x} is not "
                "its: layer 0's vCPUs cannot be told apart"
            )
    return {i: v for (_, i), (_, v) in zip(loads, starts, strict=False)}
