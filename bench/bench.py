"""How fast the harness gets a verdict: figures and ratios on this machine.

    .venv/bin/python bench/bench.py [--runs N] [--nightly] [--first-run] [--cold]

Medians of N runs (min-max in brackets). The three boots of each round run
back to back, so their ratios are taken pair by pair:
  ours          `python -m harness boot-test` (kernel cached), whole process
  bare          the run's own qemu-cmdline.sh (same Image, initramfs and
                machine; console and records port to /dev/null): no harness,
                no QMP, no trace
  bare+trace    the same with the run's trace events on (-trace enable=...,
                -D to a file, -msg timestamp=on): QEMU's own tracing cost
--nightly runs matrix/nightly.yaml once (its wall time and slot utilisation);
--first-run times bench/first_run.py (a fresh clone, empty ccache: minutes);
--cold times a kernel build with an empty ccache and no cached trees.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.build import kernel  # noqa: E402
from harness.core import repo  # noqa: E402
from harness.inputs import machine, revision  # noqa: E402


def fig(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:8.2f}  [{min(values):.2f}-{max(values):.2f}]"


def timed(argv: list[str], **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.monotonic() - t0


def ours(results: Path) -> tuple[float, dict, Path]:
    """One boot-test, whole process: wall, results.json, run dir."""
    argv = [sys.executable, "-m", "harness", "boot-test", "--results", str(results)]
    wall = timed(argv, cwd=ROOT)
    run_dir = max(results.iterdir(), key=lambda p: p.stat().st_mtime)
    return wall, json.loads((run_dir / "results.json").read_text()), run_dir


def bare_lines(run_dir: Path, events: list[str], scratch: Path) -> tuple[str, str]:
    """The run's machine by hand: bare, and bare with the run's trace events on."""
    line = (run_dir / "qemu-cmdline.sh").read_text().splitlines()[-1]
    line = line.replace("-serial stdio", "-serial file:/dev/null")
    line = line.replace("path=records.log", "path=/dev/null")
    trace = " ".join(f"-trace enable={e}" for e in events)
    traced = f"{line} -msg timestamp=on -D {scratch / 'trace.log'} {trace}"
    return line, traced


def ratio_rounds(runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("ours", "qemu", "init", "bare", "traced")}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        results = scratch / "results"
        results.mkdir()
        ours(results)  # a warm-up: the page cache, the kernel's cache stamp
        for _ in range(runs):
            wall, data, run_dir = ours(results)
            bare, traced = bare_lines(run_dir, data["boot"]["trace_events"], scratch)
            out["ours"].append(wall)
            out["qemu"].append(data["boot"]["wall_s"])
            out["init"].append(data["boot"]["init_s"] or 0.0)
            out["bare"].append(timed(["sh", "-c", bare + " </dev/null"]))
            out["traced"].append(timed(["sh", "-c", traced + " </dev/null"]))
    return out


def print_ratios(r: dict[str, list[float]]) -> None:
    pairs = list(zip(r["ours"], r["bare"], r["traced"], strict=True))
    print(f"warm boot-test, whole process (kernel cached)   {fig(r['ours'])}")
    print(f"  QEMU's part (start to exit)                   {fig(r['qemu'])}")
    print(f"  QEMU start to /init                           {fig(r['init'])}")
    print(f"bare QEMU, same Image, initramfs and machine    {fig(r['bare'])}")
    print(f"bare QEMU with the same trace events on         {fig(r['traced'])}")
    print(f"ratio ours / bare                 (target 1.10) {fig([o / b for o, b, _ in pairs])}")
    print(f"ratio bare+trace / bare (QEMU's tracing cost)   {fig([t / b for _, b, t in pairs])}")
    print(f"ratio ours / bare+trace (the harness's cost)    {fig([o / t for o, _, t in pairs])}")
    share = [(o - q) / o * 100 for o, q in zip(r["ours"], r["qemu"], strict=True)]
    print(f"harness outside QEMU, % of our wall time        {fig(share)}")


def patch_rebuilds(runs: int) -> list[float]:
    """A reviewer's loop: change one line of v6's patch (in its arch_timer.c hunk),
    rebuild. Each change is a new cache key; the previous build seeds the objects."""
    times = []
    dirs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 1):  # the first build only sets the loop up: not timed
            rev_dir = Path(tmp) / f"benchrev{i}"
            shutil.copytree(repo.KERNEL_PATCHES / "v6", rev_dir)
            prof = rev_dir / "profile.yaml"
            prof.write_text(prof.read_text().replace("revision: v6", f"revision: benchrev{i}"))
            patch = sorted(rev_dir.glob("*.patch"))[0]
            marker = "+ * Reflect the vtimer output level into the kvm_run structure"
            text = patch.read_text()
            assert marker in text, "bench: the v6 patch changed; pick another line"
            patch.write_text(text.replace(marker, marker + f" ({i}, {time.time():.0f})"))
            t0 = time.monotonic()
            k = kernel.build(
                revision.load(str(rev_dir)), machine.load("virt-gicv3"), say=lambda m: None
            )
            if i:
                times.append(time.monotonic() - t0)
            dirs.append(repo.ROOT / k.build_dir)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return times


def cold_build() -> kernel.Kernel:
    with tempfile.TemporaryDirectory(dir=repo.BUILD) as tmp:
        kernel.KERNELS = Path(tmp) / "kernels"
        kernel.CCACHE_DIR = Path(tmp) / "ccache"
        return kernel.build(revision.load("upstream"), machine.load("virt-gicv3"), say=print)


def nightly() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        argv = [sys.executable, "-m", "harness", "matrix", "matrix/nightly.yaml"]
        timed([*argv, "--results", tmp], cwd=ROOT)
        wall = time.monotonic() - t0
        (mdir,) = Path(tmp).glob("*/matrix.json")
        m = json.loads(mdir.read_text())
    ok = sum(c.get("as_expected", False) for c in m["cells"])
    print(f"nightly matrix, {len(m['cells'])} cells, {m['slots']} slots  (target 60 s) {wall:8.1f}")
    print(f"  cells as expected: {ok} of {len(m['cells'])}; utilisation {m.get('utilisation')}")
    for c in m["cells"]:  # the run directories are gone with tmp: say what went wrong
        if not c.get("as_expected", False):
            print(f"  not as expected: {c.get('name')}: {c.get('outcome')}, {c.get('reason')}")


def machine_speed(runs: int = 20) -> float:
    """The machine's speed now: Python's bare start (`python -S -c pass`), median ms.
    A shared host's speed drifts (this project's machine ran 1.5 x slower for stretches
    of a session): the figures of two runs compare when this one does too."""
    walls = [timed([sys.executable, "-S", "-c", "pass"]) for _ in range(runs)]
    return statistics.median(walls) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nightly", action="store_true", help="also time the nightly matrix")
    ap.add_argument("--first-run", action="store_true", help="also time a fresh clone's first run")
    ap.add_argument("--cold", action="store_true", help="also time a cold kernel build")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "artifacts"], cwd=ROOT, check=True)
    kernel.build(revision.load("upstream"), machine.load("virt-gicv3"), say=lambda m: None)
    print(f"machine: {os.cpu_count()} CPUs; {args.runs} rounds; seconds, median [min-max]")
    print(f"machine speed: python -S -c pass {machine_speed():.1f} ms (median of 20)")
    print_ratios(ratio_rounds(args.runs))
    print(f"machine speed after: python -S -c pass {machine_speed():.1f} ms")
    rebuild = patch_rebuilds(max(2, args.runs // 2))
    print(f"incremental rebuild after a one-file patch change  {fig(rebuild)}")
    if args.nightly:
        nightly()
    if args.first_run:
        subprocess.run([sys.executable, str(ROOT / "bench" / "first_run.py")], check=False)
    if args.cold:
        k = cold_build()
        jobs = os.cpu_count()
        print(f"cold kernel build (empty ccache, -j{jobs})  {k.build_seconds} s: {k.phases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
