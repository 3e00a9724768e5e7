"""--tree and --series (harness/build/tree.py, series.py) on small trees in tmp:
a tree's state (the cache key's source part), a series read from an mbox or a
directory, applied with git am (patch(1) without git), a patch that fails named
in one line; and kernel_patches/v5 as a --series makes the source --rev v5 does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import cli
from harness.build import kernel, series, tree
from harness.core import repo
from harness.core.errors import BuildError, HarnessError, InputError
from harness.inputs import revision
from harness.inputs.options import tree_source


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, env=series.os.environ
        | series.GIT_ENV, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def _repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "base")
    return path


def _format_patch(work: Path, edits: list[tuple[str, str, str]]) -> list[Path]:
    """Commit each (file, text, subject) in work; the format-patch files of those commits."""
    base = _git(work, "rev-parse", "HEAD")
    for name, text, subject in edits:
        (work / name).write_text(text)
        _git(work, "commit", "-q", "-am", subject)
    out = work.parent / "patches"
    _git(work, "format-patch", "-q", "-o", str(out), f"{base}..HEAD")
    _git(work, "reset", "-q", "--hard", base)
    return sorted(out.glob("*.patch"))


@pytest.fixture
def kernels(tmp_path, monkeypatch) -> Path:
    k = tmp_path / "kernels"
    k.mkdir()
    monkeypatch.setattr(kernel, "KERNELS", k)
    return k


def test_a_git_trees_state_is_its_head_and_its_changes(tmp_path):
    t = _repo(tmp_path / "t", {"a.c": "int a;\n", "b.c": "int b;\n"})
    clean = tree.state(t)
    assert clean.kind == "git" and not clean.dirty and len(clean.head) == 40
    (t / "a.c").write_text("int a2;\n")
    edited = tree.state(t)
    assert edited.dirty and edited.head == clean.head and edited.key() != clean.key()
    (t / "a.c").write_text("int a;\n")
    assert tree.state(t).key() == clean.key()  # back to HEAD: the same key
    (t / "new.c").write_text("x\n")
    untracked = tree.state(t)
    assert untracked.dirty and untracked.key() != clean.key()
    (t / "new.c").write_text("y\n")
    assert tree.state(t).key() != untracked.key()  # an untracked file's contents count


def test_a_tree_without_git_is_hashed_by_mtimes_and_sizes(tmp_path):
    t = tmp_path / "linux-6.1"
    t.mkdir()
    (t / "a.c").write_text("int a;\n")
    one = tree.state(t)
    assert one.kind == "files" and one.head is None
    assert tree.state(t).key() == one.key()
    (t / "a.c").write_text("int aa;\n")
    assert tree.state(t).key() != one.key()


def test_a_tree_with_an_in_tree_build_is_refused(tmp_path):
    t = tmp_path / "linux"
    (t / "arch" / "arm64").mkdir(parents=True)
    (t / "Makefile").write_text("")
    assert tree.check_tree(t) == t.resolve()
    (t / ".config").write_text("")
    with pytest.raises(HarnessError, match="mrproper"):
        tree.check_tree(t)
    with pytest.raises(HarnessError, match="not a kernel source tree"):
        tree.check_tree(tmp_path)


def test_the_object_tree_is_one_per_tree_config_and_compiler(kernels):
    a = tree.build_dir(Path("/src/linux"), "CONFIG_A=y\n", "gcc 12")
    assert a.parent == kernels and a.name.startswith("tree-linux-")
    assert a == tree.build_dir(Path("/src/linux"), "CONFIG_A=y\n", "gcc 12")
    assert a != tree.build_dir(Path("/src/linux"), "CONFIG_A=n\n", "gcc 12")
    assert a != tree.build_dir(Path("/src/other"), "CONFIG_A=y\n", "gcc 12")


def test_a_series_from_a_directory_or_an_mbox(tmp_path):
    work = _repo(tmp_path / "w", {"a.c": "int a;\n", "b.c": "int b;\n"})
    files = _format_patch(
        work, [("a.c", "int a1;\n", "first: change a"), ("b.c", "int b1;\n", "second: change b")]
    )
    d = series.load(files[0].parent)
    assert [p.subject for p in d.patches] == ["first: change a", "second: change b"]
    assert [p.files for p in d.patches] == [("a.c",), ("b.c",)]
    cover = "From abc Mon Sep 17 00:00:00 2001\nSubject: [PATCH 0/2] the cover\n\nno diff\n"
    mbox = tmp_path / "saved.mbox"
    mbox.write_text(cover + "".join(f.read_text() for f in files))
    m = series.load(mbox)
    assert [p.subject for p in m.patches] == ["first: change a", "second: change b"]
    assert m.key() == d.key()  # the same patches, however saved
    with pytest.raises(InputError, match="holds no patch"):
        (tmp_path / "empty.mbox").write_text(cover)
        series.load(tmp_path / "empty.mbox")


def test_a_series_applies_with_git_am_onto_a_throwaway_worktree(tmp_path, kernels):
    base = _repo(tmp_path / "base", {"a.c": "int a;\n", "b.c": "int b;\n"})
    work = _repo(tmp_path / "w", {"a.c": "int a;\n", "b.c": "int b;\n"})
    s = series.load(_format_patch(work, [("a.c", "int a1;\n", "change a")])[0].parent)
    wt = series.apply(base, s, say=lambda _: None)
    assert repo.inside(kernels, wt) and (wt / "a.c").read_text() == "int a1;\n"
    assert (base / "a.c").read_text() == "int a;\n"  # the base is left alone
    head = _git(wt, "rev-parse", "HEAD")
    assert series.apply(base, s, say=lambda _: None) == wt  # reused as it is
    (wt.parent / "series.key").unlink()
    series.apply(base, s, say=lambda _: None)
    assert _git(wt, "rev-parse", "HEAD") == head  # applied again: the same commit


def test_a_patch_that_fails_is_one_line_naming_it_and_its_file(tmp_path, kernels):
    base = _repo(tmp_path / "base", {"a.c": "int other;\n", "b.c": "int b;\n"})
    work = _repo(tmp_path / "w", {"a.c": "int a;\n", "b.c": "int b;\n"})
    patches = _format_patch(
        work, [("b.c", "int b1;\n", "KVM: fine"), ("a.c", "int a1;\n", "KVM: the bad one")]
    )
    with pytest.raises(BuildError) as e:
        series.apply(base, series.load(patches[0].parent), say=lambda _: None)
    msg = str(e.value)
    assert "\n" not in msg and e.value.log_tail == ""
    assert "patch 2/2 'KVM: the bad one'" in msg and msg.endswith("fails on a.c")
    plain = tmp_path / "plain"  # no git: patch(1)
    plain.mkdir()
    (plain / "a.c").write_text("int other;\n")
    (plain / "b.c").write_text("int b;\n")
    with pytest.raises(BuildError, match=r"patch 2/2 'KVM: the bad one' .* fails on a\.c$"):
        series.apply(plain, series.load(patches[0].parent), say=lambda _: None)


def _pristine() -> Path | None:
    found = [p / "linux" for p in kernel.KERNELS.glob("src-*") if (p / ".unpacked").is_file()]
    return next(
        (p for p in found if (p / "Makefile").read_text().find("PATCHLEVEL = 1\n") > 0), None
    )


def test_kernel_patches_v5_as_a_series_is_the_source_of_rev_v5(tmp_path, monkeypatch):
    """`--series kernel_patches/v5 --model v5` builds what `--rev v5` builds: git am of the
    format-patch files gives the very files patch -p1 of the series does."""
    pristine = _pristine()
    if pristine is None:
        pytest.skip("no unpacked linux-source-6.1 in build/kernels (a kernel build makes it)")
    rev = revision.load("v5")
    touched = kernel.touched_files(rev.patches)
    files = {name: (pristine / name).read_text() for name in touched}
    base = _repo(tmp_path / "base", files)
    monkeypatch.setattr(kernel, "KERNELS", tmp_path / "kernels")
    wt = series.apply(base, series.load(repo.KERNEL_PATCHES / "v5"), say=lambda _: None)
    plain = tmp_path / "plain"
    shutil.copytree(base, plain, ignore=shutil.ignore_patterns(".git"))
    kernel.apply_patches(plain, rev.patches, tmp_path / "patch.log")
    for name in touched:
        assert (wt / name).read_bytes() == (plain / name).read_bytes(), name


def test_the_cli_names_the_judging_profile(tmp_path):
    p = cli._parser()
    args = p.parse_args(["boot-test", "--tree", str(tmp_path)])
    assert cli._source_options(args, args.rev)["revision"] == "upstream"  # the default ABI
    args = p.parse_args(["boot-test", "--series", "kernel_patches/v5", "--model", "v5"])
    assert cli._source_options(args, args.rev) == {
        "revision": "v5", "tree": None, "series": Path("kernel_patches/v5"), "rev_series": False
    }  # fmt: skip
    args = p.parse_args(["boot-test", "--tree", str(tmp_path), "--rev", "v6"])
    assert cli._source_options(args, args.rev)["revision"] == "v6"
    with pytest.raises(HarnessError, match="--model"):
        args = p.parse_args(["boot-test", "--model", "v5"])
        cli._source_options(args, args.rev)
    assert tree_source("tree:~/linux") == Path.home() / "linux"
    assert tree_source("linux-source-6.1") is None


def test_a_matrix_cell_on_a_tree(tmp_path):
    from harness.runs.matrix import spec

    t = tmp_path / "linux"
    t.mkdir()
    (t / "Makefile").write_text("")
    m = tmp_path / "m.yaml"
    m.write_text("name: t\ncells:\n  - revision: v5\n    source: tree:linux\n")
    (cell,) = spec.load(m).cells
    assert cell.tree == t.resolve() and cell.name == "v5-tree-linux-virt-gicv3-every-exit"
    m.write_text("name: t\ncells:\n  - revision: v5\n    source: tree:nowhere\n")
    with pytest.raises(InputError, match="not a kernel source tree"):
        spec.load(m)


def test_kernel_and_tree_do_not_mix(tmp_path):
    args = cli._parser().parse_args(["boot-test", "--tree", str(tmp_path), "--kernel", "Image"])
    with pytest.raises(HarnessError, match="--kernel"):
        cli._source_options(args, args.rev)
