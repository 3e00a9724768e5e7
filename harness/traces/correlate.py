"""Line the three layers up on one time line per test and derive the metrics.

Anchors (see README, "How the layers are lined up"):
- layer 2 (VMM records, t_ns) and layer 1 (tracefs, trace_clock mono) share
  CLOCK_MONOTONIC;
- layer 0 (QEMU) has no clock, but counter values: a rise the counter caused
  happens at CVAL + CNTVOFF, the VMM stamps each exit and injection with the
  L1 counter (cnt=, the physical count), and the guest reports its virtual
  count at IRQ entry (VM offset from layer 0). The VMM's (cnt, t_ns) pairs
  place counter values on the monotonic clock.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from harness.inputs import limits
from harness.traces import kernel_trace
from harness.traces.test_trace import TestTrace

DEFAULT_FREQ = 62_500_000  # QEMU virt's CNTFRQ


@dataclass(frozen=True)
class Clock:
    """Counter ticks to CLOCK_MONOTONIC ns: t = tick * ns_per_tick + base."""

    ns_per_tick: float
    base: float

    def mono(self, tick: int) -> float:
        return tick * self.ns_per_tick + self.base

    def tick(self, mono_ns: float) -> int:
        return int((mono_ns - self.base) / self.ns_per_tick)


def clock(tr: TestTrace, freq: int = DEFAULT_FREQ) -> Clock | None:
    ns_per_tick = 1e9 / freq
    pairs = [(r.int("cnt", base=16), r.t_ns) for r in tr.injections if r.get("cnt")]
    # with no injection (never_inject, cval_future), the exits: cnt read just after
    # KVM_RUN returned, the record written right after
    pairs = pairs or [(e.cnt, e.t_ns) for e in tr.exits if e.cnt]
    if not pairs:
        return None
    return Clock(ns_per_tick, statistics.median(t - c * ns_per_tick for c, t in pairs))


def earliest_clock(tr: TestTrace, freq: int = DEFAULT_FREQ) -> Clock | None:
    """The exits' clock at its tightest: the VMM stamps each exit record's t_ns
    after it reads cnt, so the least t_ns - cnt is the closest to the truth, and a
    CLOCK_MONOTONIC time (the kernel's events) maps to no later a tick than it
    was (clock() takes the median, for drawing)."""
    ns_per_tick = 1e9 / freq
    base = min((e.t_ns - e.cnt * ns_per_tick for e in tr.exits if e.cnt), default=None)
    return None if base is None else Clock(ns_per_tick, base)


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
        "n": len(values),
    }


def metrics(tr: TestTrace, freq: int = DEFAULT_FREQ) -> dict:
    """Notice latency, IRQ delivery latency, and each layer's edge count."""
    ns_per_tick = 1e9 / freq
    kev = tr.kernel_events
    out: dict = {
        "kt_vtimer_edges": kernel_trace.rises(kev) if kev else None,
        "kt_userspace_exits": sum(e.event == "kvm_userspace_exit" for e in kev) if kev else None,
    }
    notice: list[float] = []
    delivery: list[float] = []
    single = len(tr.vcpus()) <= 1
    if tr.hw is not None and single:
        shown = _FirstAtOrAfter([e.cnt for e in tr.exits if e.level and e.level & 1 and e.cnt])
        for c in tr.hw.changes:
            if c.level != 1 or c.tick is None:
                continue
            at = shown(c.tick)
            if at is not None:
                notice.append((at - c.tick) * ns_per_tick / 1000)
        offset = tr.hw.offsets[-1] if tr.hw.offsets else tr.hw.cntvoff
        entries = _FirstAtOrAfter(
            [((e.value or 0) >> limits.get("VT_IRQ_CNT_SHIFT")) + offset for e in tr.ports("IRQ")]
        )
        for r in tr.injections:
            if r.get("level") != "1" or not r.get("cnt"):
                continue
            at = r.int("cnt", base=16)
            entry = entries(at)
            if entry is not None:
                delivery.append((entry - at) * ns_per_tick / 1000)
    out["notice_latency_us"] = _summary(notice)
    out["irq_latency_us"] = _summary(delivery)
    return out


class _FirstAtOrAfter:
    """The first of values, in their order, that is >= a tick: a bisection over
    their running maximum, built once (O(log n) a look-up)."""

    def __init__(self, values: Sequence[int]) -> None:
        self.values = list(values)
        self._max = list(itertools.accumulate(self.values, max))

    def __call__(self, tick: int) -> int | None:
        i = bisect.bisect_left(self._max, tick)
        return self.values[i] if i < len(self.values) else None
