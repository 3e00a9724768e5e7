"""harness bisect for real (boot): a synthetic history on Debian's linux-source-6.1
(committed once into build/kernels/git-<id>/, harness/build/series.py), four small
commits on it, the third a negative control (kernel_patches/upstream-nowake's patch:
no WFI wake-up), bisected with oneshot_wfi judged by `wake`. The commits are made
with fixed dates, so their ids are the same every run and every step builds
incrementally in the same object directory (build/kernels/bisect-linux-<id>/)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import cli
from harness.build import series
from harness.core import repo

FIXTURE = repo.BUILD / "bisect-fixture" / "linux"
NOWAKE = repo.KERNEL_PATCHES / "upstream-nowake"


def _git(cwd: Path, *args: str) -> str:
    env = series.os.environ | series.GIT_ENV
    out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _comment(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(f"/* {text} */\n")


def history() -> tuple[Path, str, str, str]:
    """(tree, good, bad, the negative control's commit): base + 4 commits."""
    base = series.debian_base(say=lambda _: None)
    if not (FIXTURE / ".git").exists():
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        _git(base, "worktree", "prune")
        _git(base, "worktree", "add", "-q", "--detach", str(FIXTURE), "HEAD")
    good = _git(base, "rev-parse", "HEAD")
    _git(FIXTURE, "checkout", "-q", "-f", "--detach", good)
    _comment(FIXTURE / "arch/arm64/kvm/arch_timer.c", "bisect fixture: a harmless comment")
    _git(FIXTURE, "commit", "-q", "-am", "KVM: arm64: timer: a harmless comment")
    _comment(FIXTURE / "arch/arm64/kvm/arm.c", "bisect fixture: another harmless comment")
    _git(FIXTURE, "commit", "-q", "-am", "KVM: arm64: another harmless comment")
    (patch,) = sorted(NOWAKE.glob("*.patch"))
    _git(FIXTURE, "am", "-q", "--committer-date-is-author-date", str(patch))
    control = _git(FIXTURE, "rev-parse", "HEAD")
    with open(FIXTURE / "Documentation/virt/kvm/api.rst", "a") as f:
        f.write("\n.. bisect fixture: a documentation change\n")
    _git(FIXTURE, "commit", "-q", "-am", "Documentation: KVM: a note")
    return FIXTURE, good, _git(FIXTURE, "rev-parse", "HEAD"), control


@pytest.mark.boot
def test_bisect_finds_the_negative_control(tmp_path, capsys):
    tree, good, bad, control = history()
    assert history() == (tree, good, bad, control)  # the same commits every time
    argv = ["bisect", "--tree", str(tree), "--good", good, "--bad", bad]
    argv += ["--test", "oneshot_wfi", "--property", "wake", "--results", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"first bad commit: {control} NEGATIVE CONTROL" in out
    (bdir,) = tmp_path.glob("bisect-*")
    result = json.loads((bdir / "result.json").read_text())
    assert result["first_bad"] == control
    assert result["step"]["verdict"] == "bad" and "wake" in result["step"]["reason"]
    steps = [json.loads(line) for line in (bdir / "steps.jsonl").read_text().splitlines()]
    assert {s["verdict"] for s in steps} <= {"good", "bad"} and len(steps) >= 2
    for s in steps:  # each step's run is kept
        assert (bdir / s["run_dir"] / "results.json").is_file()
    assert (bdir / "bisect-log.txt").read_text().count("# first bad commit") == 1
