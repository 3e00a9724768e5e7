"""Build a revision's kernel: a Debian linux-source-X package + the series + config, cached.

The source package is a parameter (SOURCES; default linux-source-6.1) and part
of the cache key, so one revision on two sources is two cached builds.

Layout: build/kernels/<rev>-<key>/linux is the patched source and linux/out
the object tree. The object tree sits directly inside the source, so the
kernel compiles with relative paths (srctree=..) and ccache hits across
revisions and cache keys.

A new tree is a hard-link copy of one pristine unpacked source
(build/kernels/src-<hash>), patched with copy-on-write for the files the
series touches. If an earlier build had the same source and config, its
object tree seeds the new one: every file either series touched gets a
fresh mtime, so make rebuilds exactly those and what depends on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from harness.build import kconfig
from harness.build.progress import BuildProgress
from harness.core import locks, repo, signals, stamps
from harness.core.errors import BuildError, HarnessError
from harness.inputs.machine import MachineConfig
from harness.inputs.revision import DEFAULT_SOURCE, Revision

# kernel sources: Debian's linux-source-X packages, each a tarball in /usr/src
SOURCES = ("linux-source-6.1", "linux-source-6.12")
SOURCE_PACKAGE = DEFAULT_SOURCE  # re-exported: kernel.DEFAULT_SOURCE
SOURCE_TARBALL = Path(f"/usr/src/{DEFAULT_SOURCE}.tar.xz")
CROSS = "aarch64-linux-gnu-"
KERNELS = repo.BUILD / "kernels"
# shared by every clone on the machine, so a fresh clone rebuilds from cache
CCACHE_DIR = Path(
    os.environ.get("CCACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "vtimer-harness"
    / "ccache"
)
DONE = "kernel.json"
# how long a build waits for a donor another run holds (a cache check holds it
# for milliseconds, a rebuild for minutes: then the next donor, or none)
DONOR_WAIT_S = 10.0
locked = locks.locked  # the name other modules know


@dataclass(frozen=True)
class Kernel:
    """A built (or prebuilt) kernel Image and what it was made from."""

    image: Path
    release: str
    revision: str
    source: str
    key: str
    patches: dict[str, str]
    config_fragments: list[str]
    build_dir: str
    build_seconds: float | None = None
    cached: bool = False
    # where a build's seconds went: tree (unpack, link, patch, seed), config, make
    phases: dict[str, float] = field(default_factory=dict)

    def identity(self) -> dict:
        d = asdict(self)
        d["image"] = repo.rel(self.image)
        return d


DPKG_STATUS = Path("/var/lib/dpkg/status")


def package_version(package: str) -> str:
    """The installed version of package: dpkg-query's answer, kept in
    build/kernels/.versions.json while dpkg's status file is unchanged (a
    boot-test's start need not wait for dpkg)."""
    seen = _dpkg_seen()
    memo = KERNELS / ".versions.json"
    try:
        known = stamps.load(memo)
    except (OSError, stamps.Corrupt):
        known = {}
    if seen and known.get("dpkg_status") == seen and isinstance(known.get(package), str):
        return known[package]
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    )
    if out.returncode != 0 or not out.stdout:
        raise HarnessError(None, f"package {package} is not installed (run make deps)")
    if seen:
        if known.get("dpkg_status") != seen:
            known = {"dpkg_status": seen}
        with contextlib.suppress(OSError):
            KERNELS.mkdir(parents=True, exist_ok=True)
            stamps.write(memo, known | {package: out.stdout})
    return out.stdout


def _dpkg_seen() -> str:
    """dpkg's status file as of now (its size and mtime), or '' without one."""
    try:
        st = DPKG_STATUS.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def compiler_version() -> str:
    out = subprocess.run([f"{CROSS}gcc", "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.returncode == 0 else "unknown"


def cache_key(source: str, patches: dict[str, str], config: str, compiler: str) -> str:
    h = hashlib.sha256()
    for part in (source, json.dumps(patches, sort_keys=True), config, compiler):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def lock_path(bdir: Path) -> Path:
    """The lock of a build directory: exclusive while building or checking it,
    shared while another build copies its object tree."""
    return bdir.parent / f".{bdir.name}.lock"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_FAILED_FILE = re.compile(r"^(?:patching file|checking file) (\S+)")


def apply_patches(src: Path, patches: tuple[Path, ...], log: Path) -> None:
    """Apply the series with patch -p1; a failure names the patch and the file."""
    with open(log, "a") as out:
        for patch in patches:
            dry_run(src, patch, out)
            subprocess.run(
                ["patch", "-p1", "--batch", "--forward", "-i", str(patch)],
                cwd=src,
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def dry_run(src: Path, patch: Path, out: IO[str]) -> None:
    """patch --dry-run of one patch on src (nothing written there); its output to out.
    A patch that does not apply is a BuildError naming it and the file it fails on."""
    dry = subprocess.run(
        ["patch", "-p1", "--dry-run", "--batch", "--forward", "-i", str(patch)],
        cwd=src,
        capture_output=True,
        text=True,
    )
    out.write(f"$ patch -p1 --dry-run -i {repo.rel(patch)}\n{dry.stdout}{dry.stderr}")
    if dry.returncode == 0:
        return
    current = "?"
    failed = None
    for line in dry.stdout.splitlines():
        if m := _FAILED_FILE.match(line):
            current = m[1]
        elif "FAILED" in line or "can't find file" in line or "malformed" in line:
            failed = failed or current
        if "can't find file to patch" in line:
            failed = failed or "(file not in tree)"
    raise BuildError(
        repo.rel(patch),
        f"does not apply: fails on {failed or current}",
        log_tail=dry.stdout[-2000:],
    )


def touched_files(patches: tuple[Path, ...]) -> list[str]:
    """The files a -p1 series changes, from its ---/+++ headers."""
    out: set[str] = set()
    for patch in patches:
        for line in patch.read_text(errors="replace").splitlines():
            if line.startswith(("+++ ", "--- ")):
                name = line[4:].split("\t")[0].strip()
                if name != "/dev/null" and "/" in name:
                    out.add(name.split("/", 1)[1])
    return sorted(out)


def _break_links(src: Path, files: list[str]) -> None:
    """Give each file its own inode before patch writes it (the pristine tree is shared)."""
    for name in files:
        path = src / name
        if path.is_file() and path.stat().st_nlink > 1:
            data = path.read_bytes()
            path.unlink()
            path.write_bytes(data)


def source_tarball(package: str) -> Path:
    """The tarball a linux-source-X package installs."""
    if package not in SOURCES:
        raise HarnessError(None, f"unknown kernel source '{package}' (valid: {', '.join(SOURCES)})")
    if package == DEFAULT_SOURCE:
        return SOURCE_TARBALL  # a module attribute, so tests can point it elsewhere
    return Path(f"/usr/src/{package}.tar.xz")


def _pristine(source: str, tarball: Path, say: Callable[[str], None]) -> Path:
    """The unpacked source tree shared (by hard links) by every build tree."""
    top = KERNELS / f"src-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    with locks.locked(KERNELS / f".{top.name}.lock", what="unpacking the kernel source"):
        if not (top / ".unpacked").is_file():
            shutil.rmtree(top, ignore_errors=True)
            say(f"kernel: unpacking {tarball.name} into {repo.rel(top)}")
            _unpack(tarball, top / "linux")
            (top / ".unpacked").touch()
    return top / "linux"


def _donor_info(bdir: Path, source: str, config_hash: str) -> dict | None:
    """bdir's stamp when bdir is a finished build with this source and config."""
    try:
        info = stamps.load(bdir / DONE)
    except (OSError, stamps.Corrupt):
        return None
    if info.get("source") != source or info.get("config_hash") != config_hash:
        return None
    if not (bdir / "linux" / "out" / ".config").is_file():
        return None
    return info | {"dir": str(bdir)}


def _donors(source: str, config_hash: str, exclude: Path) -> list[dict]:
    """The finished builds with the same source and config, newest first."""
    found = []
    for done in KERNELS.glob(f"*/{DONE}"):
        if done.parent == exclude:
            continue
        info = _donor_info(done.parent, source, config_hash)
        if info is not None:
            try:
                found.append((done.stat().st_mtime, info))
            except FileNotFoundError:
                continue
    return [info for _, info in sorted(found, key=lambda t: t[0], reverse=True)]


def _seed(
    bdir: Path, source: str, config_hash: str, touched: list[str], say: Callable[[str], None]
) -> bool:
    """Seed bdir's object tree from the newest donor that is not being rebuilt.

    The caller holds bdir's own lock; a donor's lock is taken shared for the
    copy, with a deadline: two builds that each want the other as donor both
    give up after DONOR_WAIT_S instead of waiting for each other forever.
    """

    def waiting(message: str) -> None:
        say(f"kernel: {message} (a donor: at most {DONOR_WAIT_S:g} s)")

    for donor in _donors(source, config_hash, bdir):
        ddir = Path(donor["dir"])
        try:
            lock = lock_path(ddir)
            with locks.locked(lock, shared=True, deadline_s=DONOR_WAIT_S, on_wait=waiting):
                donor = _donor_info(ddir, source, config_hash)  # again, under its lock
                if donor is None:
                    continue
                say(f"kernel: seeding objects from {repo.rel(ddir)}")
                if _seed_objects(donor, bdir / "linux", touched):
                    return True
                say(f"kernel: copying the objects of {repo.rel(ddir)} failed: not seeding")
                return False
        except locks.LockTimeout as e:
            say(f"kernel: not seeding from {repo.rel(ddir)}: its lock is {e.message}")
    return False


def _seed_objects(donor: dict, src: Path, touched: list[str]) -> bool:
    """Copy the donor's object tree; files either series touched are made newer.

    False (and no object tree) when the copy fails."""
    out = subprocess.run(
        ["cp", "-a", "--reflink=auto", str(Path(donor["dir"]) / "linux" / "out"), str(src)],
        capture_output=True,
    )
    if out.returncode:
        shutil.rmtree(src / "out", ignore_errors=True)
        return False
    now = time.time() + 1
    for name in sorted(set(touched) | set(donor.get("touched", []))):
        path = src / name
        if path.exists():
            os.utime(path, (now, now))
    return True


def _unpack(tarball: Path, dest: Path) -> None:
    """The tarball's tree at dest (`tar -I "xz -T2"` was slower than tar's own xz
    here: 30 s against 24 s on 2 busy CPUs, 1.4 GB unpacked)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(tmp)], check=True)
    (top,) = tmp.iterdir()
    top.rename(dest)
    tmp.rmdir()


def _make(
    src: Path, args: list[str], log: Path, jobs: int, progress: BuildProgress | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, CCACHE_DIR=str(CCACHE_DIR), CCACHE_NOHASHDIR="1")
    cmd = [
        "make",
        "ARCH=arm64",
        f"CROSS_COMPILE={CROSS}",
        f"CC=ccache {CROSS}gcc",
        "O=out",
        f"-j{jobs}",
        *args,
    ]
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        if progress:
            progress.command(cmd)
        # a process group of its own, so that all of it is ended if the harness is stopped
        proc = subprocess.Popen(
            cmd, cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        return subprocess.CompletedProcess(cmd, _wait_stoppable(proc, progress))


MAKE_STOP_S = 10.0  # for make to delete the targets it was making, after SIGTERM


def _wait_stoppable(proc: subprocess.Popen, progress: BuildProgress | None = None) -> int:
    """proc's exit status; on SIGINT/SIGTERM (signals.check() in any thread) its process
    group is ended, SIGTERM first (make then deletes half-made targets), and no make is
    left writing into a build dir whose lock the harness gives up as it exits."""
    try:
        while True:
            try:
                return proc.wait(signals.POLL_S)
            except subprocess.TimeoutExpired:
                signals.check()
                if progress:
                    progress.poll()
    except BaseException:
        with signals.deferred():
            _end_group(proc)
        raise


def _end_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, MAKE_STOP_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _plan(
    revision: Revision, machine: MachineConfig, source_package: str
) -> tuple[Path, str, str, str]:
    """(build dir, source identity, merged config, cache key) of a build."""
    source = f"{source_package} {package_version(source_package)}"
    config = kconfig.merge(list(machine.kernel_fragments))
    key = cache_key(source, revision.patch_hashes(), config, compiler_version())
    tag = "" if source_package == DEFAULT_SOURCE else source_package.rsplit("-", 1)[-1] + "-"
    return KERNELS / f"{revision.name}-{tag}{key}", source, config, key


# the fields a kernel.json must hold to be a cache hit
_STAMP_FIELDS = tuple(
    f
    for f in Kernel.__dataclass_fields__
    if f not in ("image", "build_seconds", "cached", "phases")  # phases: newer than most stamps
)


def _cached(done: Path, image: Path, say: Callable[[str], None]) -> Kernel | None:
    """The finished build done stamps, or None to (re)build: no stamp or Image yet, or
    a corrupt stamp (said, in one line naming it)."""
    if not image.is_file():
        return None
    try:
        info = stamps.load(done, _STAMP_FIELDS)
    except FileNotFoundError:
        return None
    except stamps.Corrupt as e:
        say(f"kernel: {e}: rebuilding")
        return None
    fields = {k: info[k] for k in Kernel.__dataclass_fields__ if k in info}
    # where it is now (a cache moved, or filled through another checkout's link)
    here = repo.rel(done.parent)
    return Kernel(**{**fields, "image": image, "build_dir": here, "cached": True})


def cached(
    revision: Revision, machine: MachineConfig, source_package: str = DEFAULT_SOURCE
) -> Kernel | None:
    """The finished build of this kernel if there is one (no lock, nothing built:
    a scheduler's quick look before it gives a build a CPU)."""
    revision = revision.for_source(source_package)
    bdir = _plan(revision, machine, source_package)[0]
    return _cached(bdir / DONE, _image(bdir / "linux"), lambda m: None)


def _image(src: Path) -> Path:
    """Where a build tree's Image is (out of tree, in out/)."""
    return src / "out" / "arch" / "arm64" / "boot" / "Image"


def build_dir(
    revision: Revision, machine: MachineConfig, source_package: str = DEFAULT_SOURCE
) -> Path:
    """Where build() keeps (or will keep) this kernel: its name is content-addressed."""
    source_tarball(source_package)  # a known source
    return _plan(revision.for_source(source_package), machine, source_package)[0]


def build(
    revision: Revision,
    machine: MachineConfig,
    jobs: int | None = None,
    say: Callable[[str], None] = print,
    source_package: str = DEFAULT_SOURCE,
) -> Kernel:
    """Build (or reuse) the kernel Image for revision on machine's config fragments.

    source_package is one of SOURCES; the revision's profile names the series
    for it (Revision.patches_for). The default keeps its historical cache
    directory names (<rev>-<key>), another source adds its version
    (<rev>-<X.Y>-<key>).
    """
    jobs = jobs or os.cpu_count() or 2
    tarball = source_tarball(source_package)
    revision = revision.for_source(source_package)  # the series for this source
    if not tarball.is_file():
        raise HarnessError(tarball, f"missing (install {source_package}: make deps)")
    bdir, source, config, key = _plan(revision, machine, source_package)
    patches = revision.patch_hashes()
    src = bdir / "linux"
    image = _image(src)
    log = bdir / "build.log"

    def waiting(message: str) -> None:
        say(f"kernel: {message} (the same kernel, being built or checked)")

    with locks.locked(lock_path(bdir), on_wait=waiting, what=f"kernel build {bdir.name}"):
        if cached := _cached(bdir / DONE, image, say):
            return cached
        start = time.monotonic()
        bdir.mkdir(parents=True, exist_ok=True)
        touched = touched_files(revision.patches)
        config_hash = hashlib.sha256(config.encode()).hexdigest()[:16]
        clock = _Phases()
        if not (bdir / ".patched").is_file():
            _patch_tree(bdir, revision, source, tarball, touched, config_hash, say)
        clock.done("tree")
        _configure(bdir, config, log)
        clock.done("config")
        _make_image(src, image, log, jobs, say, f"{source_package}/{machine.name}")
        clock.done("make")
        kernel = Kernel(
            image=image,
            release=(src / "out" / "include" / "config" / "kernel.release").read_text().strip(),
            revision=revision.name,
            source=source,
            key=key,
            patches=patches,
            config_fragments=[repo.rel(f) for f in machine.kernel_fragments],
            build_dir=repo.rel(bdir),
            build_seconds=round(time.monotonic() - start, 1),
            phases=clock.phases,
        )
        _stamp(bdir / DONE, kernel, config_hash, touched)
        return kernel


class _Phases:
    """Seconds per phase of a build, each from the end of the one before."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self._last, 1)
        self._last = now


def _stamp(done: Path, kernel: Kernel, config_hash: str, touched: list[str]) -> None:
    """The build's stamp (kernel.json): the kernel's identity, what a donor needs."""
    info = {**kernel.identity(), "image": str(kernel.image)}
    info |= {"config_hash": config_hash, "touched": touched}
    stamps.write(done, info)


def _patch_tree(
    bdir: Path,
    revision: Revision,
    source: str,
    tarball: Path,
    touched: list[str],
    config_hash: str,
    say: Callable[[str], None],
) -> None:
    """bdir/linux: the pristine source hard-linked (the files the series touches
    copied), the series applied, objects seeded from a donor; then .patched."""
    src = bdir / "linux"
    shutil.rmtree(src, ignore_errors=True)
    pristine = _pristine(source, tarball, say)
    if revision.patches:  # a series that fails at once does so before the tree's copy
        with open(bdir / "build.log", "a") as out:
            dry_run(pristine, revision.patches[0], out)
    subprocess.run(["cp", "-al", str(pristine), str(src)], check=True)
    _break_links(src, touched)
    say(f"kernel: applying {len(revision.patches)} patch(es) of {revision.name}")
    apply_patches(src, revision.patches, bdir / "build.log")
    _seed(bdir, source, config_hash, touched, say)
    (bdir / ".patched").touch()


def _configure(bdir: Path, config: str, log: Path) -> None:
    """out/.config from config (allnoconfig on it, unless a donor seeded the tree with
    this very config); every option of config must have stuck."""
    src = bdir / "linux"
    allconfig = bdir / "allconfig"
    allconfig.write_text(config)
    seeded = (src / "out" / ".config").is_file()  # a donor's tree has this very config
    if (
        not seeded
        and _make(src, [f"KCONFIG_ALLCONFIG={allconfig}", "allnoconfig"], log, 1).returncode
    ):
        raise BuildError(log, "kernel configuration failed", log_tail=_tail(log))
    bad = kconfig.missing(config, (src / "out" / ".config").read_text())
    if bad:
        raise BuildError(bdir / "allconfig", "config options did not stick: " + ", ".join(bad))


def _make_image(
    src: Path, image: Path, log: Path, jobs: int, say: Callable[[str], None], key: str
) -> None:
    say(f"kernel: building Image with -j{jobs} (log: {repo.rel(log)})")
    progress = BuildProgress(log, say, KERNELS / ".objects.json", key)
    if _make(src, ["Image"], log, jobs, progress=progress).returncode or not image.is_file():
        raise BuildError(log, "kernel build failed", log_tail=_tail(log))
    progress.finished()
    say(f"kernel: {progress.line()}")
