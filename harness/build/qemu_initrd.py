"""The L1 initrd of a --vmm qemu run: the rootfs with Debian's QEMU (cached,
content-addressed, held while in use) and the suite's part with the QEMU tests."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from harness.build import initramfs, rootfs
from harness.core import locks, repo
from harness.core.errors import BuildError
from harness.inputs.qemu_tests import QemuTest

KEEP_INITRDS = 4  # combined initrds kept per rootfs (content-addressed), and those in use


def build_initrd(
    plan: initramfs.SuitePlan,
    tests: list[QemuTest],
    fs: rootfs.Rootfs,
    suite_out: Path,
    hold: contextlib.ExitStack | None = None,
) -> Path:
    """The L1 initrd: the rootfs (uncompressed, cached) + the suite's part.

    The suite's part is the usual layout (initramfs.build) plus the QEMU
    tests' manifest lines and images; it is written to suite_out (the run's
    initramfs.cpio.gz). The two are concatenated into a content-addressed
    file next to the rootfs, which the L1 kernel unpacks one after the other.
    With hold, the file is held (a shared lock on it, until hold closes) from
    the moment it is found or made, so another run's prune leaves it alone
    until this run's QEMU is done with it.
    """
    cpio = initramfs.CpioWriter()
    for d in ("dev", "proc", "sys", "suite", "suite/qemu"):
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("init", repo.VMM_BIN.read_bytes(), executable=True)
    manifest = plan.manifest() + "".join(t.manifest_line() + "\n" for t in tests)
    cpio.file(initramfs.MANIFEST, manifest.encode())
    for g in plan.tests:
        cpio.file(f"suite/{g.name}.bin", g.image.read_bytes())
    for t in tests:
        cpio.file(f"suite/qemu/{t.image.name}", t.image.read_bytes())
    suite = gzip.compress(cpio.finish(), compresslevel=1, mtime=0)
    suite_out.write_bytes(suite)
    out = fs.cpio.parent / "initrd" / f"{hashlib.sha256(suite).hexdigest()[:16]}.img"
    with contextlib.ExitStack() as unheld:
        hold = unheld if hold is None else hold
        for _ in range(3):  # each time round, another run's prune removed it under us
            if f := locks.hold_shared(out):
                hold.enter_context(f)
                with contextlib.suppress(OSError):  # (another user's file)
                    os.utime(out)  # the prune keeps the recently used ones
                return out
            if f := _new_initrd(out, fs.cpio, suite):
                hold.enter_context(f)
                _prune_initrds(out.parent)
                return out
    raise BuildError(out, "other runs removed it three times while this run made it")


def _new_initrd(out: Path, rootfs_cpio: Path, suite: bytes) -> BinaryIO | None:
    """Write out, held from its first byte; None when another run made it first."""
    out.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".tmp")
    f = os.fdopen(fd, "w+b")
    try:
        locks.share(f)
        f.write(rootfs_cpio.read_bytes())
        f.write(suite)
        f.flush()
        os.fsync(fd)  # content-addressed: a torn file after a crash would be trusted
        os.fchmod(fd, 0o644)
        try:
            os.link(tmp, out)  # never replaces: a run holding the one there keeps it
        except FileExistsError:
            f.close()
            return None
        return f
    except BaseException:
        f.close()
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def _prune_initrds(directory: Path, keep: int = KEEP_INITRDS) -> None:
    """Remove all but the keep most recently used initrds, except those a run holds."""
    found = []
    for p in directory.glob("*.img"):
        try:
            found.append((p.stat().st_mtime, p))
        except FileNotFoundError:
            continue
    for _, p in sorted(found)[:-keep]:
        locks.remove_unless_used(p)
