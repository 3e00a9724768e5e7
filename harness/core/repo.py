"""Where things live, relative to the repository root."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # harness/core/repo.py
GUEST_TESTS = ROOT / "guest_tests"
KERNEL_PATCHES = ROOT / "kernel_patches"
QEMU_CONFIGS = ROOT / "qemu_configs"
RESULTS = ROOT / "results"
BUILD = ROOT / "build"
GUEST_BINS = BUILD / "guests"
VMM_BIN = BUILD / "vmm" / "vtvmm"


def rel(path: Path) -> str:
    """A path as shown to users: relative to the repo when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except (ValueError, RuntimeError):  # outside; a NUL byte; a symlink loop
        return str(path)


def inside(base: Path, path: Path) -> bool:
    """True when path (after resolving symlinks and ..) lies under base; False too for
    a path that cannot be resolved (a NUL byte in it, a symlink loop)."""
    try:
        path.resolve().relative_to(base.resolve())
    except (ValueError, RuntimeError):  # resolve(): RuntimeError for a symlink loop
        return False
    return True


def git_describe() -> str:
    """The harness's own version: git describe of the tree ("unknown" outside git)."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"
