"""An arm64 root file system holding Debian's qemu-system-aarch64, for the L1 kernel.

The package set is Debian's: qemu-system-arm:arm64 and the library packages
(Section: libs) of its Depends/Pre-Depends closure, resolved with apt-cache,
fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a build
folder; nothing is installed on the host. From that tree only what the
binary loads goes into the image: qemu-system-aarch64, its DT_NEEDED closure
of shared libraries and the dynamic loader. No docs, locales, firmware or
modules: the inner QEMU runs `-nographic -nic none -kernel <elf>`.

The image (~52 MiB, ~50 files) is an uncompressed newc cpio, a second
initramfs part: the L1 kernel unpacks it next to the suite's part without
decompressing (gunzip under TCG: ~0.5 s more per boot). It needs nothing of
the kernel config (no block device, no file system driver). Cached under
build/rootfs/ by the package versions and the recipe; the package resolution
(~7 s of apt-cache) by the state of apt's lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness.build import kernel
from harness.build.initramfs import CpioWriter
from harness.core import locks, repo, stamps
from harness.core.errors import BuildError, HarnessError
from harness.inputs.qemu_tests import QEMU_PROGRAM

ARCH = "arm64"
TOP_PACKAGE = "qemu-system-arm"
BINARY = QEMU_PROGRAM.lstrip("/")  # usr/bin/qemu-system-aarch64
INTERP = "lib/ld-linux-aarch64.so.1"
LIBDIR = "lib/aarch64-linux-gnu"
ROOTFS = repo.BUILD / "rootfs"
DEBS = ROOTFS / "debs"
APT_LISTS = Path("/var/lib/apt/lists")
# change when what goes into the image changes (invalidates every cached image)
RECIPE = "qemu-rootfs-1"
KEEP = 2  # images kept (package updates make new ones), and any a run still uses
_SEARCH = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib")
_NEEDED = re.compile(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]")


@dataclass(frozen=True)
class Package:
    name: str
    version: str

    @property
    def deb(self) -> Path:
        """The file apt-get download writes (an epoch's colon URL-encoded)."""
        return DEBS / f"{self.name}_{self.version.replace(':', '%3a')}_{ARCH}.deb"


@dataclass(frozen=True)
class Rootfs:
    """A built image: the cpio, what it was made from and what it holds."""

    cpio: Path
    key: str
    packages: dict[str, str]
    files: dict[str, int]  # path in the image -> size
    build_seconds: float | None = None
    cached: bool = False

    @property
    def qemu_version(self) -> str:
        return self.packages.get(TOP_PACKAGE, "?")

    def identity(self) -> dict:
        return {
            "cpio": repo.rel(self.cpio),
            "key": self.key,
            "bytes": self.cpio.stat().st_size,
            "packages": self.packages,
            "build_seconds": self.build_seconds,
        }


def _run(argv: list[str], cwd: Path | None = None) -> str:
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-10:])
        raise BuildError(None, f"{' '.join(argv[:3])} ... failed", log_tail=tail)
    return out.stdout


def ensure_arch() -> None:
    """apt must know arm64 packages (dpkg --add-architecture; never installs any)."""
    foreign = _run(["dpkg", "--print-foreign-architectures"]).split()
    if ARCH in foreign:
        return
    if os.geteuid() != 0:
        raise HarnessError(
            None,
            f"apt does not know {ARCH} packages: run 'dpkg --add-architecture {ARCH}' "
            "and 'apt-get update' as root",
        )
    _run(["dpkg", "--add-architecture", ARCH])
    _run(["apt-get", "update", "-qq"])


def _show(names: list[str]) -> list[dict[str, str]]:
    """apt-cache show of the candidate versions: one dict per stanza."""
    text = _run(["apt-cache", "show", "--no-all-versions", *[f"{n}:{ARCH}" for n in names]])
    stanzas = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            stanzas.append(fields)
    return stanzas


def _depends(fields: dict[str, str]) -> list[list[str]]:
    """Depends and Pre-Depends as alternative groups of bare names."""
    groups = []
    for key in ("Pre-Depends", "Depends"):
        for group in filter(None, (g.strip() for g in fields.get(key, "").split(","))):
            alts = [re.split(r"[\s(:]", a.strip(), maxsplit=1)[0] for a in group.split("|")]
            groups.append([a for a in alts if a])
    return groups


def _lists_state() -> str:
    """Identifies apt's package lists: a resolution holds until apt-get update changes them."""
    h = hashlib.sha256(RECIPE.encode())
    for p in sorted(APT_LISTS.glob("*_Packages*")):
        st = p.stat()
        h.update(f"\0{p.name} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _resolved(path: Path) -> list[Package]:
    """The packages a resolved-*.json remembers (FileNotFoundError, stamps.Corrupt)."""
    entries = stamps.load_list(path)
    try:
        return [Package(str(p["name"]), str(p["version"])) for p in entries]
    except (TypeError, KeyError):
        raise stamps.Corrupt(repo.rel(path), "corrupt cache stamp (not a package list)") from None


def resolve(say: Callable[[str], None] = print) -> list[Package]:
    """resolve_apt(), remembered per state of apt's lists (each apt-cache call costs ~2 s)."""
    path = ROOTFS / f"resolved-{_lists_state()}.json"
    try:
        return _resolved(path)
    except FileNotFoundError:
        pass
    except stamps.Corrupt as e:
        say(f"rootfs: {e}: resolving again")
    packages = resolve_apt()
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps.write(path, [p.__dict__ for p in packages])
    return packages


def resolve_apt() -> list[Package]:
    """qemu-system-arm:arm64 plus the library packages of its dependency closure."""
    found: dict[str, Package] = {}
    sections: dict[str, str] = {}
    todo = [TOP_PACKAGE]
    while todo:
        stanzas = _show(sorted(set(todo)))
        todo = []
        for f in stanzas:
            name = f["Package"]
            sections[name] = f.get("Section", "")
            if name != TOP_PACKAGE and sections[name] not in ("libs", "oldlibs"):
                continue
            if name in found:
                continue
            found[name] = Package(name, f["Version"])
            for alts in _depends(f):
                # the first alternative apt knows (virtual ones show nothing)
                if not any(a in found or a in sections for a in alts):
                    todo.extend(alts[:1])
    if TOP_PACKAGE not in found:
        raise BuildError(None, f"apt knows no {TOP_PACKAGE}:{ARCH} (apt-get update?)")
    return sorted(found.values(), key=lambda p: p.name)


def cache_key(packages: list[Package]) -> str:
    h = hashlib.sha256(RECIPE.encode())
    for p in packages:
        h.update(f"\0{p.name}={p.version}".encode())
    return h.hexdigest()[:16]


def _download(packages: list[Package], say: Callable[[str], None]) -> None:
    DEBS.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not p.deb.is_file()]
    if not missing:
        return
    say(f"rootfs: downloading {len(missing)} {ARCH} package(s)")
    _run(
        ["apt-get", "download", "-q", *[f"{p.name}:{ARCH}={p.version}" for p in missing]],
        cwd=DEBS,
    )
    lost = [p.deb.name for p in missing if not p.deb.is_file()]
    if lost:
        raise BuildError(DEBS, "apt-get download did not write " + ", ".join(lost))


def needed(path: Path) -> list[str]:
    """The DT_NEEDED sonames of an ELF file."""
    out = _run([f"{kernel.CROSS}readelf", "-d", str(path)])
    return _NEEDED.findall(out)


def _find(tree: Path, soname: str) -> Path | None:
    for d in _SEARCH:
        p = tree / d / soname
        if p.exists():
            return p.resolve()
    return None


def closure(tree: Path, binary: str) -> dict[str, Path]:
    """Image path -> file in tree for binary and every shared library it loads."""
    files = {binary: tree / binary}
    todo = [tree / binary]
    seen: set[str] = set()
    while todo:
        for soname in needed(todo.pop()):
            if soname in seen:
                continue
            seen.add(soname)
            src = _find(tree, soname)
            if src is None or not repo.inside(tree, src):
                raise BuildError(tree, f"{soname} (needed by the QEMU closure) is in no package")
            name = INTERP if soname == Path(INTERP).name else f"{LIBDIR}/{soname}"
            files[name] = src
            todo.append(src)
    interp = _find(tree, Path(INTERP).name)
    if interp is None:
        raise BuildError(tree, f"no dynamic loader {INTERP} in libc6:{ARCH}")
    files[INTERP] = interp
    return files


def _image(files: dict[str, Path]) -> bytes:
    cpio = CpioWriter()
    dirs = sorted({str(p) for name in files for p in Path(name).parents if str(p) != "."})
    for d in [*dirs, "tmp"]:
        cpio.directory(d)
    for name, src in sorted(files.items()):
        cpio.file(name, src.read_bytes(), executable=True)
    return cpio.finish()


def _cached(packages: list[Package]) -> Rootfs | None:
    """The image of packages, or None to build it; stamps.Corrupt when its stamp is."""
    key = cache_key(packages)
    cpio = ROOTFS / f"qemu-{key}" / "rootfs.cpio"
    if not cpio.is_file():
        return None
    try:
        info = stamps.load(cpio.with_name("rootfs.json"), ("packages", "files", "build_seconds"))
    except FileNotFoundError:
        return None
    return Rootfs(cpio, key, info["packages"], info["files"], info["build_seconds"], True)


def _assemble(packages: list[Package], started: float, say: Callable[[str], None]) -> Rootfs:
    key = cache_key(packages)
    top = ROOTFS / f"qemu-{key}"
    cpio = top / "rootfs.cpio"
    tree = top / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    say(f"rootfs: unpacking {len(packages)} package(s) into {repo.rel(tree)}")
    for p in packages:
        _run(["dpkg-deb", "-x", str(p.deb), str(tree)])
    files = closure(tree, BINARY)
    tmp = cpio.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(_image(files))
        os.fsync(f.fileno())
    sizes = {name: src.stat().st_size for name, src in sorted(files.items())}
    shutil.rmtree(tree)
    info = {
        "recipe": RECIPE,
        "packages": {p.name: p.version for p in packages},
        "files": sizes,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    # a run may still use the old image of this key (a corrupt stamp): it keeps its inode
    tmp.rename(cpio)
    stamps.write(top / "rootfs.json", info)
    say(f"rootfs: {len(files)} files, {cpio.stat().st_size >> 20} MiB, {repo.rel(cpio)}")
    return Rootfs(cpio, key, info["packages"], sizes, info["build_seconds"])


def build(say: Callable[[str], None] = print, hold: ExitStack | None = None) -> Rootfs:
    """The cached image for apt's current candidate versions (built on first use).

    With hold, the image is held (a shared lock on its cpio, until hold
    closes): no prune removes it meanwhile, nor the initrds made from it.
    """
    started = time.monotonic()
    ensure_arch()
    lock = ROOTFS / ".build.lock"
    with locks.locked(lock, on_wait=lambda m: say(f"rootfs: {m}"), what="the QEMU rootfs"):
        fs = _build(started, say)
        if hold is not None:
            f = locks.hold_shared(fs.cpio)  # prunes take the build lock: it is there
            if f is None:
                raise BuildError(fs.cpio, "vanished while the rootfs build lock was held")
            hold.enter_context(f)
        return fs


def _build(started: float, say: Callable[[str], None]) -> Rootfs:
    """The cached image, or a new one; a corrupt stamp is said in one line naming it,
    and is in the error when the image cannot be built again."""
    packages = resolve(say)
    try:
        if fs := _cached(packages):
            return fs
    except stamps.Corrupt as stale:
        say(f"rootfs: {stale}: rebuilding")
        try:
            return _fresh(packages, started, say)
        except HarnessError as e:
            raise BuildError(
                stale.where,
                f"{stale.message}, and rebuilding it failed: {e}",
                log_tail=getattr(e, "log_tail", ""),
            ) from None
    return _fresh(packages, started, say)


def _fresh(packages: list[Package], started: float, say: Callable[[str], None]) -> Rootfs:
    """Download, assemble and prune (the caller holds the build lock)."""
    try:
        _download(packages, say)
    except BuildError:
        if os.geteuid() != 0:
            raise
        # a security update replaced a version the lists still name: refresh, again
        say("rootfs: download failed, apt-get update and again")
        _run(["apt-get", "update", "-qq"])
        packages = resolve(say)
        with contextlib.suppress(stamps.Corrupt):  # (then it is built again, here)
            if fs := _cached(packages):
                return fs
        _download(packages, say)
    fs = _assemble(packages, started, say)
    _prune(packages)
    return fs


def _remove_image(top: Path) -> bool:
    """Delete an image directory unless a run holds its cpio or one of its initrds."""
    cpio = top / "rootfs.cpio"

    def remove() -> None:
        initrds = sorted((top / "initrd").glob("*.img"))
        if all([locks.remove_unless_used(p) for p in initrds]):
            shutil.rmtree(top, ignore_errors=True)

    if not cpio.is_file():  # a build that died half-way (this lock is the build lock)
        shutil.rmtree(top, ignore_errors=True)
        return True
    return locks.remove_unless_used(cpio, remove) and not top.exists()


def _prune(packages: list[Package]) -> None:
    """Keep the newest KEEP images and those in use, and only the .debs the current
    one was made from. The caller holds the build lock."""
    images = []
    for top in ROOTFS.glob("qemu-*"):
        try:
            images.append(((top / "rootfs.json").stat().st_mtime, top))
        except FileNotFoundError:
            images.append((0.0, top))  # no stamp: a build that died, the oldest
    for _, top in sorted(images)[:-KEEP]:
        _remove_image(top)
    current = {p.deb.name for p in packages}
    for deb in DEBS.glob("*.deb"):
        if deb.name not in current:
            deb.unlink(missing_ok=True)
