"""prompt: a change reaches user space without waiting for an unrelated event."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from harness.judge import oracle
from harness.judge.properties.held import HeldTicks
from harness.judge.property import (
    FAIL,
    NOT_JUDGED,
    PASS,
    SKIP,
    PropertyResult,
)
from harness.traces import correlate, kernel_trace
from harness.traces.test_trace import Exit, TestTrace

if TYPE_CHECKING:
    from harness.judge.model import Model


# A rise whose notice came by another exit this soon after the timer fired (layer
# 0) raced its own interrupt to end the run, and is not late: on healthy kernels
# notices take 0.35 ms (median; 5 ms at most under load), a kernel that holds
# them for the host's tick (upstream-late) 0-4 ms, most of them over 1 ms.
COINCIDENT = oracle.DEFAULT_FREQ // 1000  # 1 ms of ticks


class _RiseTicks:
    """Layer 0's rises of each timer that the counter caused, in tick order: how
    long before an exit's cnt the last one came (O(log n) a look-up)."""

    def __init__(self, tr: TestTrace) -> None:
        hw = tr.hw if len(tr.vcpus()) <= 1 else None  # several vCPUs: not told apart here
        self._ticks = {
            "vtimer": _rise_ticks(hw.changes if hw else []),
            "ptimer": _rise_ticks(hw.pchanges if hw else []),
        }

    def known(self, timer: str) -> bool:
        """Layer 0 shows this timer's rises (the test has layer 0, one vCPU)."""
        return bool(self._ticks.get(timer))

    def last(self, timer: str, cnt: int | None) -> int | None:
        """The tick of the timer's last rise up to cnt."""
        ticks = self._ticks.get(timer, [])
        i = bisect.bisect_right(ticks, cnt) if cnt is not None else 0
        return None if i == 0 else ticks[i - 1]


def _raced(c: kernel_trace.NoticeCause, e: Exit, rise: int, clock: correlate.Clock | None) -> bool:
    """The run the notice came with ended just as the timer fired (within
    COINCIDENT), or before it, by the VMM's cnt or, when the host held the thread
    between the guest's exit and the VMM's read (a loaded host: 2.8 ms seen), by
    the kernel's kvm_exit."""
    if e.cnt is not None and e.cnt - rise <= COINCIDENT:
        return True
    return (
        clock is not None and c.ended_ns is not None and clock.tick(c.ended_ns) - rise <= COINCIDENT
    )


def _rise_ticks(changes: list) -> list[int]:
    return sorted(c.tick for c in changes if c.level == 1 and c.tick is not None)


def prompt(m: Model, tr: TestTrace) -> PropertyResult:
    """A rise reaches user space without waiting for an unrelated event: the
    guest run that ended with the notice was ended by the timer's own host
    interrupt (or, for a blocked vCPU, its background timer), not by the
    host's tick or another exit that happened to come (layer 1)."""
    causes = _causes(m, tr)
    if isinstance(causes, PropertyResult):
        return causes
    if not causes:
        return PropertyResult("prompt", SKIP, "not exercised: no rise was reported")
    rise_at, clock, untaken = _RiseTicks(tr), correlate.earliest_clock(tr), HeldTicks(tr)
    late, raced = [], 0
    stalled: list[tuple[kernel_trace.NoticeCause, Exit, float | None]] = []  # held ms
    for c, e in causes:
        if c.cause != "other":
            continue
        rise = rise_at.last(c.timer, e.cnt)
        held = untaken.at(rise) if rise is not None else None
        if rise is not None and _raced(c, e, rise, clock):
            raced += 1  # the run ended just as the timer fired: its interrupt lost a race
        elif c.stalled or held is not None:
            stalled.append((c, e, held))  # the machine stood still: no interrupt could come
        else:
            late.append((c, e))
    if stalled and len(stalled) == len(causes):
        c, e, held = stalled[0]
        why = (
            f"with the host's tick left untaken {held:.1f} ms when it fired (QEMU's trace)"
            if held is not None
            else f"after a guest run of {c.run_ns / 1e6:.0f} ms with no host tick"
        )
        return PropertyResult(
            "prompt",
            NOT_JUDGED,
            f"the {c.timer} rise reached user space at exit {e.n} {why} "
            f"({c.ended_by or 'no kvm_exit'}): the host stalled QEMU, so whether its own "
            "interrupt would have come cannot be told",
        )
    if len(late) == len(causes) == 1 and not rise_at.known(late[0][0].timer):
        c, e = late[0]
        return PropertyResult(
            "prompt",
            NOT_JUDGED,
            f"the one {c.timer} rise reached user space at exit {e.n} by another exit "
            f"({c.ended_by or 'no kvm_exit'}); without layer 0 to time it, a race with "
            "its own interrupt cannot be ruled out",
        )
    # a single late rise among several is seen on healthy kernels now and then
    # (v5 rearm_n, 1 of 5, once in a loaded make test); the broken promise is
    # a test whose rises mostly wait for another exit
    judged = len(causes) - len(stalled)
    if 2 * len(late) > judged:
        return _late(late, judged)
    own = sum(c.cause == "timer" for c, _ in causes)
    some = f"; {len(late)} waited for another exit" if late else ""
    some += (
        f"; {raced} came with another exit within 1 ms of the fire, or before it" if raced else ""
    )
    some += f"; {len(stalled)} came after the host stalled QEMU" if stalled else ""
    return PropertyResult(
        "prompt",
        PASS,
        f"{own} rises ended the guest's run by their own interrupt, "
        f"{len(causes) - own - len(late) - raced - len(stalled)} came with no guest run "
        f"between{some}",
    )


Cause = tuple[kernel_trace.NoticeCause, Exit]


def _causes(m: Model, tr: TestTrace) -> list[Cause] | PropertyResult:
    """Each reported rise with what ended the guest run before it (per vCPU), or
    why that cannot be told."""
    if not tr.kernel_events:
        return PropertyResult("prompt", NOT_JUDGED, tr.kernel_missing())
    split = tr.kernel_by_vcpu
    if isinstance(split, str):
        return PropertyResult("prompt", NOT_JUDGED, f"several vCPUs: {split}")
    traced = "irq_handler_entry" in tr.kernel_counts
    causes: list[Cause] = []
    for vcpu, evs in split.items():
        exits = tr.by_vcpu()[vcpu]
        mine = kernel_trace.notice_causes(evs, m.timers, [e.level for e in exits], traced)
        if mine is None:
            return PropertyResult(
                "prompt", NOT_JUDGED, f"the kernel's returns to user space on vcpu {vcpu} do "
                "not pair up with the VMM's exit records" if traced else "the timers' host "
                "interrupts were not traced (irq_handler_entry)",
            )  # fmt: skip
        causes += [(c, exits[c.exit_index]) for c in mine]
    return causes


def _late(late: list[Cause], n: int) -> PropertyResult:
    c, e = min(late, key=lambda ce: ce[1].seq)
    return PropertyResult(
        "prompt",
        FAIL,
        f"the {c.timer} rise reached user space at exit {e.n} on vcpu {e.vcpu} ({e.reason}) "
        f"only because the guest's run ended otherwise ({c.ended_by or 'no kvm_exit'}): "
        f"its own interrupt never came; {len(late)} of {n} rises so",
        seq=e.seq,
        expected="the timer's own host interrupt ending the run",
        observed=(c.ended_by.split(":")[0] or "?") + " exit",
    )
