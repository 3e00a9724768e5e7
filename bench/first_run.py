"""A first `make boot-test` as a new user gets it: where its seconds go.

    .venv/bin/python bench/first_run.py [--keep]

A fresh clone of this checkout's HEAD in a temporary directory, an empty
ccache and no pip cache; the host's apt packages are taken as installed (the
install step only checks them: what apt would download on a bare machine is
not timed here). Each step of the Makefile is timed on its own, then the
kernel build's phases (results.json identity.kernel.phases) and the boot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = (
    ("apt packages (checked)", ["make", "build/.deps-boot-stamp"]),
    ("venv (pip, no cache)", ["make", "venv"]),
    ("VMM, guests, bytecode", ["make", "artifacts"]),
    ("boot-test (kernel + boot)", ["make", "boot-test"]),
)


def run(clone: Path, env: dict[str, str]) -> dict[str, float]:
    times: dict[str, float] = {}
    for name, argv in STEPS:
        t0 = time.monotonic()
        r = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True)
        times[name] = time.monotonic() - t0
        if r.returncode not in (0, 1):  # 1: a test failed (a figure still)
            sys.exit(f"first_run: {' '.join(argv)} failed ({r.returncode}): {r.stderr[-400:]}")
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-first-run-"))
    clone = tmp / "vtimer-harness"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = dict(os.environ, CCACHE_DIR=str(tmp / "ccache"), PIP_NO_CACHE_DIR="1")
    t0 = time.monotonic()
    times = run(clone, env)
    total = time.monotonic() - t0
    (res,) = (clone / "results").glob("*/results.json")
    data = json.loads(res.read_text())
    k = data["identity"]["kernel"]
    print(f"first make boot-test, fresh clone, empty ccache   (target 300 s) {total:7.1f}")
    for name, secs in times.items():
        print(f"  {name:<32} {secs:7.1f}")
    phases = ", ".join(f"{p} {s:.1f}" for p, s in (k.get("phases") or {}).items())
    boot = data["boot"]["wall_s"]
    print(f"  of which the kernel: {k.get('build_seconds')} s ({phases}); boot {boot} s")
    if args.keep:
        print(f"  clone kept: {clone}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
