"""Kconfig checks, the initramfs writer and patch application, without booting."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.build import initramfs, kconfig, kernel
from harness.core import repo
from harness.core.errors import BuildError
from harness.inputs import guest_spec


def test_missing_options_are_listed():
    wanted = "CONFIG_KVM=y\n# CONFIG_RD_XZ is not set\nCONFIG_FTRACE=y\n"
    final = "CONFIG_KVM=y\nCONFIG_RD_XZ=y\n"
    assert kconfig.missing(wanted, final) == [
        "CONFIG_RD_XZ=n (got y)",
        "CONFIG_FTRACE=y (got n)",
    ]


def test_merge_later_fragment_wins(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("CONFIG_A=y\nCONFIG_B=y\n")
    b.write_text("# CONFIG_B is not set\n")
    assert kconfig.merge([a, b]) == "CONFIG_A=y\n# CONFIG_B is not set\n"


def test_cache_key_changes_with_every_input():
    base = kernel.cache_key("src 1", {"p": "h"}, "CONFIG_A=y\n", "gcc 12")
    assert base == kernel.cache_key("src 1", {"p": "h"}, "CONFIG_A=y\n", "gcc 12")
    assert base != kernel.cache_key("src 2", {"p": "h"}, "CONFIG_A=y\n", "gcc 12")
    assert base != kernel.cache_key("src 1", {"p": "h2"}, "CONFIG_A=y\n", "gcc 12")
    assert base != kernel.cache_key("src 1", {"p": "h"}, "CONFIG_A=m\n", "gcc 12")


def test_initramfs_holds_init_manifest_and_images(tmp_path):
    if not repo.VMM_BIN.is_file():
        pytest.skip("run make artifacts first")
    tests = tuple(guest_spec.load_all().values())
    plan = initramfs.SuitePlan("upstream", "every-exit", tests)
    out = initramfs.build(plan, repo.VMM_BIN, tmp_path / "initrd.gz")
    listing = subprocess.run(
        f"gzip -dc {out} | cpio -itv", shell=True, capture_output=True, text=True, check=True
    ).stdout
    assert "init" in listing and "suite/suite.conf" in listing
    assert all(f"suite/{t.name}.bin" in listing for t in tests)
    console = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console.startswith("c")
    assert "test rearm_n /suite/rearm_n.bin vcpus=1 timeout_ms=30000" in plan.manifest()


def test_initramfs_brings_a_prebuilt_kernels_modules_in_load_order(tmp_path):
    if not repo.VMM_BIN.is_file():
        pytest.skip("run make artifacts first")
    mods = [tmp_path / "virtio_mmio.ko", tmp_path / "virtio_console.ko"]
    for m in mods:
        m.write_bytes(m.name.encode())
    plan = initramfs.SuitePlan("upstream", "every-exit", (), modules=tuple(mods))
    out = initramfs.build(plan, repo.VMM_BIN, tmp_path / "initrd.gz")
    listing = subprocess.run(
        f"gzip -dc {out} | cpio -it", shell=True, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [n for n in listing if n.startswith("modules/")] == [
        "modules/0-virtio_mmio.ko",
        "modules/1-virtio_console.ko",
    ]


def test_patch_that_does_not_apply_names_patch_and_file(tmp_path):
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "f.c").write_text("int a;\nint b;\n")
    patch = tmp_path / "0001-x.patch"
    patch.write_text("--- a/dir/f.c\n+++ b/dir/f.c\n@@ -1,2 +1,2 @@\n-int x;\n+int y;\n int b;\n")
    with pytest.raises(BuildError) as e:
        kernel.apply_patches(src, (patch,), tmp_path / "log")
    assert str(e.value).startswith(str(patch))
    assert "dir/f.c" in str(e.value)
    assert (src / "dir" / "f.c").read_text() == "int a;\nint b;\n"


def test_patch_that_applies(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.c").write_text("int a;\n")
    patch = tmp_path / "ok.patch"
    patch.write_text("--- a/f.c\n+++ b/f.c\n@@ -1 +1 @@\n-int a;\n+int z;\n")
    kernel.apply_patches(src, (patch,), tmp_path / "log")
    assert (src / "f.c").read_text() == "int z;\n"


def test_initramfs_of_the_same_contents_comes_from_the_cache(tmp_path, monkeypatch):
    if not repo.VMM_BIN.is_file():
        pytest.skip("run make artifacts first")
    tests = tuple(guest_spec.load_all().values())[:2]
    plan = initramfs.SuitePlan("upstream", "every-exit", tests)
    cache = tmp_path / "cache"
    first = initramfs.build(plan, repo.VMM_BIN, tmp_path / "a.gz", cache=cache).read_bytes()
    monkeypatch.setattr(initramfs.gzip, "compress", lambda *a, **k: pytest.fail("made again"))
    again = initramfs.build(plan, repo.VMM_BIN, tmp_path / "b.gz", cache=cache).read_bytes()
    assert again == first and len(list(cache.glob("*.cpio.gz"))) == 1
    other = initramfs.SuitePlan("upstream", "eintr-only", tests)  # another manifest
    with pytest.raises(pytest.fail.Exception, match="made again"):
        initramfs.build(other, repo.VMM_BIN, tmp_path / "c.gz", cache=cache)


def test_a_package_version_is_asked_of_dpkg_once_while_its_status_is_unchanged(
    tmp_path, monkeypatch
):
    status = tmp_path / "status"
    status.write_text("Package: x\n")
    monkeypatch.setattr(kernel, "DPKG_STATUS", status)
    monkeypatch.setattr(kernel, "KERNELS", tmp_path / "kernels")
    asked: list[list[str]] = []

    def dpkg(argv, **kw):
        asked.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=f"1.{len(asked)}", stderr="")

    monkeypatch.setattr(kernel.subprocess, "run", dpkg)
    assert kernel.package_version("linux-source-6.1") == "1.1"
    assert kernel.package_version("linux-source-6.1") == "1.1" and len(asked) == 1
    status.write_text("Package: x\nVersion: 2\n")  # dpkg installed something
    assert kernel.package_version("linux-source-6.1") == "1.2" and len(asked) == 2
