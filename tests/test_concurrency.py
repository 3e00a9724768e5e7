"""Several harness processes at once on one machine: real processes, real files.

make artifacts under one lock, kernel builds seeding from donors other
processes hold, image caches pruned while other runs use an image, and cache
stamps written atomically and survived when corrupt. Nothing here builds a
kernel or boots QEMU: the kernel build's make is a stand-in, the cached
images are small files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cachefakes
import pytest

from harness.build import artifacts, initramfs, kernel, qemu_initrd, rootfs
from harness.core import locks, repo
from harness.core.errors import BuildError
from harness.inputs import machine, revision

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
    for stamp in (".deps-stamp", ".deps-boot-stamp"):  # the host's packages are there
        (dest / "build" / stamp).touch()
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


# -- kernel builds seeding from a donor --------------------------------------


def _rebuilding(lock: Path, out: Path, ready: Path, seconds: float) -> None:
    """Another run rebuilding a kernel: its lock held while its object tree is in flux."""
    with locks.locked(lock, what="kernel build (test)"):
        (out / "HALF-WRITTEN").write_text("x")
        ready.touch()
        time.sleep(seconds)
        (out / "HALF-WRITTEN").unlink()
        (out / "WHOLE").write_text("x")
    os._exit(0)


def _two_kernels(tmp_path, monkeypatch):
    fk = cachefakes.fake_kernels(tmp_path, monkeypatch)
    mach = machine.load("virt-gicv3")
    ra, rb = (revision.load(str(fk.revision(n, f))) for n, f in (("ra", "a.c"), ("rb", "b.c")))
    return fk, mach, ra, rb


def test_seeding_waits_for_a_donor_being_rebuilt(tmp_path, monkeypatch):
    fk, mach, ra, rb = _two_kernels(tmp_path, monkeypatch)
    kernel.build(ra, mach, say=lambda m: None)
    da = kernel.build_dir(ra, mach)
    ready = tmp_path / "ready"
    holder = CTX.Process(
        target=_rebuilding, args=(kernel.lock_path(da), da / "linux" / "out", ready, 1.5)
    )
    holder.start()
    _wait_for(ready)
    said: list[str] = []
    kb = kernel.build(rb, mach, say=said.append)
    holder.join(10)
    assert holder.exitcode == 0
    assert any("waiting for" in m and f"pid {holder.pid}" in m for m in said), said
    assert any(m.startswith("kernel: seeding objects from") for m in said), said
    out = kernel.build_dir(rb, mach) / "linux" / "out"
    assert (out / "WHOLE").is_file() and not (out / "HALF-WRITTEN").exists()  # after the rebuild
    assert fk.targets() == ["allnoconfig", "Image", "Image"]  # b's config came with the seed
    assert kb.image.read_bytes() == b"Image of int a;\nint b_rb;\n"


def test_a_donor_busy_past_the_deadline_is_skipped(tmp_path, monkeypatch):
    fk, mach, ra, rb = _two_kernels(tmp_path, monkeypatch)
    monkeypatch.setattr(kernel, "DONOR_WAIT_S", 0.5)
    kernel.build(ra, mach, say=lambda m: None)
    da = kernel.build_dir(ra, mach)
    ready = tmp_path / "ready"
    holder = CTX.Process(
        target=_rebuilding, args=(kernel.lock_path(da), da / "linux" / "out", ready, 30)
    )
    holder.start()
    try:
        _wait_for(ready)
        said: list[str] = []
        start = time.monotonic()
        kernel.build(rb, mach, say=said.append)
        assert time.monotonic() - start < 10
    finally:
        holder.kill()
        holder.join()
    assert any(m.startswith(f"kernel: not seeding from {da}: its lock is") for m in said), said
    assert not any("seeding objects" in m for m in said)
    assert not (kernel.build_dir(rb, mach) / "linux" / "out" / "HALF-WRITTEN").exists()
    assert fk.targets() == ["allnoconfig", "Image", "allnoconfig", "Image"]  # built afresh


def _seed_under_own_lock(
    bdir: Path, other_ready: Path, own_ready: Path, report: Path, other_report: Path
) -> None:
    """What build() does: its own lock held, then seed from a donor."""
    info = json.loads((bdir / kernel.DONE).read_text())
    said: list[str] = []
    with locks.locked(kernel.lock_path(bdir)):
        own_ready.touch()
        _wait_for(other_ready)
        seeded = kernel._seed(bdir, info["source"], info["config_hash"], [], said.append)
        report.write_text(json.dumps({"seeded": seeded, "said": said}))
        _wait_for(other_report)  # both still hold their own lock: each gave up on the other
    os._exit(0)


def test_two_builds_seeding_from_each_other_do_not_deadlock(tmp_path, monkeypatch):
    _, mach, ra, rb = _two_kernels(tmp_path, monkeypatch)
    monkeypatch.setattr(kernel, "DONOR_WAIT_S", 1.0)
    for rev in (ra, rb):
        kernel.build(rev, mach, say=lambda m: None)
    da, db = kernel.build_dir(ra, mach), kernel.build_dir(rb, mach)
    ready = {d: tmp_path / f"{d.name}.ready" for d in (da, db)}
    reports = [tmp_path / "a.json", tmp_path / "b.json"]
    args = [
        (da, ready[db], ready[da], reports[0], reports[1]),
        (db, ready[da], ready[db], reports[1], reports[0]),
    ]
    start = time.monotonic()
    codes = _in_children(_seed_under_own_lock, args, timeout=30)
    assert codes == [0, 0], "deadlock: the builds waited for each other"
    assert time.monotonic() - start < 15
    for report, other in zip(reports, (db, da), strict=True):
        r = json.loads(report.read_text())
        assert r["seeded"] is False
        assert any(m.startswith(f"kernel: not seeding from {other}") for m in r["said"]), r


# -- cached images pruned while other runs use them ----------------------------


def _fake_initrd_inputs(tmp_path, monkeypatch) -> rootfs.Rootfs:
    vmm = tmp_path / "vtvmm"
    vmm.write_bytes(b"\x7fELF the VMM")
    monkeypatch.setattr(repo, "VMM_BIN", vmm)
    cpio = tmp_path / "rootfs" / "qemu-x" / "rootfs.cpio"
    cpio.parent.mkdir(parents=True)
    cpio.write_bytes(b"070701" + b"\0" * 4000)
    return rootfs.Rootfs(cpio, "x", {}, {})


def _plan(n: int) -> initramfs.SuitePlan:
    return initramfs.SuitePlan(f"abi{n}", "every-exit", ())  # a suite part of its own


def _boot_held(fs, n: int, report: Path, release: Path) -> None:
    """A run that made (or found) its initrd and is booting it until told to stop."""
    with contextlib.ExitStack() as hold:
        out = qemu_initrd.build_initrd(_plan(n), [], fs, report.with_suffix(".gz"), hold)
        report.write_text(str(out))
        _wait_for(release, timeout=60)
        report.write_text(out.read_bytes().hex())  # QEMU opens it only now: still there
    os._exit(0)


def test_pruning_initrds_never_removes_one_another_run_is_booting(tmp_path, monkeypatch):
    fs = _fake_initrd_inputs(tmp_path, monkeypatch)
    report, release = tmp_path / "run.txt", tmp_path / "release"
    booting = CTX.Process(target=_boot_held, args=(fs, 0, report, release))
    booting.start()
    _wait_for(report)
    held = Path(report.read_text())
    made = []
    for n in range(1, qemu_initrd.KEEP_INITRDS + 3):  # other runs, each pruning
        made.append(qemu_initrd.build_initrd(_plan(n), [], fs, tmp_path / f"s{n}.gz"))
    left = sorted(held.parent.glob("*.img"))
    assert held in left  # the oldest, but in use
    assert len(left) == qemu_initrd.KEEP_INITRDS + 1 and made[0] not in left
    with contextlib.ExitStack() as hold:  # a second run about to boot the same image
        assert qemu_initrd.build_initrd(_plan(0), [], fs, tmp_path / "again.gz", hold) == held
        release.touch()
        booting.join(30)
        assert booting.exitcode == 0
        assert bytes.fromhex(report.read_text()).startswith(fs.cpio.read_bytes())
        for n in range(10, 13):
            qemu_initrd.build_initrd(_plan(n), [], fs, tmp_path / f"s{n}.gz")
        assert held.is_file()  # the second run still holds it
    qemu_initrd.build_initrd(_plan(20), [], fs, tmp_path / "s20.gz")
    left = sorted(held.parent.glob("*.img"))
    assert held not in left and len(left) == qemu_initrd.KEEP_INITRDS  # nobody holds it now
    assert not list(held.parent.glob(".*"))  # no temp files


def test_runs_making_the_same_initrd_at_once_share_one_whole_file(tmp_path, monkeypatch):
    fs = _fake_initrd_inputs(tmp_path, monkeypatch)
    plan = _plan(0)
    start = threading.Barrier(4)
    got: list[Path] = []

    def run(i: int) -> None:  # matrix workers are threads of one process
        with contextlib.ExitStack() as hold:
            start.wait()
            got.append(qemu_initrd.build_initrd(plan, [], fs, tmp_path / f"{i}.gz", hold))
            start.wait()  # all hold it at once

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 4 and len(set(got)) == 1
    suite = (tmp_path / "0.gz").read_bytes()
    assert got[0].read_bytes() == fs.cpio.read_bytes() + suite
    assert [p.name for p in got[0].parent.iterdir()] == [got[0].name]


def _hold_rootfs(report: Path, release: Path) -> None:
    with contextlib.ExitStack() as hold:
        fs = rootfs.build(say=lambda m: None, hold=hold)
        report.write_text(str(fs.cpio))
        _wait_for(release, timeout=60)
    os._exit(0)


def test_pruning_rootfs_images_keeps_one_a_run_uses(tmp_path, monkeypatch):
    apt = cachefakes.fake_rootfs(tmp_path, monkeypatch)
    report, release = tmp_path / "run.txt", tmp_path / "release"
    user = CTX.Process(target=_hold_rootfs, args=(report, release))
    user.start()
    try:
        _wait_for(report)
        used = Path(report.read_text()).parent
        kept = []
        for v in ("2", "3", "4"):  # package updates: new images, each build prunes
            apt.update(v)
            kept.append(rootfs.build(say=lambda m: None).cpio.parent)
        images = sorted((tmp_path / "rootfs").glob("qemu-*"))
        assert used in images and kept[0] not in images  # the oldest is in use
        assert images == sorted([used, *kept[1:]])
    finally:
        release.touch()
        user.join(30)
    assert user.exitcode == 0
    apt.update("5")
    rootfs.build(say=lambda m: None)
    assert used not in sorted((tmp_path / "rootfs").glob("qemu-*"))
    debs = sorted(p.name for p in (tmp_path / "rootfs" / "debs").iterdir())
    assert debs == ["libc6_5_arm64.deb", "qemu-system-arm_1_arm64.deb"]


def test_pruning_a_rootfs_image_keeps_it_while_an_initrd_made_from_it_is_booting(
    tmp_path, monkeypatch
):
    apt = cachefakes.fake_rootfs(tmp_path, monkeypatch)
    monkeypatch.setattr(repo, "VMM_BIN", tmp_path / "qemu-system-aarch64")  # any file
    old = rootfs.build(say=lambda m: None)
    with contextlib.ExitStack() as hold:
        initrd = qemu_initrd.build_initrd(_plan(0), [], old, tmp_path / "s.gz", hold)
        for v in ("2", "3"):
            apt.update(v)
            rootfs.build(say=lambda m: None)
        assert initrd.is_file() and old.cpio.is_file()
    apt.update("4")
    rootfs.build(say=lambda m: None)
    assert not old.cpio.parent.exists()


def _hold_for(lock: Path, ready: Path, seconds: float, what: str) -> None:
    with locks.locked(lock, what=what):
        ready.touch()
        time.sleep(seconds)
    os._exit(0)


def test_a_run_waiting_for_the_rootfs_build_says_who_holds_it(tmp_path, monkeypatch):
    cachefakes.fake_rootfs(tmp_path, monkeypatch)
    rootfs.build(say=lambda m: None)
    ready = tmp_path / "ready"
    lock = tmp_path / "rootfs" / ".build.lock"
    other = CTX.Process(target=_hold_for, args=(lock, ready, 1.0, "the QEMU rootfs"))
    other.start()
    _wait_for(ready)
    said: list[str] = []
    assert rootfs.build(say=said.append).cached
    other.join(10)
    assert said == [f"rootfs: waiting for {lock} (held by pid {other.pid}: the QEMU rootfs)"]


def test_matrix_threads_making_artifacts_at_once(tmp_path):
    root = _small_tree(tmp_path / "tree")
    artifacts.build_artifacts(root)
    reference = _outputs(root)
    for src in (*root.glob("vmm/*.c"), *root.glob("guest_tests/**/*.[cS]")):
        os.utime(src)
    errors: list[BaseException] = []
    seen: list[dict[str, str]] = []
    start = threading.Barrier(4)

    def worker() -> None:  # flock is per open file: threads of one process exclude each other
        start.wait()
        try:
            artifacts.build_artifacts(root)
            seen.append(_outputs(root))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors and seen == [reference] * 4
