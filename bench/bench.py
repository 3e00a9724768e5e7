"""How fast the harness gets a verdict: figures and ratios on this machine.

    .venv/bin/python bench/bench.py [--runs N] [--cold]

Medians of N runs (min-max in brackets). Kernel builds go through the same
code as boot-test (harness.kernel); --cold also times a build with an empty
ccache and no cached trees (minutes).
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


def time_cmd(argv: list[str], **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.monotonic() - t0


def boot_runs(runs: int, results: Path) -> list[dict]:
    """`python -m harness boot-test` end to end (kernel cached), N times."""
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "harness", "boot-test", "--results", str(results)],
            cwd=ROOT, check=False, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.monotonic() - t0
        run_dir = max(results.iterdir(), key=lambda p: p.stat().st_mtime)
        data = json.loads((run_dir / "results.json").read_text())
        out.append({"wall": wall, "data": data, "dir": run_dir})
    return out


def bare_runs(run_dir: Path, runs: int) -> list[float]:
    """The same Image and initramfs in QEMU by hand: no harness, no QMP, no trace."""
    script = (run_dir / "qemu-cmdline.sh").read_text().splitlines()[-1]
    script = script.replace("-serial stdio", "-serial file:/dev/null")
    return [time_cmd(["sh", "-c", script + " </dev/null"]) for _ in range(runs)]


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
            (patch,) = rev_dir.glob("*.patch")
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


def cold_build() -> float:
    with tempfile.TemporaryDirectory(dir=repo.BUILD) as tmp:
        kernel.KERNELS = Path(tmp) / "kernels"
        kernel.CCACHE_DIR = Path(tmp) / "ccache"
        t0 = time.monotonic()
        kernel.build(revision.load("upstream"), machine.load("virt-gicv3"), say=lambda m: None)
        return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also time a cold kernel build")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "artifacts"], cwd=ROOT, check=True)
    kernel.build(revision.load("upstream"), machine.load("virt-gicv3"), say=lambda m: None)
    with tempfile.TemporaryDirectory() as tmp:
        ours = boot_runs(args.runs, Path(tmp))
        bare = bare_runs(ours[-1]["dir"], args.runs)
    walls = [r["wall"] for r in ours]
    qemu = [r["data"]["boot"]["wall_s"] for r in ours]
    init = [r["data"]["boot"]["init_s"] for r in ours if r["data"]["boot"].get("init_s")]
    overhead = [w - q for w, q in zip(walls, qemu, strict=True)]
    print(f"machine: {os.cpu_count()} CPUs; {args.runs} runs each; seconds, median [min-max]")
    print(f"warm make boot-test equivalent (kernel cached)   {fig(walls)}")
    print(f"  QEMU run (cont to exit), whole suite, one boot  {fig(qemu)}")
    print(f"  QEMU start to /init                             {fig(init)}")
    print(f"  harness overhead (wall - QEMU)                  {fig(overhead)}")
    print(f"bare QEMU, same Image + initramfs, no harness     {fig(bare)}")
    ratio = [w / b for w, b in zip(walls, bare, strict=True)]
    print(f"ratio ours / bare                                 {fig(ratio)}")
    share = [o / w * 100 for o, w in zip(overhead, walls, strict=True)]
    print(f"harness overhead, % of our wall time              {fig(share)}")
    tests = ours[-1]["data"]["tests"]
    print(f"per test (last run): {'test':<16} exits  exits/s  exits/edge")
    for t in tests:
        m = t["metrics"]
        print(f"  {'':18}{t['name']:<16} {m.get('exits', 0):5}  {m.get('exits_per_s') or 0:7}  "
              f"{m.get('exits_per_edge') or '-'}")  # fmt: skip
    rebuild = patch_rebuilds(max(2, args.runs // 2))
    print(f"incremental rebuild after a one-file patch change  {fig(rebuild)}")
    if args.cold:
        print(
            f"cold kernel build (empty ccache, -j{os.cpu_count()})          {fig([cold_build()])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
