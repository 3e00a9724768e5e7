"""A developer's kernel tree (--tree PATH): a git work tree or an unpacked tarball.

Built out of tree, nothing written into the user's tree: make runs in
build/kernels/tree-<id>/linux, a directory of symlinks to the tree's top-level
entries (refreshed before each build), with O=out beside them. Kbuild takes that
directory as its srctree, so it compiles with the same relative paths (srctree=..)
as the Debian builds (harness/build/kernel.py) and ccache shares their objects: a
6.1-based tree's first build is mostly cache hits. Kbuild refuses a tree with an
in-tree build (an error naming `make mrproper`). One object directory per (tree
path, merged config, compiler), so an edit of one file rebuilds in seconds.

The cache key of a built Image is the tree's state: for a git work tree its HEAD
commit and a hash of its uncommitted changes (`git diff HEAD --binary` and the
untracked, not ignored files' names and contents); for a tree without git a hash
of every file's path, mtime and size (an edit that keeps both mtime and size is
not seen: touch the file). Each state's Image is kept (images/<key>/, the last
IMAGES_KEPT), so going back to an earlier commit is a cache hit.

The tree's config is the machine's fragments merged (harness/build/kconfig.py),
allnoconfig on them, every option checked after the build; gcc is the cross
compiler through ccache, as for Debian sources (harness/build/kernel.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.build import kconfig, kernel
from harness.build.progress import BuildProgress
from harness.core import locks, repo, stamps
from harness.core.errors import BuildError, HarnessError
from harness.inputs.machine import MachineConfig
from harness.inputs.revision import Revision

IMAGES_KEPT = 8
# in-tree build products that make Kbuild refuse an O= build of the tree
_IN_TREE_BUILD = (".config", "include/config")


@dataclass(frozen=True)
class TreeState:
    """What a tree holds now: the part of a build's cache key that is the source."""

    path: Path
    kind: str  # "git" or "files"
    head: str | None  # HEAD's commit (git)
    changes: str  # hash of the uncommitted changes (git) or of the files' mtimes+sizes
    dirty: bool

    def describe(self) -> str:
        if self.kind == "git":
            return f"{self.path} @ {self.head[:12]}" + (
                f" + changes {self.changes[:12]}" if self.dirty else ""
            )
        return f"{self.path} (files {self.changes[:12]})"

    def key(self) -> str:
        return f"{self.kind}:{self.head}:{self.changes}"


def _git(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        ["git", "-C", str(tree), "--no-optional-locks", *args], capture_output=True
    )
    if check and out.returncode:
        raise HarnessError(tree, f"git {' '.join(args)} failed: {out.stderr.decode().strip()}")
    return out


def is_git(tree: Path) -> bool:
    out = _git(tree, "rev-parse", "--show-toplevel", check=False)
    return out.returncode == 0 and Path(out.stdout.decode().strip()).resolve() == tree.resolve()


def check_tree(tree: Path) -> Path:
    """tree, resolved, if it is a kernel source tree that can be built out of tree."""
    tree = tree.expanduser().resolve()
    if not (tree / "Makefile").is_file() or not (tree / "arch" / "arm64").is_dir():
        raise HarnessError(tree, "not a kernel source tree (no Makefile or arch/arm64)")
    for name in _IN_TREE_BUILD:
        if (tree / name).exists():
            raise HarnessError(
                tree,
                f"has an in-tree build ({name}): the harness builds out of tree and Kbuild "
                "refuses such a tree; run `make mrproper` in it",
            )
    return tree


def state(tree: Path) -> TreeState:
    """The tree's state now (HEAD and a hash of its changes, or of its files)."""
    if is_git(tree):
        head = _git(tree, "rev-parse", "HEAD").stdout.decode().strip()
        diff = _git(tree, "diff", "HEAD", "--binary").stdout
        h = hashlib.sha256(diff)
        untracked = _git(tree, "ls-files", "-z", "--others", "--exclude-standard").stdout
        names = sorted(n for n in untracked.decode(errors="replace").split("\0") if n)
        for name in names:
            h.update(b"\0untracked\0" + name.encode() + b"\0")
            try:
                h.update((tree / name).read_bytes())
            except OSError:
                h.update(b"(unreadable)")
        return TreeState(tree, "git", head, h.hexdigest(), bool(diff or names))
    h = hashlib.sha256()
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            rel = path.relative_to(tree)
            h.update(f"{rel}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return TreeState(tree, "files", None, h.hexdigest(), True)


def build_dir(tree: Path, config: str, compiler: str) -> Path:
    """The object tree's home for tree with config and compiler: one per triple."""
    ident = hashlib.sha256(f"{tree}\0{config}\0{compiler}".encode()).hexdigest()[:12]
    return kernel.KERNELS / f"tree-{tree.name}-{ident}"


def build(
    tree: Path,
    revision: Revision,
    machine: MachineConfig,
    jobs: int | None = None,
    say: Callable[[str], None] = print,
    patches: dict[str, str] | None = None,
) -> kernel.Kernel:
    """Build (or reuse) tree's Image; revision names the profile that judges it
    (its series is not applied: harness/build/series.py does that, into a copy)."""
    jobs = jobs or os.cpu_count() or 2
    tree = check_tree(tree)
    config = kconfig.merge(list(machine.kernel_fragments))
    compiler = kernel.compiler_version()
    bdir = build_dir(tree, config, compiler)
    bdir.mkdir(parents=True, exist_ok=True)

    def waiting(message: str) -> None:
        say(f"kernel: {message} (the same tree's build)")

    with locks.locked(kernel.lock_path(bdir), on_wait=waiting, what=f"tree build {bdir.name}"):
        st = state(tree)
        key = kernel.cache_key(st.key(), patches or {}, config, compiler)
        images = bdir / "images" / key
        if cached := _cached(images):
            return cached
        start = time.monotonic()
        ident = {
            "revision": revision.name,
            "source": f"tree {st.describe()}",
            "key": key,
            "patches": patches or {},
            "config_fragments": [repo.rel(f) for f in machine.kernel_fragments],
            "build_dir": repo.rel(bdir),
        }
        release = _make_tree(_farm(tree, bdir), bdir, config, jobs, say, machine.name)
        images.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bdir / "linux" / OUT / "arch" / "arm64" / "boot" / "Image", images / "Image")
        k = kernel.Kernel(
            image=images / "Image",
            release=release,
            build_seconds=round(time.monotonic() - start, 1),
            **ident,
        )
        stamps.write(images / kernel.DONE, {**k.identity(), "image": str(k.image)})
        _prune(bdir / "images")
        return k


OUT = "out"  # the object tree, in the farm


def _farm(tree: Path, bdir: Path) -> Path:
    """bdir/linux: a symlink to each top-level entry of tree, and the object tree."""
    farm = bdir / "linux"
    farm.mkdir(parents=True, exist_ok=True)
    want = {e.name for e in tree.iterdir()} - {OUT, ".git"}
    for entry in farm.iterdir():
        if entry.name != OUT and (entry.name not in want or not entry.is_symlink()):
            entry.unlink() if entry.is_symlink() or entry.is_file() else shutil.rmtree(entry)
    for name in sorted(want):
        link = farm / name
        if not (link.is_symlink() and Path(os.readlink(link)) == tree / name):
            link.unlink(missing_ok=True)
            link.symlink_to(tree / name)
    return farm


def _cached(images: Path) -> kernel.Kernel | None:
    image = images / "Image"
    if not image.is_file():
        return None
    try:
        info = stamps.load(images / kernel.DONE, ("release", "revision", "source", "key"))
    except (FileNotFoundError, stamps.Corrupt):
        return None
    fields = {k: info[k] for k in kernel.Kernel.__dataclass_fields__ if k in info}
    return kernel.Kernel(**{**fields, "image": image, "cached": True})


def _make_tree(
    farm: Path, bdir: Path, config: str, jobs: int, say: Callable[[str], None], mach: str
) -> str:
    """make the Image in farm/out from the farm's tree; the kernel release."""
    out, log = farm / OUT, bdir / "build.log"
    allconfig = bdir / "allconfig"
    if not (out / ".config").is_file() or not allconfig.is_file():
        out.mkdir(parents=True, exist_ok=True)
        allconfig.write_text(config)
        args = [f"KCONFIG_ALLCONFIG={allconfig}", "allnoconfig"]
        if kernel._make(farm, args, log, 1).returncode:
            raise BuildError(log, "kernel configuration failed", log_tail=kernel._tail(log))
    tree = (farm / "Makefile").resolve().parent
    say(f"kernel: building {tree} with -j{jobs} in {repo.rel(out)} (log: {repo.rel(log)})")
    progress = BuildProgress(log, say, kernel.KERNELS / ".objects.json", f"tree/{mach}")
    image = out / "arch" / "arm64" / "boot" / "Image"
    made = kernel._make(farm, ["Image"], log, jobs, progress)
    if made.returncode or not image.is_file():
        raise BuildError(log, "kernel build failed", log_tail=kernel._tail(log))
    progress.finished()
    say(f"kernel: {progress.line()}")
    bad = kconfig.missing(config, (out / ".config").read_text())
    if bad:
        raise BuildError(allconfig, "config options did not stick: " + ", ".join(bad))
    return (out / "include" / "config" / "kernel.release").read_text().strip()


def _prune(images: Path) -> None:
    """Keep the IMAGES_KEPT newest Images."""
    kept = sorted(images.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[IMAGES_KEPT:]:
        shutil.rmtree(old, ignore_errors=True)
