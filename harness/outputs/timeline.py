"""One test's timeline as drawable tracks: steps, ticks and marks in time."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.traces import correlate, kernel_trace
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


def build(tr: TestTrace) -> Timeline:
    t0 = tr.begin.t_ns if tr.begin else (tr.exits[0].t_ns if tr.exits else 0)
    end = tr.end.t_ns if tr.end else (tr.exits[-1].t_ns if tr.exits else t0)

    def ms(ns: int) -> float:
        return round((ns - t0) / 1e6, 3)

    tl = Timeline(tr.name, max(ms(end), 0.001))
    clk = correlate.clock(tr)
    if tr.hw is not None and clk is not None:
        tl.ticks["hardware rise (QEMU)"] = [
            Tick(ms(int(clk.mono(c.tick))), f"CNTV fired at count {c.tick:#x}", "hw")
            for c in tr.hw.changes
            if c.level == 1 and c.tick is not None
        ]
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
    tl.ticks["exits"] = [
        Tick(
            ms(e.t_ns),
            f"exit {e.n} {e.reason}" + (f" {e.port}" if e.port else ""),
            "notice" if e.notice else ("mmio" if e.reason == "MMIO" else "other"),
        )
        for e in tr.exits
    ]
    tl.ticks["guest IRQ entry"] = [
        Tick(ms(e.t_ns), f"IRQ at exit {e.n}", "irq") for e in tr.ports("IRQ")
    ]
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
    return tl
