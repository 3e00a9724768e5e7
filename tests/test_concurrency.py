"""Several harness processes at once on one machine: real processes, real files.

make artifacts under one lock, kernel builds seeding from donors other
processes hold, image caches pruned while other runs use an image, and cache
stamps written atomically and survived when corrupt. Nothing here builds a
kernel or boots QEMU: the kernel build's make is a stand-in, the cached
images are small files.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import artifacts, locks, repo
from harness.errors import BuildError

CTX = multiprocessing.get_context("fork")  # children inherit the test's monkeypatching


def _in_children(target: Callable[..., object], args_list: list[tuple], timeout: float = 60):
    """Run target(*args) in one child process per args, all started at once; the exit
    codes (None: still running at the timeout, then killed)."""
    procs = [CTX.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return codes


def _wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# -- make artifacts ----------------------------------------------------------


def _small_tree(dest: Path) -> Path:
    """A copy of the repository's Makefile and sources with two guest tests (fast to make)."""
    dest.mkdir()
    for name in ("Makefile", "scripts", "vmm"):
        src = repo.ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    for name in ("runtime", "qemu"):
        shutil.copytree(repo.GUEST_TESTS / name, dest / "guest_tests" / name)
    for name in ("oneshot_wfi.c", "rearm_n.c"):
        shutil.copy2(repo.GUEST_TESTS / name, dest / "guest_tests" / name)
    (dest / "build").mkdir()
    (dest / "build" / ".deps-stamp").touch()  # the host's packages are there (make deps)
    return dest


def _outputs(root: Path) -> dict[str, str]:
    build = root / "build"
    files = [
        build / "vmm/vtvmm",
        *sorted(build.glob("guests/*.bin")),
        *build.glob("qemu-guests/*.elf"),
    ]
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _make_and_hash(root: Path, by_hand: bool, report: Path) -> None:
    """One harness (or a user's make artifacts): make, then read every image at once."""
    if by_hand:
        out = subprocess.run(["make", "-s", "-C", str(root), "artifacts"], capture_output=True)
        if out.returncode:
            report.write_text("make failed: " + out.stderr.decode(errors="replace"))
            os._exit(1)
    else:
        try:
            artifacts.build_artifacts(root)
        except BuildError as e:
            report.write_text(f"failed: {e}")
            os._exit(1)
    report.write_text(json.dumps(_outputs(root)))
    os._exit(0)


def test_concurrent_make_artifacts_never_fails_and_leaves_whole_images(tmp_path):
    root = _small_tree(tmp_path / "tree")
    artifacts.build_artifacts(root)
    reference = _outputs(root)
    assert "build/vmm/vtvmm" in reference and len(reference) >= 4
    for round_ in range(3):
        # a developer edited the sources: every process has real work to do
        for src in (*root.glob("vmm/*.c"), *root.glob("guest_tests/**/*.[cS]")):
            os.utime(src)
        reports = [tmp_path / f"r{round_}-{i}.json" for i in range(5)]
        args = [(root, i >= 3, r) for i, r in enumerate(reports)]  # 3 harnesses, 2 users
        codes = _in_children(_make_and_hash, args, timeout=300)
        texts = [r.read_text() if r.exists() else "no report" for r in reports]
        assert codes == [0] * 5, texts
        for text in texts:
            assert json.loads(text) == reference  # whole images, the same as a serial make
    assert not list((root / "build").glob("**/*.tmp"))


def test_make_artifacts_waits_for_the_lock_with_a_deadline(tmp_path):
    root = _small_tree(tmp_path / "tree")
    ready = tmp_path / "held"

    def hold() -> None:
        with locks.locked(root / artifacts.LOCK, what="a stuck make artifacts"):
            ready.touch()
            time.sleep(30)

    holder = CTX.Process(target=hold)
    holder.start()
    try:
        _wait_for(ready)
        said: list[str] = []
        start = time.monotonic()
        with pytest.raises(locks.LockTimeout) as e:
            artifacts.build_artifacts(root, say=said.append, wait_s=0.5)
        assert time.monotonic() - start < 5
        assert "build/.artifacts.lock" in str(e.value)
        assert f"held by pid {holder.pid}: a stuck make artifacts" in str(e.value)
        assert len(said) == 1 and "waiting for" in said[0]
    finally:
        holder.kill()
        holder.join()
    artifacts.build_artifacts(root, wait_s=5)  # the kernel dropped the dead holder's lock
    assert (root / "build/vmm/vtvmm").is_file()
