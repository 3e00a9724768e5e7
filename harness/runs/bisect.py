"""harness bisect: `git bisect run` with a boot-test as the predicate.

The bisection runs in a worktree of the user's tree (build/kernels/bisect-<id>/linux,
one per tree, so every step builds incrementally in the same object directory and
the user's checkout never moves). Each step is `python -m harness.runs.bisect step
<results/bisect-<id>/bisect.json>`: the commit built out of tree (harness/build/tree.py)
and booted with the named tests, judged by the profile's model:

- good (0): every named test passed (SKIP too), or with --property P, P passed
  in each named test that judged it;
- bad (1): a named test FAILed (with --property P: P failed);
- skip (125): the kernel did not build, or a test ERRORed or MISSed (the commit
  cannot be judged), or P was judged by none.

results/bisect-<id>/ keeps bisect.json (what was asked), steps.jsonl (a line per
step: commit, subject, verdict, reason, its run dir), steps/<run-id>/ (each step's
run), bisect-log.txt (`git bisect log`) and result.json (the first bad commit).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.build import kernel, tree
from harness.core import repo, resultsfile
from harness.core.errors import HarnessError
from harness.inputs.options import RunOptions
from harness.runs.run import RunOutcome, boot_test

GOOD, BAD, SKIP = 0, 1, 125
VERDICTS = {GOOD: "good", BAD: "bad", SKIP: "skip"}
_FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit", re.MULTILINE)


@dataclass
class BisectSpec:
    tree: str
    good: str
    bad: str
    tests: list[str] = field(default_factory=list)
    prop: str | None = None
    revision: str = "upstream"
    machine: str = "virt-gicv3"
    policy: str = "every-exit"
    jobs: int | None = None
    worktree: str = ""  # where the bisection runs
    dir: str = ""  # results/bisect-<id>


def _git(cwd: Path | str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    if check and out.returncode:
        raise HarnessError(cwd, f"git {' '.join(args)} failed: {out.stderr.strip()[:300]}")
    return out


def worktree_of(path: Path) -> Path:
    ident = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return kernel.KERNELS / f"bisect-{path.name}-{ident}" / "linux"


def _prepare(spec: BisectSpec) -> Path:
    """The bisection's worktree at the bad commit, clean, no bisection under way."""
    src = Path(spec.tree)
    wt = worktree_of(src)
    if not (wt / ".git").exists():
        wt.parent.mkdir(parents=True, exist_ok=True)
        _git(src, "worktree", "prune")
        _git(src, "worktree", "add", "-q", "--detach", str(wt), spec.bad)
    _git(wt, "bisect", "reset", check=False)
    _git(wt, "checkout", "-q", "-f", "--detach", spec.bad)
    _git(wt, "clean", "-q", "-fdx")
    return wt


def run(spec: BisectSpec, say: Callable[[str], None] = print, base: Path = repo.RESULTS) -> int:
    """Bisect; 0 when a first bad commit was found (printed with its verdict)."""
    src = Path(spec.tree).expanduser().resolve()
    if not tree.is_git(src):
        raise HarnessError(src, "bisect needs a git work tree")
    spec.tree = str(src)
    for name in ("good", "bad"):
        commit = getattr(spec, name)
        out = _git(src, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}", check=False)
        if out.returncode:
            raise HarnessError(src, f"--{name} {commit}: no such commit")
        setattr(spec, name, out.stdout.strip())
    tree.check_tree(src)
    base.mkdir(parents=True, exist_ok=True)
    bdir = base / f"bisect-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    bdir.mkdir()
    wt = _prepare(spec)
    spec.worktree, spec.dir = str(wt), str(bdir)
    resultsfile.write_atomic(bdir / "bisect.json", json.dumps(asdict(spec), indent=1) + "\n")
    say(f"# bisect {spec.good[:12]}..{spec.bad[:12]} of {src} in {repo.rel(wt)}")
    say(f"# results: {repo.rel(bdir)}")
    start = time.monotonic()
    _git(wt, "bisect", "start", spec.bad, spec.good)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(repo.ROOT), os.environ.get("PYTHONPATH", "")])
    )
    cmd = [sys.executable, "-m", "harness.runs.bisect", "step", str(bdir / "bisect.json")]
    with open(bdir / "bisect-run.log", "w") as log:
        proc = subprocess.run(
            ["git", "-C", str(wt), "bisect", "run", *cmd], stdout=subprocess.PIPE, stderr=log,
            text=True, env=env,
        )  # fmt: skip
        log.write(proc.stdout)
    (bdir / "bisect-log.txt").write_text(_git(wt, "bisect", "log", check=False).stdout)
    _git(wt, "bisect", "reset", check=False)
    return _result(spec, bdir, proc.stdout, time.monotonic() - start, say)


def _steps(bdir: Path) -> list[dict]:
    path = bdir / "steps.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _result(spec: BisectSpec, bdir: Path, output: str, seconds: float, say) -> int:
    steps = _steps(bdir)
    for s in steps:
        say(f"# step {s['commit'][:12]} {s['verdict']}: {s['subject']} ({s['reason']})")
    m = _FIRST_BAD.search(output)
    result: dict = {"first_bad": None, "steps": len(steps), "seconds": round(seconds, 1)}
    if not m:
        tail = output.strip().splitlines()[-3:]
        say("# bisect found no first bad commit: " + " / ".join(tail))
        result["output"] = output[-2000:]
        resultsfile.write_atomic(bdir / "result.json", json.dumps(result, indent=1) + "\n")
        return 2
    commit = m[1]
    subject = _git(spec.tree, "log", "-1", "--format=%s", commit).stdout.strip()
    step = next((s for s in steps if s["commit"] == commit), None)
    if step is None:  # the bad end, which git bisect takes as given: judged now
        step = _step(spec, Path(spec.worktree), commit, bdir)
    result |= {"first_bad": commit, "subject": subject, "step": step}
    resultsfile.write_atomic(bdir / "result.json", json.dumps(result, indent=1) + "\n")
    say(f"first bad commit: {commit} {subject}")
    say(f"  verdict: {step['verdict']}: {step['reason']} (run {step['run_dir']})")
    say(f"# {len(steps)} step(s) in {seconds:.0f} s; results: {repo.rel(bdir)}")
    return 0


def judge(out: RunOutcome, tests: list[str], prop: str | None) -> tuple[int, str]:
    """A run's bisect verdict (GOOD, BAD or SKIP) and why."""
    if out.boot is None:
        return SKIP, "no boot (the kernel did not build?): " + _first_reason(out)
    named = [r for r in out.results if not tests or r.name in tests]
    if not named:
        return SKIP, "none of the named tests ran"
    if prop:
        judged = [(r, p) for r in named for p in r.properties if p.prop == prop]
        if bad := [f"{r.name}: {p.prop}: {p.detail}" for r, p in judged if p.status == "fail"]:
            return BAD, bad[0]
        if any(p.status == "pass" for _, p in judged):
            return GOOD, f"{prop} passed in " + ", ".join(r.name for r, p in judged)
        return SKIP, f"{prop} judged by none of " + ", ".join(r.name for r in named)
    if bad := [r for r in named if r.status == "FAIL"]:
        return BAD, f"{bad[0].name} FAIL: " + "; ".join(bad[0].reasons)[:300]
    if skip := [r for r in named if r.status in ("ERROR", "MISS")]:
        return SKIP, f"{skip[0].name} {skip[0].status}: " + "; ".join(skip[0].reasons)[:300]
    return GOOD, ", ".join(f"{r.name} {r.status}" for r in named)


def _first_reason(out: RunOutcome) -> str:
    reasons = [x for r in out.results for x in r.reasons]
    return reasons[0][:300] if reasons else "?"


def _step(spec: BisectSpec, wt: Path, commit: str, bdir: Path) -> dict:
    """Build and boot the worktree's HEAD (commit); its line of steps.jsonl."""
    start = time.monotonic()
    subject = _git(wt, "log", "-1", "--format=%s", commit).stdout.strip()
    if _git(wt, "rev-parse", "HEAD").stdout.strip() != commit:
        wt = _prepare(BisectSpec(**{**asdict(spec), "bad": commit}))
    opts = RunOptions(
        revision=spec.revision,
        machine=spec.machine,
        policy=spec.policy,
        tests=list(spec.tests),
        tree=wt,
        results_base=bdir / "steps",
        jobs=spec.jobs,
    )
    out = boot_test(opts)
    code, reason = judge(out, spec.tests, spec.prop)
    line = {
        "commit": commit,
        "subject": subject,
        "verdict": VERDICTS[code],
        "reason": reason,
        "run_dir": str(out.run_dir.relative_to(bdir)),
        "seconds": round(time.monotonic() - start, 1),
    }
    with open(bdir / "steps.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


def step_main(config: Path) -> int:
    """One `git bisect run` step: the exit code git bisect reads."""
    spec = BisectSpec(**json.loads(config.read_text()))
    wt = Path(spec.worktree)
    commit = _git(wt, "rev-parse", "HEAD").stdout.strip()
    try:
        line = _step(spec, wt, commit, Path(spec.dir))
    except HarnessError as e:  # not judgeable; the bisection goes on
        print(f"error: {e}", file=sys.stderr)
        return SKIP
    print(f"# bisect step {commit[:12]}: {line['verdict']}: {line['reason']}", flush=True)
    return {"good": GOOD, "bad": BAD}.get(line["verdict"], SKIP)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "step":
        sys.exit(step_main(Path(sys.argv[2])))
    sys.exit("usage: python -m harness.runs.bisect step <results/bisect-<id>/bisect.json>")
