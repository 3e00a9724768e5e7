"""One test's timeline as drawable tracks: steps, ticks and marks in time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.judge import oracle
from harness.judge.property import PropertyResult
from harness.traces import correlate, kernel_trace, qemu_trace
from harness.traces.records import Record
from harness.traces.test_trace import TestTrace

# marks drawn per row: a storm makes thousands that a 960-pixel row cannot show;
# the rest are counted in a note
MAX_TICKS = 1000


@dataclass(frozen=True)
class Step:
    t: float  # ms since the test began
    level: int


@dataclass(frozen=True)
class Tick:
    t: float
    label: str
    kind: str  # notice, mmio, other, irq, inject


@dataclass
class Timeline:
    test: str
    span_ms: float
    tracks: dict[str, list[Step]] = field(default_factory=dict)
    ticks: dict[str, list[Tick]] = field(default_factory=dict)  # drawn before the tracks
    notes: list[str] = field(default_factory=list)


def build(tr: TestTrace, failed: Sequence[PropertyResult] = ()) -> Timeline:
    """tr's tracks and marks; failed: the test's failed properties, each marked at
    the record it names."""
    t0 = tr.begin.t_ns if tr.begin else (tr.exits[0].t_ns if tr.exits else 0)
    end = tr.end.t_ns if tr.end else (tr.exits[-1].t_ns if tr.exits else t0)

    def ms(ns: int) -> float:
        return round((ns - t0) / 1e6, 3)

    tl = Timeline(tr.name, max(ms(end), 0.001))
    by_seq = {r.seq: r for r in tr.records}
    _hardware(tl, tr, ms)
    fails = [(r, by_seq[r.seq]) for r in failed if r.seq in by_seq]
    if fails:
        tl.ticks["failed property"] = [
            Tick(ms(rec.t_ns), f"{r.line()} [record {rec.seq}: {describe(rec)}]", "fail")
            for r, rec in fails
        ]
    _tracks(tl, tr, ms)
    tl.ticks["exits"] = [
        Tick(
            ms(e.t_ns),
            f"exit {e.n} {e.reason}"
            + (f" {e.port}" if e.port else "")
            + f" [record {e.seq}: {describe(by_seq[e.seq])}]",
            "notice" if e.notice else ("mmio" if e.reason == "MMIO" else "other"),
        )
        for e in tr.exits
    ]
    tl.ticks["guest IRQ entry"] = [
        Tick(ms(e.t_ns), f"IRQ at exit {e.n} [record {e.seq}: {describe(by_seq[e.seq])}]", "irq")
        for e in tr.ports("IRQ")
    ]
    _notes(tl, tr)
    return tl


def _hardware(tl: Timeline, tr: TestTrace, ms: Callable[[int], float]) -> None:
    """Layer 0's rises, of each timer it follows."""
    clk = correlate.clock(tr)
    if tr.hw is None or clk is None:
        return
    host = oracle.host_clock(tr.hw)
    for name, timer, changes in (
        ("hardware rise (QEMU)", "vtimer", tr.hw.changes),
        ("hardware ptimer rise (QEMU)", "ptimer", tr.hw.pchanges),
    ):
        ticks = [_hw_tick(c, timer, host, clk, ms) for c in changes if c.level == 1]
        if ticks or timer == "vtimer":
            tl.ticks[name] = [t for t in ticks if t is not None]


def _tracks(tl: Timeline, tr: TestTrace, ms: Callable[[int], float]) -> None:
    """The levels: what the kernel saw, what the ABI showed, the line the VMM drove."""
    kernel_steps = [Step(0.0, 0)]
    for t_ns, vcpu, level in kernel_trace.level_changes(tr.kernel_events):
        if vcpu == 0:
            kernel_steps.append(Step(ms(t_ns), level))
    if len(kernel_steps) > 1:
        tl.tracks["kernel sees (kvm_timer_update_irq)"] = kernel_steps
    shown: list[Step] = [Step(0.0, 0)]
    for e in tr.exits:
        if e.level is not None and (e.level & 1) != shown[-1].level:
            shown.append(Step(ms(e.t_ns), e.level & 1))
    tl.tracks["kernel shows (vtimer)"] = shown
    line: list[Step] = [Step(0.0, 0)]
    for r in tr.injections:
        line.append(Step(ms(r.t_ns), int(r.get("level", "0"))))
    tl.tracks["VMM drives IRQ line"] = line


def _notes(tl: Timeline, tr: TestTrace) -> None:
    """What the picture leaves out, and the rows cut to MAX_TICKS."""
    if tr.hw is not None:
        tl.notes.append(
            f"hardware (QEMU arm_gt_*): {tr.hw.edges()} vtimer rises, "
            f"{len(tr.hw.changes)} changes in VM with CNTVOFF {tr.hw.cntvoff:#x}"
            + (f" ({tr.hw.dropped} more not kept)" if tr.hw.dropped else "")
        )
    for what, n in tr.dropped.items():
        tl.notes.append(f"{n} {what} records were dropped by the VMM (over its bound)")
    for name, ticks in tl.ticks.items():
        if len(ticks) > MAX_TICKS:
            tl.notes.append(f"{name}: the first {MAX_TICKS} of {len(ticks)} drawn")
            tl.ticks[name] = ticks[:MAX_TICKS]
    for name, steps in tl.tracks.items():
        if len(steps) > MAX_TICKS:
            tl.notes.append(f"{name}: the first {MAX_TICKS} of {len(steps)} changes drawn")
            tl.tracks[name] = steps[:MAX_TICKS]


def describe(rec: Record) -> str:
    """A record as its line reads (kind and fields), for a mark's hover text."""
    fields = " ".join(f"{k}={v}" for k, v in rec.fields.items())
    return f"{rec.kind} {fields}".strip()


def _hw_tick(
    c: qemu_trace.HwChange,
    timer: str,
    host: oracle.HostClock | None,
    clk: correlate.Clock,
    ms: Callable[[int], float],
) -> Tick | None:
    """A layer-0 rise on the timeline: at its tick when the counter caused it, else
    (a write: IMASK cleared, ENABLE set, CVAL moved back) where the oracle places
    its line on the counter."""
    name = "CNTV" if timer == "vtimer" else "CNTP"
    if c.tick is not None:
        return Tick(ms(int(clk.mono(c.tick))), f"{name} fired at count {c.tick:#x}", "hw")
    placed = oracle.place(c, host, timer)
    if placed is None:
        return None
    why = "seen at a load" if c.while_out else "by a write"
    return Tick(
        ms(int(clk.mono(placed.lo))),
        f"{name} rose {why} at count {placed.lo:#x} (QEMU trace line {c.index})",
        "hw",
    )
