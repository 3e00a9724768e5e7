"""The initramfs: our VMM as /init, the suite manifest, the guest images, and the
kernel modules /init loads first (a prebuilt kernel's records-port drivers)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import InputError
from harness.inputs import limits
from harness.inputs.guest_spec import GuestTest

MANIFEST = "suite/suite.conf"


@dataclass(frozen=True)
class SuitePlan:
    """What /init runs in one boot."""

    abi: str
    policy: str
    tests: tuple[GuestTest, ...]
    live: bool = False  # records written as they happen, for faults injected mid-test
    modules: tuple[Path, ...] = ()  # loaded by /init in this order (modules/<n>-<name>)

    def manifest(self) -> str:
        lines = [f"abi {self.abi}", f"policy {self.policy}"]
        if self.live:
            lines.append("records live")
        for t in self.tests:
            line = (
                f"test {t.name} /suite/{t.name}.bin vcpus={t.vcpus} "
                f"timeout_ms={int(t.timeout_s * 1000)}"
            )
            extra = t.vmm.manifest_args()
            line = f"{line} {extra}" if extra else line
            if len(line) >= limits.get("VT_LINE_MAX"):
                raise InputError(
                    t.spec_path,
                    f"its manifest line has {len(line)} characters; /init takes "
                    f"{limits.get('VT_LINE_MAX') - 1}",
                )
            lines.append(line)
        return "\n".join(lines) + "\n"

    def line_of(self) -> dict[int, str]:
        """Manifest line number -> the test on it (/init's error records give the line)."""
        first = 3 + self.live  # abi, policy[, records live], then the tests
        return {first + i: t.name for i, t in enumerate(self.tests)}


class CpioWriter:
    """A minimal newc cpio writer: deterministic (mtime 0, uid 0), no root needed."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        fields = [
            self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0,
        ]  # fmt: skip
        self._ino += 1
        header = "070701" + "".join(f"{f:08x}" for f in fields)
        self._out.write(header.encode() + name.encode() + b"\0")
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, executable: bool = False) -> None:
        self._entry(name, 0o100755 if executable else 0o100644, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def build(plan: SuitePlan, vmm: Path, out: Path, cache: Path | None = None) -> Path:
    """Write the gzip'ed initramfs for plan to out. With cache (a directory), the
    image of the same contents made before is copied instead (gzip is most of the
    time a boot-test spends before QEMU starts)."""
    files = _files(plan, vmm)
    if cache is not None:
        h = hashlib.sha256()
        for name, data, _ in files:
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        kept = cache / f"{h.hexdigest()[:20]}.cpio.gz"
        if kept.is_file():
            shutil.copyfile(kept, out)
            return out
    cpio = CpioWriter()
    for d in ("dev", "proc", "sys", "suite", "modules"):
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    for name, data, executable in files:
        cpio.file(name, data, executable)
    out.write_bytes(gzip.compress(cpio.finish(), compresslevel=1, mtime=0))
    if cache is not None:
        _keep(out, kept)
    return out


# the images a cache keeps (the newest; ~0.4 MB each)
CACHE_KEEP = 32


def _keep(image: Path, kept: Path) -> None:
    """image into the cache as kept (whole or not at all), the oldest beyond
    CACHE_KEEP removed."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    tmp = kept.with_name(f".{kept.name}.{os.getpid()}")
    shutil.copyfile(image, tmp)
    os.replace(tmp, kept)
    images = sorted(kept.parent.glob("*.cpio.gz"), key=lambda p: p.stat().st_mtime)
    for old in images[:-CACHE_KEEP]:
        old.unlink(missing_ok=True)


def _files(plan: SuitePlan, vmm: Path) -> list[tuple[str, bytes, bool]]:
    """The initramfs's files in order: (name, contents, executable)."""
    files = [("init", vmm.read_bytes(), True), (MANIFEST, plan.manifest().encode(), False)]
    files += [(f"modules/{i}-{m.name}", m.read_bytes(), False) for i, m in enumerate(plan.modules)]
    files += [(f"suite/{t.name}.bin", t.image.read_bytes(), False) for t in plan.tests]
    return files
