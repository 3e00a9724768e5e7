"""Prebuilt Debian arm64 kernels (linux-image-<abi>-arm64), fetched with apt, never installed.

`apt-get download <pkg>:arm64` into build/debkernels/<pkg>/, then the
package's boot/ and the two modules of the records port (virtio_mmio and
virtio_console: Debian builds them as modules, /init loads them) are
unpacked (dpkg-deb --fsys-tarfile; the other modules are not needed) and
boot/vmlinuz-<release> taken: Debian's arm64
vmlinuz is an Image QEMU's -kernel takes as is. The result is cached with a
kernel.json (package, version, release, sha256 of the .deb); nothing of
arm64 is ever installed into the host. dpkg needs the arm64 architecture
for apt to know the package: `dpkg --add-architecture arm64 && apt-get
update`, done once (scripts/install-deps.sh does it too).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.core import locks, repo, stamps
from harness.core.errors import HarnessError

DEBKERNELS = repo.BUILD / "debkernels"
PACKAGE = re.compile(r"^linux-image-(\d+\.\d+\.\d+-\d+)-arm64$")
DONE = "kernel.json"
_STAMP_FIELDS = ("package", "version", "release", "image", "deb_sha256", "modules")
# the records port's drivers, in the order /init loads them (vmm/init.c)
MODULES = ("virtio_mmio.ko", "virtio_console.ko")


@dataclass(frozen=True)
class DebKernel:
    package: str
    version: str
    release: str
    image: Path
    deb_sha256: str
    cached: bool = False
    modules: tuple[Path, ...] = ()  # MODULES, unpacked

    def identity(self) -> dict:
        return {
            "prebuilt": True,
            "image": repo.rel(self.image),
            "modules": [repo.rel(m) for m in self.modules],
            "release": self.release,
            "source": f"{self.package} {self.version}",
            "package": self.package,
            "version": self.version,
            "deb_sha256": self.deb_sha256,
            "cached": self.cached,
        }


def is_package(name: str) -> bool:
    return PACKAGE.match(name) is not None


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def ensure_arm64(say: Callable[[str], None] = print) -> None:
    """dpkg knows arm64 (apt lists included); adds it once, as root."""
    out = _run(["dpkg", "--print-foreign-architectures"])
    if "arm64" in out.stdout.split():
        return
    import os

    if os.geteuid() != 0:
        raise HarnessError(
            None,
            "dpkg lacks the arm64 architecture: run as root "
            "'dpkg --add-architecture arm64 && apt-get update' (or make deps)",
        )
    say("debkernel: dpkg --add-architecture arm64 && apt-get update")
    for cmd in (["dpkg", "--add-architecture", "arm64"], ["apt-get", "update", "-qq"]):
        r = _run(cmd)
        if r.returncode:
            raise HarnessError(None, f"{' '.join(cmd)} failed: {r.stderr.strip()[-300:]}")


def _download(package: str, dest: Path, say: Callable[[str], None]) -> Path:
    """apt-get download package:arm64 into dest; one apt-get update and retry if apt
    does not know it yet."""
    for attempt in (1, 2):
        r = _run(["apt-get", "download", "-q", f"{package}:arm64"], cwd=dest)
        debs = sorted(dest.glob("*.deb"))
        if r.returncode == 0 and debs:
            return debs[-1]
        if attempt == 1 and "Unable to locate" in r.stderr:
            say("debkernel: apt does not know the package yet: apt-get update")
            _run(["apt-get", "update", "-qq"])
            continue
        raise HarnessError(
            None, f"apt-get download {package}:arm64 failed: {r.stderr.strip()[-300:]}"
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _load(done: Path) -> DebKernel | None:
    """The fetched kernel done stamps; None when there is none or its image is gone.

    Corrupt when the stamp is unusable (or names an image outside its directory)."""
    try:
        info = stamps.load(done, _STAMP_FIELDS)
    except FileNotFoundError:
        return None
    listed = info["modules"] if isinstance(info["modules"], list) else []
    for what, name in [("image", info["image"]), *(("module", m) for m in listed)]:
        if not repo.inside(done.parent, done.parent / str(name)):
            raise stamps.Corrupt(repo.rel(done), f"corrupt cache stamp ({what} {name!r})")
    image, *modules = [done.parent / str(n) for n in [info["image"], *listed]]
    if not all(f.is_file() for f in [image, *modules]):
        return None
    return DebKernel(
        info["package"], info["version"], info["release"], image, info["deb_sha256"],
        True, tuple(modules),
    )  # fmt: skip


def fetch(package: str, say: Callable[[str], None] = print) -> DebKernel:
    """The vmlinuz of a Debian linux-image-<abi>-arm64 package, downloaded once."""
    if not is_package(package):
        raise HarnessError(
            None, f"'{package}' is not a Debian arm64 kernel package (linux-image-X.Y.Z-N-arm64)"
        )
    done = DEBKERNELS / package / DONE
    lock = DEBKERNELS / f".{package}.lock"
    with locks.locked(lock, on_wait=lambda m: say(f"debkernel: {m}"), what=f"fetching {package}"):
        try:
            if cached := _load(done):
                return cached
        except stamps.Corrupt as stale:
            say(f"debkernel: {stale}: fetching it again")
            try:
                return _fetch(package, say)
            except HarnessError as e:
                raise HarnessError(
                    stale.where, f"{stale.message}, and fetching it again failed: {e}"
                ) from None
        return _fetch(package, say)


def _fetch(package: str, say: Callable[[str], None]) -> DebKernel:
    """Download and unpack package into DEBKERNELS/package (the caller holds its lock)."""
    top = DEBKERNELS / package
    done = top / DONE
    ensure_arm64(say)
    shutil.rmtree(top, ignore_errors=True)
    dl = top / "dl"
    dl.mkdir(parents=True)
    say(f"debkernel: apt-get download {package}:arm64")
    deb = _download(package, dl, say)
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    x = top / "x"
    x.mkdir()
    # only ./boot and two modules: the others are 300 MB we never use
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    untar = subprocess.run(
        ["tar", "-x", "-C", str(x), "--wildcards", "./boot/*", *(f"*/{m}" for m in MODULES)],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
    )
    tar.stdout.close()
    # a package without the modules (built in, say) is no failure: /init looks for
    # the port's drivers and keeps the records on the console without them
    errors = [e for e in untar.stderr.splitlines() if not _module_not_found(e)]
    if tar.wait() or (untar.returncode and errors):
        raise HarnessError(deb, f"unpacking failed: {' '.join(errors)[-300:]}")
    images = sorted((x / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise HarnessError(deb, f"expected one boot/vmlinuz-*, found {len(images)}")
    image = images[0]
    release = image.name.removeprefix("vmlinuz-")
    modules = _modules(x / "lib" / "modules" / release)
    if len(modules) < len(MODULES):
        say(f"debkernel: {package} has no {' '.join(MODULES)}: its records stay on the console")
    deb.unlink()  # the identity keeps its sha256 and version
    info = {
        "package": package,
        "version": version,
        "release": release,
        "image": str(image.relative_to(top)),
        "deb_sha256": digest,
        "modules": [str(m.relative_to(top)) for m in modules],
    }
    stamps.write(done, info)
    say(f"debkernel: {package} {version}: {repo.rel(image)}")
    return DebKernel(package, version, release, image, digest, modules=modules)


def _module_not_found(line: str) -> bool:
    """tar's words for a module pattern that matched nothing (or its summary)."""
    return line.endswith("Not found in archive") or "previous errors" in line


def _modules(tree: Path) -> tuple[Path, ...]:
    """MODULES as unpacked under tree (lib/modules/<release>), in their order; none
    unless all are there."""
    found = {p.name: p for p in tree.rglob("*.ko")} if tree.is_dir() else {}
    if any(m not in found for m in MODULES):
        return ()
    return tuple(found[m] for m in MODULES)
