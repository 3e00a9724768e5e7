"""Layer-0 analysis speed on a storm-sized trace, against reading the file.

    .venv/bin/python bench/analysis.py [--events N] [--runs R]

Writes a synthetic QEMU trace of N arm_gt_* events (KVM load / guest arm /
fire / mask / put cycles, the shape of a storming test's trace, one VM per
100k events), then times, R times each: reading its lines (the floor), and
qemu_trace.Reader turning it into VM timelines (regexes, the per-CPU state
machine, the bounded change lists). Prints medians [min-max], events per
second and the ratio analysis / read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.traces import qemu_trace  # noqa: E402

# QEMU 7.2's log backend lines, with the thread id and time of -msg timestamp=on
CYCLE = tuple(
    "27186@1795553183.647210:" + line
    for line in (
        "arm_gt_cntvoff_write gt_cntvoff_write: value {off:#x}",
        "arm_gt_cval_write gt_cval_write: timer 1 value 0x0",
        "arm_gt_ctl_write gt_ctl_write: timer 1 value 0x0",
        "arm_gt_cval_write gt_cval_write: timer 1 value {cval:#x}",
        "arm_gt_ctl_write gt_ctl_write: timer 1 value 0x1",
        "arm_gt_recalc gt recalc: timer 1 irqstate 0 next tick 0x100",
        "arm_gt_recalc gt recalc: timer 1 irqstate 1 next tick 0x200",
        "arm_gt_ctl_write gt_ctl_write: timer 1 value 0x3",
        "arm_gt_recalc gt recalc: timer 1 irqstate 0 next tick 0x0",
        "arm_gt_ctl_write gt_ctl_write: timer 1 value 0x0",
        "arm_gt_cntvoff_write gt_cntvoff_write: value 0x0",
    )
)


def write_trace(path: Path, events: int) -> None:
    with open(path, "w") as f:
        for i in range(events // len(CYCLE)):
            off = 0x10_0000 * (1 + i * len(CYCLE) // 100_000)
            for line in CYCLE:
                f.write(line.format(off=off, cval=0x1000 + i) + "\n")


def read_lines(path: Path) -> int:
    with open(path) as f:
        return sum(1 for _ in f)


def analyse(path: Path) -> int:
    return sum(v.edges() for v in qemu_trace.Reader(path).timelines())


def timed(fn, path: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(path)
        out.append(time.perf_counter() - t0)
    return out


def fig(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}]"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qemu-trace.log"
        write_trace(path, args.events)
        n = read_lines(path)
        size = path.stat().st_size
        read = timed(read_lines, path, args.runs)
        ana = timed(analyse, path, args.runs)
        rises = analyse(path)
    med = statistics.median(ana)
    print(f"trace: {n} events, {size / 1e6:.0f} MB, {rises} rises")
    print(f"read the lines:         {fig(read)}")
    print(f"layer-0 analysis:       {fig(ana)}  ({n / med:,.0f} events/s)")
    print(f"ratio analysis / read:  {med / statistics.median(read):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
