"""Small stand-ins for the caches' expensive inputs, in a tmp directory.

A kernel "source" tarball of two files and a make that writes a .config and
an Image in milliseconds; revisions with one patch each; Debian packages
made with dpkg-deb --build. The code under test (locking, seeding, stamps,
pruning) is the real one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.build import kernel
from harness.core import repo


@dataclass(frozen=True)
class FakeKernels:
    kernels: Path  # the cache (kernel.KERNELS)
    makes: Path  # one line per make call: "<pid> <target>"
    revisions: Path

    def targets(self) -> list[str]:
        if not self.makes.exists():
            return []
        return [line.split()[1] for line in self.makes.read_text().splitlines()]

    def revision(self, name: str, file: str = "a.c") -> Path:
        """A revision whose one patch changes file of the fake source."""
        d = self.revisions / name
        d.mkdir(parents=True)
        profile = (repo.KERNEL_PATCHES / "upstream" / "profile.yaml").read_text()
        (d / "profile.yaml").write_text(profile.replace("revision: upstream", f"revision: {name}"))
        var = file.split(".")[0]
        (d / "0001-change.patch").write_text(
            f"--- a/{file}\n+++ b/{file}\n@@ -1 +1 @@\n-int {var};\n+int {var}_{name};\n"
        )
        (d / "series").write_text("0001-change.patch\n")
        return d


def _fake_make(log: Path):
    def make(src: Path, args: list[str], build_log: Path, jobs: int, progress=None):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {args[-1]}\n")
        out = src / "out"
        if args[-1] == "allnoconfig":
            allconfig = Path(args[0].split("=", 1)[1])
            out.mkdir(exist_ok=True)
            (out / ".config").write_text(allconfig.read_text())
        elif args[-1] == "Image":
            image = out / "arch" / "arm64" / "boot" / "Image"
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(
                b"Image of " + (src / "a.c").read_bytes() + (src / "b.c").read_bytes()
            )
            release = out / "include" / "config" / "kernel.release"
            release.parent.mkdir(parents=True, exist_ok=True)
            release.write_text("6.1.0-fake\n")
        return subprocess.CompletedProcess(args, 0)

    return make


def fake_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKernels:
    top = tmp_path / "tarball" / "linux-source-6.1"
    top.mkdir(parents=True)
    (top / "a.c").write_text("int a;\n")
    (top / "b.c").write_text("int b;\n")
    tarball = tmp_path / "linux-source-6.1.tar.xz"
    subprocess.run(["tar", "-cJf", str(tarball), "-C", str(top.parent), top.name], check=True)
    fk = FakeKernels(tmp_path / "kernels", tmp_path / "makes.log", tmp_path / "revisions")
    monkeypatch.setattr(kernel, "SOURCE_TARBALL", tarball)
    monkeypatch.setattr(kernel, "KERNELS", fk.kernels)
    monkeypatch.setattr(kernel, "_make", _fake_make(fk.makes))
    return fk


def deb(tmp_path: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A real .deb (dpkg-deb --build) holding files (path in the package -> bytes)."""
    root = tmp_path / f"debroot-{package}-{version}"
    (root / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: arm64\n"
        "Maintainer: test <test@example.org>\nDescription: a test package\n"
    )
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755)
    out = tmp_path / f"{package}_{version}_arm64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@dataclass
class FakeApt:
    """apt for the rootfs: qemu-system-arm and libc6 at a version the test sets."""

    debs: dict[str, Path]
    lists: Path
    version: str = "1"
    downloads: int = 0

    def update(self, version: str) -> None:
        """apt-get update after libc6 moved to version: apt's lists change."""
        self.version = version
        (self.lists / f"debian_dists_bookworm_main_binary-arm64_Packages.{version}").touch()

    def packages(self):
        from harness.build import rootfs

        return [rootfs.Package("libc6", self.version), rootfs.Package("qemu-system-arm", "1")]


def fake_rootfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeApt:
    """rootfs.build() on two real .debs: a static arm64 ELF as qemu-system-aarch64, and
    a dynamic loader; apt-cache and apt-get download are stand-ins."""
    from harness.build import rootfs

    c = tmp_path / "qemu.c"
    c.write_text("void _start(void) { for (;;) ; }\n")
    elf = tmp_path / "qemu-system-aarch64"
    subprocess.run(
        [f"{kernel.CROSS}gcc", "-nostdlib", "-static", "-o", str(elf), str(c)], check=True
    )
    qemu = deb(tmp_path, "qemu-system-arm", "1", {rootfs.BINARY: elf.read_bytes()})
    libc = deb(tmp_path, "libc6", "1", {rootfs.INTERP: b"\x7fELF a loader"})
    apt = FakeApt({"qemu-system-arm": qemu, "libc6": libc}, tmp_path / "lists")

    def download(packages, say):
        rootfs.DEBS.mkdir(parents=True, exist_ok=True)
        for p in packages:
            if not p.deb.is_file():
                apt.downloads += 1
                shutil.copy(apt.debs[p.name], p.deb)

    (tmp_path / "lists").mkdir()
    monkeypatch.setattr(rootfs, "ROOTFS", tmp_path / "rootfs")
    monkeypatch.setattr(rootfs, "DEBS", tmp_path / "rootfs" / "debs")
    monkeypatch.setattr(rootfs, "APT_LISTS", tmp_path / "lists")
    monkeypatch.setattr(rootfs, "ensure_arch", lambda: None)
    monkeypatch.setattr(rootfs, "resolve_apt", apt.packages)
    monkeypatch.setattr(rootfs, "_download", download)
    return apt
