"""The host ticks the L1 CPU left untaken (layer 0's held_ticks), on the counter.

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


class HeldTicks:
    """The test's held host ticks as counter intervals (one vCPU, a clock: else none)."""

    def __init__(self, tr: TestTrace) -> None:
        hw = tr.hw if len(tr.vcpus()) <= 1 else None
        clock = oracle.host_clock(hw) if hw is not None else None
        self._spans = (
            sorted((clock.tick(a), clock.tick(b)) for a, b in hw.held_ticks)
            if hw is not None and clock is not None
            else []
        )
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
