"""The host ticks the L1 CPU left untaken (from layer 0's host_ticks), on the counter.

While one waited, QEMU was not running the L1 CPU: no interrupt, the guest's
timer's own included, could end a guest run, and a WFI the guest reached then
finds the timer's interrupt pending at once (QEMU completes a WFI with an
interrupt pending without trapping it, so KVM never blocks the vCPU). prompt and
wake do not judge what happened in one; progress does not count their time as
the guest's.
"""

from __future__ import annotations

import bisect

from harness.judge import oracle
from harness.traces.test_trace import TestTrace

# a host tick taken this long after it was due was held: QEMU did not run the L1
# CPU (or logged the rise late: QEMU did not run at all); taken within ~50-350 us
# on a quiet host
HELD = oracle.DEFAULT_FREQ // 1000  # 1 ms of ticks


class HeldTicks:
    """The test's held host ticks as counter intervals, from each tick's due count
    (or its logged rise, if earlier by the clock's error) to its handler's write
    (one vCPU, a clock: else none)."""

    def __init__(self, tr: TestTrace) -> None:
        hw = tr.hw if len(tr.vcpus()) <= 1 else None
        clock = oracle.host_clock(hw) if hw is not None else None
        spans = []
        if hw is not None and clock is not None:
            for t in hw.host_ticks:
                a, b = min(t.due, clock.tick(t.rose)), clock.tick(t.taken)
                if b - a >= HELD:
                    spans.append((a, b))
        self._spans = sorted(spans)
        self._from = [a for a, _ in self._spans]

    def at(self, tick: int) -> float | None:
        """How long (ms) the host tick pending at tick waited untaken, if one did."""
        i = bisect.bisect_right(self._from, tick)
        if not i or tick > self._spans[i - 1][1]:
            return None
        a, b = self._spans[i - 1]
        return (b - a) * 1000 / oracle.DEFAULT_FREQ

    def within(self, lo: int, hi: int) -> int:
        """The ticks of [lo, hi] the held host ticks cover."""
        i = max(0, bisect.bisect_right(self._from, lo) - 1)
        n = 0
        while i < len(self._spans) and self._spans[i][0] <= hi:
            a, b = self._spans[i]
            n += max(0, min(b, hi) - max(a, lo))
            i += 1
        return n
