"""Cache stamps: written atomically; a corrupt one is a stale entry, never a traceback."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import cachefakes
import pytest

from harness.build import debkernel, kernel, rootfs
from harness.core import stamps
from harness.core.errors import BuildError, HarnessError
from harness.inputs import machine, revision

CTX = multiprocessing.get_context("fork")
CORRUPT = {
    "empty": b"",
    "truncated": b'{"image": "build/kernels/x/linux/out/arch/arm64/boo',
    "a list": b"[1, 2]",
    "fields missing": b'{"release": "6.1.0"}',
    "binary": b"\x00\x8f\xfe garbage",
}


def _rewrite(path, rounds: int) -> None:
    for i in range(rounds):
        stamps.write(path, {"round": i, "pad": [i] * 20000})
    os._exit(0)


def test_a_reader_never_sees_half_a_stamp(tmp_path):
    path = tmp_path / "kernel.json"
    stamps.write(path, {"round": -1, "pad": []})
    writer = CTX.Process(target=_rewrite, args=(path, 200))
    writer.start()
    seen = set()
    while writer.is_alive() or not seen:
        seen.add(stamps.load(path, ["round", "pad"])["round"])  # never Corrupt
    writer.join()
    assert writer.exitcode == 0 and len(seen) > 1
    assert stamps.load(path)["round"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["kernel.json"]  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o644


def _crash_while_writing(path) -> None:
    def crash(fd: int) -> None:  # the machine dies after the data, before the rename
        os._exit(3)

    os.fsync = crash
    stamps.write(path, {"new": True})


def test_a_crash_while_writing_leaves_the_old_stamp(tmp_path):
    path = tmp_path / "kernel.json"
    stamps.write(path, {"old": True})
    p = CTX.Process(target=_crash_while_writing, args=(path,))
    p.start()
    p.join(10)
    assert p.exitcode == 3
    assert stamps.load(path) == {"old": True}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_kernel_json_is_rebuilt_with_a_notice(tmp_path, monkeypatch, content):
    fk = cachefakes.fake_kernels(tmp_path, monkeypatch)
    rev, mach = revision.load(str(fk.revision("ra"))), machine.load("virt-gicv3")
    kernel.build(rev, mach, say=lambda m: None)
    done = kernel.build_dir(rev, mach) / kernel.DONE
    done.write_bytes(content)
    said: list[str] = []
    again = kernel.build(rev, mach, say=said.append)
    notices = [m for m in said if "corrupt cache stamp" in m]
    assert len(notices) == 1, said
    assert notices[0].startswith(f"kernel: {done}: corrupt cache stamp (")
    assert notices[0].endswith("): rebuilding") and "\n" not in notices[0]
    assert not again.cached and again.image.is_file()
    assert fk.targets() == ["allnoconfig", "Image", "Image"]  # the tree was reused
    assert stamps.load(done)["release"] == "6.1.0-fake"
    assert kernel.build(rev, mach, say=lambda m: None).cached


def test_a_corrupt_stamp_of_another_build_is_no_donor(tmp_path, monkeypatch):
    fk = cachefakes.fake_kernels(tmp_path, monkeypatch)
    mach = machine.load("virt-gicv3")
    ra, rb = (revision.load(str(fk.revision(n, f))) for n, f in (("ra", "a.c"), ("rb", "b.c")))
    kernel.build(ra, mach, say=lambda m: None)
    (kernel.build_dir(ra, mach) / kernel.DONE).write_bytes(CORRUPT["truncated"])
    said: list[str] = []
    kernel.build(rb, mach, say=said.append)
    assert not any("seeding" in m for m in said)
    assert fk.targets() == ["allnoconfig", "Image", "allnoconfig", "Image"]


def test_stamp_errors_name_the_file(tmp_path):
    path = tmp_path / "rootfs.json"
    for content in CORRUPT.values():
        path.write_bytes(content)
        with pytest.raises(stamps.Corrupt) as e:
            stamps.load(path, ["image"])
        assert str(e.value).startswith(f"{path}: corrupt cache stamp (")
    with pytest.raises(FileNotFoundError):
        stamps.load(tmp_path / "none.json")


PKG = "linux-image-6.1.0-99-arm64"


MODULES = {
    "lib/modules/6.1.0-99-arm64/kernel/drivers/virtio/virtio_mmio.ko": b"mmio",
    "lib/modules/6.1.0-99-arm64/kernel/drivers/char/virtio_console.ko": b"console",
}


def _fake_apt(tmp_path, monkeypatch, fail: bool = False, modules: bool = True) -> None:
    """apt-get download of PKG: a real .deb holding boot/vmlinuz-6.1.0-99-arm64 (and the
    records port's modules)."""
    files = {"boot/vmlinuz-6.1.0-99-arm64": b"Image"} | (MODULES if modules else {})
    deb = cachefakes.deb(tmp_path, PKG, "6.1.999-1", files)

    def download(package: str, dest, say):
        if fail:
            raise HarnessError(None, f"apt-get download {package}:arm64 failed: no network")
        return Path(shutil.copy(deb, dest))

    monkeypatch.setattr(debkernel, "DEBKERNELS", tmp_path / "debkernels")
    monkeypatch.setattr(debkernel, "ensure_arm64", lambda say: None)
    monkeypatch.setattr(debkernel, "_download", download)


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_debkernel_stamp_is_fetched_again_with_a_notice(tmp_path, monkeypatch, content):
    _fake_apt(tmp_path, monkeypatch)
    first = debkernel.fetch(PKG, say=lambda m: None)
    assert first.release == "6.1.0-99-arm64" and first.image.read_bytes() == b"Image"
    done = tmp_path / "debkernels" / PKG / debkernel.DONE
    done.write_bytes(content)
    said: list[str] = []
    again = debkernel.fetch(PKG, say=said.append)
    assert said[0] == said[0].splitlines()[0]
    assert said[0].startswith(f"debkernel: {done}: corrupt cache stamp (")
    assert said[0].endswith("): fetching it again")
    assert not again.cached and again.image.is_file()
    assert stamps.load(done)["version"] == "6.1.999-1"
    assert debkernel.fetch(PKG, say=lambda m: None).cached


def test_a_stamp_naming_an_image_elsewhere_is_corrupt(tmp_path, monkeypatch):
    _fake_apt(tmp_path, monkeypatch)
    debkernel.fetch(PKG, say=lambda m: None)
    done = tmp_path / "debkernels" / PKG / debkernel.DONE
    stamps.write(done, stamps.load(done) | {"image": "../../../etc/passwd"})
    said: list[str] = []
    assert not debkernel.fetch(PKG, say=said.append).cached
    assert "corrupt cache stamp (image '../../../etc/passwd')" in said[0]


def test_a_corrupt_debkernel_stamp_that_cannot_be_fetched_again_is_one_error(tmp_path, monkeypatch):
    _fake_apt(tmp_path, monkeypatch)
    debkernel.fetch(PKG, say=lambda m: None)
    done = tmp_path / "debkernels" / PKG / debkernel.DONE
    done.write_bytes(CORRUPT["truncated"])
    _fake_apt(tmp_path, monkeypatch, fail=True)
    with pytest.raises(HarnessError) as e:
        debkernel.fetch(PKG, say=lambda m: None)
    msg = str(e.value)
    assert msg.startswith(f"{done}: corrupt cache stamp (not JSON: ")
    assert msg.endswith(
        "and fetching it again failed: apt-get download " + PKG + ":arm64 failed: no network"
    )
    assert "\n" not in msg


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_rootfs_stamp_is_rebuilt_with_a_notice(tmp_path, monkeypatch, content):
    cachefakes.fake_rootfs(tmp_path, monkeypatch)
    first = rootfs.build(say=lambda m: None)
    assert not first.cached and set(first.files) == {rootfs.BINARY, rootfs.INTERP}
    done = first.cpio.with_name("rootfs.json")
    done.write_bytes(content)
    said: list[str] = []
    again = rootfs.build(say=said.append)
    notices = [m for m in said if "corrupt cache stamp" in m]
    assert notices == [notices[0].splitlines()[0]]
    assert notices[0].startswith(f"rootfs: {done}: corrupt cache stamp (")
    assert notices[0].endswith("): rebuilding")
    assert not again.cached and again.cpio.read_bytes() == first.cpio.read_bytes()
    assert stamps.load(done)["recipe"] == rootfs.RECIPE
    assert rootfs.build(say=lambda m: None).cached


@pytest.mark.parametrize(
    "content",
    [*CORRUPT.values(), b'[{"name": "libc6"}]', b"[1]"],
    ids=[*CORRUPT, "no version", "not a dict"],
)
def test_a_corrupt_package_resolution_is_resolved_again(tmp_path, monkeypatch, content):
    apt = cachefakes.fake_rootfs(tmp_path, monkeypatch)
    rootfs.build(say=lambda m: None)
    (resolved,) = (tmp_path / "rootfs").glob("resolved-*.json")
    resolved.write_bytes(content)
    said: list[str] = []
    assert rootfs.build(say=said.append).cached
    assert len(said) == 1 and said[0].startswith(f"rootfs: {resolved}: corrupt cache stamp (")
    assert said[0].endswith("): resolving again")
    assert rootfs._resolved(resolved) == apt.packages()


def test_a_corrupt_rootfs_stamp_that_cannot_be_rebuilt_is_one_error(tmp_path, monkeypatch):
    cachefakes.fake_rootfs(tmp_path, monkeypatch)
    first = rootfs.build(say=lambda m: None)
    done = first.cpio.with_name("rootfs.json")
    done.write_bytes(CORRUPT["truncated"])
    shutil.rmtree(tmp_path / "rootfs" / "debs")

    def offline(packages, say):
        raise BuildError(None, "apt-get download -q libc6:arm64=1 ... failed")

    monkeypatch.setattr(rootfs, "_download", offline)
    monkeypatch.setattr(rootfs.os, "geteuid", lambda: 1000)  # no apt-get update
    with pytest.raises(BuildError) as e:
        rootfs.build(say=lambda m: None)
    msg = str(e.value)
    assert msg.startswith(f"{done}: corrupt cache stamp (not JSON: ") and "\n" not in msg
    assert msg.endswith(", and rebuilding it failed: apt-get download -q libc6:arm64=1 ... failed")


def test_a_debian_kernels_records_port_modules_are_unpacked_in_load_order(tmp_path, monkeypatch):
    _fake_apt(tmp_path, monkeypatch)
    k = debkernel.fetch(PKG, say=lambda m: None)
    assert [m.name for m in k.modules] == ["virtio_mmio.ko", "virtio_console.ko"]
    assert [m.read_bytes() for m in k.modules] == [b"mmio", b"console"]
    again = debkernel.fetch(PKG, say=lambda m: None)
    assert again.cached and again.modules == k.modules
    assert again.identity()["modules"] == [str(m) for m in k.modules]


def test_a_debian_kernel_without_the_modules_keeps_its_records_on_the_console(
    tmp_path, monkeypatch
):
    _fake_apt(tmp_path, monkeypatch, modules=False)
    said: list[str] = []
    k = debkernel.fetch(PKG, say=said.append)
    assert k.modules == () and k.image.read_bytes() == b"Image"
    assert any("records stay on the console" in m for m in said)
