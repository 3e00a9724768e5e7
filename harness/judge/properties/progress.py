"""progress: the guest runs while the line is high and its IRQs are masked: no
exit storm, in user space or in the kernel."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from harness.inputs import limits
from harness.judge import oracle
from harness.judge.properties.held import HeldTicks
from harness.judge.property import (
    FAIL,
    NOT_JUDGED,
    PASS,
    PropertyResult,
)
from harness.traces import kernel_trace
from harness.traces.records import Record
from harness.traces.test_trace import Exit, TestTrace

if TYPE_CHECKING:
    from harness.judge.model import Model


# host interrupts that end guest runs without reaching user space: the host's tick
# (HZ=250) makes ~250 a second; a timer PPI the host does not keep from re-firing
# while the line is high makes thousands
MAX_IRQ_EXITS_PER_S = 1000


_MIN_SPAN_NS = 20_000_000  # rates over shorter spans say little


def _irq_exit_rate(n: int, span_ns: int) -> float:
    return n * 1e9 / span_ns


def _kernel_storm_in(
    tr: TestTrace, vcpu: int, evs: list[kernel_trace.KernelEvent]
) -> PropertyResult | None:
    """An in-kernel exit storm while the line stayed high (layer 1 kvm_exit IRQ)."""
    irq_exits = [e.t_ns for e in evs if e.event == "kvm_exit" and e.text.startswith("IRQ")]
    for first, _span, end in _high_spans(tr.by_vcpu()[vcpu]):
        a, b = first.t_ns, end.t_ns
        lo, hi = bisect.bisect_left(irq_exits, a), bisect.bisect_right(irq_exits, b)
        if b - a >= _MIN_SPAN_NS and _irq_exit_rate(hi - lo, b - a) > MAX_IRQ_EXITS_PER_S:
            return PropertyResult(
                "progress",
                FAIL,
                f"in-kernel exit storm while the line stayed high on vcpu {vcpu}: "
                f"{hi - lo} guest runs ended by a host interrupt in {(b - a) / 1e6:.0f} ms, "
                "none reaching user space",
                seq=first.seq,
                expected=f"at most {MAX_IRQ_EXITS_PER_S} kvm_exit (IRQ) a second",
                observed=f"{_irq_exit_rate(hi - lo, b - a):.0f}/s",
            )
    return None


def _high_spans(exits: list[Exit]) -> Iterator[tuple[Exit, list[Exit], Exit]]:
    """Each interval of one vCPU's exits in which the shown level stays high and
    unchanged: the exit that showed it, the exits after it while it holds (None
    levels included), and the last exit of the interval."""
    i = 0
    while i < len(exits):
        first = exits[i]
        if not first.level:
            i += 1
            continue
        j = i + 1
        while j < len(exits) and exits[j].level in (None, first.level):
            j += 1
        yield first, exits[i + 1 : j], exits[j - 1]
        i = j


def _storm(rec: Record) -> PropertyResult:
    """progress, when the VMM ended the test in an exit storm (vmm/vt_limits.h)."""
    ms = max(rec.int("ms"), 1)
    idle = rec.int("idle_exits")
    return PropertyResult(
        "progress",
        FAIL,
        f"exit storm on vcpu {rec.get('vcpu')}: {idle} exits that told user space nothing "
        f"(no guest report, no signal, no level change) in {ms} ms; the VMM ended the test",
        seq=rec.seq,
        expected=f"under {rec.get('rate_min')} such exits/s",
        observed=f"{idle * 1000 // ms}/s for {ms} ms",
    )


def _kernel_storm(m: Model, tr: TestTrace) -> PropertyResult | None:
    """progress from layer 1: the guest's in-kernel exits while the line is high;
    when the VMM had to drop kernel events, their count over the whole test."""
    if tr.kernel_events:
        split = tr.kernel_by_vcpu
        if isinstance(split, str):
            return None  # the kernel's exits not told apart per vCPU
        found = (_kernel_storm_in(tr, v, evs) for v, evs in split.items())
        return next((r for r in found if r is not None), None)
    n = tr.kernel_counts.get("kvm_exit_irq")
    if n is None or tr.begin is None or tr.end is None:
        return None
    span = tr.end.t_ns - tr.begin.t_ns
    if span >= _MIN_SPAN_NS and _irq_exit_rate(n, span) > MAX_IRQ_EXITS_PER_S:
        return PropertyResult(
            "progress",
            FAIL,
            f"in-kernel exit storm: {n} guest runs ended by a host interrupt in the "
            f"test's {span / 1e6:.0f} ms (kernel events over the VMM's bound: counted)",
            seq=tr.end.seq,
            expected=f"at most {MAX_IRQ_EXITS_PER_S} kvm_exit (IRQ) a second",
            observed=f"{_irq_exit_rate(n, span):.0f}/s",
        )
    return None


_MAX_IDLE = 2  # exits the guest did not cause, per high interval
_MIN_BEATS = 3  # heartbeats in the longest high interval
_BEAT_MS = limits.get("VT_BEAT_MS")  # the guest's heartbeat period (guest.h)


class _GuestRan:
    """How long the guest ran in a high interval: its KVM_RUNs (the VMM's dt), less
    the host ticks the L1 CPU left untaken in them (layer 0, one vCPU): the VMM's
    thread out of KVM_RUN or QEMU not running the L1 CPU make no heartbeats."""

    def __init__(self, tr: TestTrace) -> None:
        self._held = HeldTicks(tr)
        self.how = "its KVM_RUNs, less the host's untaken ticks" if tr.hw else "its KVM_RUNs"

    def ms(self, span: list[Exit]) -> float:
        ns = 0.0
        for x in span:
            run = x.in_run_ns
            if x.cnt is not None:
                ticks = run * oracle.DEFAULT_FREQ // 1_000_000_000
                run -= self._held.within(x.cnt - ticks, x.cnt) * 1e9 / oracle.DEFAULT_FREQ
            ns += max(0.0, run)
        return ns / 1e6


def _stalled(tr: TestTrace, spans: list[tuple[int, Exit, Exit]]) -> str | None:
    """Why too few heartbeats say nothing: a high interval held a guest run with no
    host tick in it (layer 1), so the machine, not the guest, stood still. Each
    vCPU's intervals are in time order and apart: the one a run overlaps, if any, is
    the last to begin before the run ends."""
    split = tr.kernel_by_vcpu if tr.kernel_events else None
    if not isinstance(split, dict):
        return None
    for vcpu, evs in split.items():
        mine = [(first, end) for v, first, end in spans if v == vcpu]
        starts = [first.t_ns for first, _ in mine]
        for entered, exited in kernel_trace.stalled_runs(evs) if mine else []:
            i = bisect.bisect_right(starts, exited) - 1
            if i < 0 or mine[i][1].t_ns < entered:
                continue
            first, end = mine[i]
            return (
                f"the line was high {(end.t_ns - first.t_ns) / 1e6:.0f} ms on vcpu {vcpu}, "
                f"but one guest run in it lasted {(exited - entered) / 1e6:.0f} ms with no "
                "host tick: the host stalled QEMU, so too few heartbeats to judge"
            )
    return None


def progress(m: Model, tr: TestTrace) -> PropertyResult:
    """While the shown level stays high and unchanged, the guest runs on: the
    exits it did not cause (no port report, no signal of the VMM's) stay under
    a constant bound, however long the line stays high, and its heartbeat
    counter (loop iterations, reported in VT_HBEAT) advances."""
    if tr.storm is not None:
        return _storm(tr.storm)
    best: tuple[int, str] | None = None
    spans: list[tuple[int, Exit, Exit]] = []
    ran = _GuestRan(tr)
    longest = (0.0, 0.0, 0)  # the most the guest ran in one: (ran ms, high ms, vcpu)
    for vcpu, exits in tr.by_vcpu().items():
        for first, span, end in _high_spans(exits):
            judged = _high_span(vcpu, first, span, end)
            if isinstance(judged, PropertyResult):
                return judged
            spans.append((vcpu, first, end))
            if best is None or judged[0] > best[0]:
                best = judged
            longest = max(longest, (ran.ms(span), (end.t_ns - first.t_ns) / 1e6, vcpu))
    storm = _kernel_storm(m, tr)
    if storm is not None:
        return storm
    if best is None or best[0] < _MIN_BEATS:
        if stalled := _stalled(tr, spans):
            return PropertyResult("progress", NOT_JUDGED, stalled)
        if spans and longest[0] < _MIN_BEATS * _BEAT_MS:
            return PropertyResult(
                "progress", NOT_JUDGED, f"the line was high {longest[1]:.0f} ms on vcpu "
                f"{longest[2]}, but the guest ran {longest[0]:.1f} ms of it at most ({ran.how}): "
                f"under the {_MIN_BEATS * _BEAT_MS} ms of {_MIN_BEATS} heartbeats, the host "
                "held the VMM's thread or QEMU, so too few heartbeats to judge",
            )  # fmt: skip
        return PropertyResult(
            "progress",
            FAIL,
            "the line never stayed high across the guest's heartbeats",
            expected=f"at least {_MIN_BEATS} heartbeats while high",
            observed=str(best[0] if best else 0),
        )
    if not tr.kernel_events and "kvm_exit_irq" not in tr.kernel_counts:
        return PropertyResult(
            "progress",
            NOT_JUDGED,
            f"{best[1]}; the guest's in-kernel exits are unknown: {tr.kernel_missing()}",
        )
    return PropertyResult("progress", PASS, best[1])


def _high_span(
    vcpu: int, first: Exit, span: list[Exit], end: Exit
) -> PropertyResult | tuple[int, str]:
    """One interval with the line high: a FAIL (an exit storm, a stuck loop), or
    its heartbeats and what it showed."""
    idle = [x for x in span if x.port is None and not x.signal]
    if len(idle) > _MAX_IDLE:
        return PropertyResult(
            "progress",
            FAIL,
            f"exit storm while the line stayed high on vcpu {vcpu}: exits "
            "the guest did not cause kept coming",
            seq=idle[_MAX_IDLE].seq,
            expected=f"at most {_MAX_IDLE} such exits",
            observed=str(len(idle)),
        )
    beats = [x for x in span if x.port == "HBEAT"]
    values = [x.value or 0 for x in beats]
    stuck = [k for k in range(1, len(values)) if values[k] <= values[k - 1]]
    if stuck:
        return PropertyResult(
            "progress",
            FAIL,
            f"the guest's loop counter did not advance on vcpu {vcpu}",
            seq=beats[stuck[0]].seq,
            expected="increasing heartbeat values",
            observed=", ".join(str(v) for v in values),
        )
    ms = (end.t_ns - first.t_ns) / 1e6
    signals = sum(1 for x in span if x.signal)
    return len(beats), (
        f"line {first.level:x} high {ms:.0f} ms on vcpu {vcpu}: {len(beats)} "
        f"heartbeats (loop {values[0] if values else 0}..{values[-1] if values else 0}"
        f"), {len(idle)} exits not caused by the guest, {signals} signal exits"
    )
