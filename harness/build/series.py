"""A patch series (--series FILE): an mbox or a directory of `git format-patch` files.

An mbox is what a mail client saves or `b4 am` writes: messages, each starting
with a `From ` line; a message with no diff (a cover letter) is left out. A
directory's patches are its `series` file's order when it has one (quilt's, as
kernel_patches/<rev>/ has), else its *.patch files sorted by name.

The series is applied with `git am` onto a throwaway worktree of the base's HEAD
commit (build/kernels/series-<id>/linux, one per base, reset for each series so
its object tree builds incrementally): the base is the --tree (its HEAD: its
uncommitted changes are not in the copy), or Debian's linux-source-X committed
once into a git repository (build/kernels/git-<id>/linux). A tree without git is
copied and patched with patch(1). The committer is fixed and dated by the
author, so the same base and series make the same commit, the same cache key.

A patch that does not apply is a BuildError naming its number, subject, file and
the file it fails on: one line, for every test of the run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.build import kernel, tree
from harness.core import locks, repo
from harness.core.errors import BuildError, HarnessError, InputError
from harness.inputs.machine import MachineConfig
from harness.inputs.revision import DEFAULT_SOURCE, Revision

GIT_ENV = {
    "GIT_COMMITTER_NAME": "vtimer-harness",
    "GIT_COMMITTER_EMAIL": "vtimer-harness@invalid",
    "GIT_AUTHOR_NAME": "vtimer-harness",
    "GIT_AUTHOR_EMAIL": "vtimer-harness@invalid",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
}
_FROM = re.compile(r"^From \S+", re.MULTILINE)
_SUBJECT = re.compile(r"^Subject: (.*(?:\n[ \t].*)*)", re.MULTILINE)
_TAG = re.compile(r"^\s*(\[[^]]*\]\s*)+")
_DIFF = re.compile(r"^diff --git a/(\S+) b/", re.MULTILINE)
_AM_FAILED = re.compile(r"^error: patch failed: (\S+):\d+", re.MULTILINE)
_AM_ERROR = re.compile(r"^error: (\S+): (?:does not exist|patch does not apply|already)", re.M)


@dataclass(frozen=True)
class Patch:
    name: str  # its file, or <mbox>#<n>
    subject: str
    text: str
    files: tuple[str, ...]

    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class Series:
    path: Path
    patches: tuple[Patch, ...]

    def hashes(self) -> dict[str, str]:
        return {f"{n:04d} {p.name}": p.sha256() for n, p in enumerate(self.patches, 1)}

    def key(self) -> str:
        return hashlib.sha256("".join(p.sha256() for p in self.patches).encode()).hexdigest()


def _patch(name: str, text: str) -> Patch | None:
    files = tuple(dict.fromkeys(_DIFF.findall(text)))
    if not files:
        return None  # a cover letter, or no patch
    m = _SUBJECT.search(text)
    subject = _TAG.sub("", re.sub(r"\s*\n[ \t]+", " ", m[1])).strip() if m else name
    return Patch(name, subject, text if text.endswith("\n") else text + "\n", files)


def _messages(text: str) -> list[str]:
    starts = [m.start() for m in _FROM.finditer(text)] or [0]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def load(path: Path) -> Series:
    """The series at path (an mbox file or a directory of patch files)."""
    if path.is_dir():
        order = path / "series"
        if order.is_file():
            names = [ln.split("#", 1)[0].split() for ln in order.read_text().splitlines()]
            files = [path / n[0] for n in names if n]
        else:
            files = sorted(path.glob("*.patch"))
        patches = []
        for f in files:
            if not f.is_file():
                raise InputError(path, f"patch '{f.name}' does not exist")
            patches += [
                p
                for i, msg in enumerate(_messages(f.read_text(errors="replace")), 1)
                if (p := _patch(f.name if i == 1 else f"{f.name}#{i}", msg))
            ]
    elif path.is_file():
        msgs = _messages(path.read_text(errors="replace"))
        patches = [p for i, m in enumerate(msgs, 1) if (p := _patch(f"{path.name}#{i}", m))]
    else:
        raise InputError(path, "no such series (an mbox or a directory of patches)")
    if not patches:
        raise InputError(path, "holds no patch (no 'diff --git' in any message)")
    return Series(path, tuple(patches))


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env)
    if check and out.returncode:
        raise HarnessError(cwd, f"git {' '.join(args[:2])} failed: {out.stderr.strip()[:300]}")
    return out


def debian_base(package: str = DEFAULT_SOURCE, say: Callable[[str], None] = print) -> Path:
    """Debian's package source committed once into a git repository (cached)."""
    tarball = kernel.source_tarball(package)
    source = f"{package} {kernel.package_version(package)}"
    top = kernel.KERNELS / f"git-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    src = top / "linux"
    with locks.locked(kernel.KERNELS / f".{top.name}.lock", what="committing the source"):
        if not (top / ".committed").is_file():
            shutil.rmtree(top, ignore_errors=True)
            top.mkdir(parents=True)
            pristine = kernel._pristine(source, tarball, say)
            say(f"kernel: committing {source} into {repo.rel(src)} (once)")
            subprocess.run(["cp", "-al", str(pristine), str(src)], check=True)
            _git(src, "init", "-q")
            _git(src, "add", "-A", "-f")  # Debian's .gitignore ignores everything (/*)
            _git(src, "commit", "-q", "-m", f"{source}")
            (top / ".committed").touch()
    return src


def _worktree(base: Path) -> Path:
    ident = hashlib.sha256(str(base).encode()).hexdigest()[:12]
    return kernel.KERNELS / f"series-{base.name}-{ident}" / "linux"


def _fail(n: int, total: int, patch: Patch, where: str | None) -> BuildError:
    where = where or (patch.files[0] if patch.files else "?")
    return BuildError(
        None,
        f"patch {n}/{total} '{patch.subject}' ({patch.name}) does not apply: fails on {where}",
    )


def _am(wt: Path, series: Series) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n, patch in enumerate(series.patches, 1):
            f = Path(tmp) / f"{n:04d}.patch"
            f.write_text(patch.text)
            out = _git(wt, "am", "-q", "--committer-date-is-author-date", str(f), check=False)
            if out.returncode:
                _git(wt, "am", "--abort", check=False)
                text = out.stdout + out.stderr
                m = _AM_FAILED.search(text) or _AM_ERROR.search(text)
                raise _fail(n, len(series.patches), patch, m[1] if m else None)


def _patch_copy(base: Path, wt: Path, series: Series) -> None:
    """A tree without git: copied, then patch -p1, patch by patch."""
    shutil.rmtree(wt, ignore_errors=True)
    wt.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(wt)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n, patch in enumerate(series.patches, 1):
            f = Path(tmp) / patch.name.replace("#", "-")
            f.write_text(patch.text)
            try:
                kernel.apply_patches(wt, (f,), wt.parent / "patch.log")
            except BuildError as e:
                where = e.message.rsplit("fails on ", 1)[-1]
                raise _fail(n, len(series.patches), patch, where) from None


def apply(base: Path, series: Series, say: Callable[[str], None] = print) -> Path:
    """A worktree of base's HEAD with the series applied (reused when it has it already)."""
    base = base.resolve()
    wt = _worktree(base)
    git = tree.is_git(base)
    head = _git(base, "rev-parse", "HEAD").stdout.strip() if git else tree.state(base).changes
    want = hashlib.sha256(f"{head}\0{series.key()}".encode()).hexdigest()
    stamp = wt.parent / "series.key"
    with locks.locked(wt.parent.parent / f".{wt.parent.name}.lock", what="applying a series"):
        if stamp.is_file() and stamp.read_text() == want and wt.is_dir():
            return wt
        stamp.unlink(missing_ok=True)
        say(f"kernel: applying {len(series.patches)} patch(es) of {series.path} onto {base}")
        if not git:
            _patch_copy(base, wt, series)
        else:
            if not (wt / ".git").exists():
                shutil.rmtree(wt, ignore_errors=True)
                wt.parent.mkdir(parents=True, exist_ok=True)
                _git(base, "worktree", "prune")
                _git(base, "worktree", "add", "-q", "--detach", str(wt), head)
            _git(wt, "am", "--abort", check=False)
            _git(wt, "checkout", "-q", "-f", "--detach", head)
            _git(wt, "clean", "-q", "-fdx")
            _am(wt, series)
        stamp.write_text(want)
    return wt


def build(
    revision: Revision,
    machine: MachineConfig,
    tree_path: Path | None = None,
    series_path: Path | None = None,
    jobs: int | None = None,
    say: Callable[[str], None] = print,
    source_package: str = DEFAULT_SOURCE,
) -> kernel.Kernel:
    """The kernel of a --tree and/or --series run; revision is the profile that judges."""
    if series_path is None:
        assert tree_path is not None
        return tree.build(tree_path, revision, machine, jobs, say)
    s = load(series_path)
    base = tree.check_tree(tree_path) if tree_path else debian_base(source_package, say)
    wt = apply(base, s, say)
    return tree.build(wt, revision, machine, jobs, say, patches=s.hashes())
