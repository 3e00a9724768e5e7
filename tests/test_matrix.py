"""Matrix files: strict loading with one-line errors; the runner's scheduling, outcomes,
expectations, retries and matrix.json (kernels and boots faked: no QEMU here)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import pytest

from harness.build import debkernel, kernel
from harness.core import repo
from harness.core.errors import BuildError, InputError
from harness.inputs import revision
from harness.runs.matrix import outcome, scheduler, spec
from harness.runs.run import RunOutcome

MATRIX_DIR = repo.ROOT / "matrix"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


# -- loading ---------------------------------------------------------------------


def test_shipped_matrices_load_and_cover_what_nightly_promises():
    nightly = spec.load(MATRIX_DIR / "nightly.yaml")
    smoke = spec.load(MATRIX_DIR / "smoke.yaml")
    assert len(nightly.cells) >= 6 and len(smoke.cells) >= 4
    cells = {c.name: c for c in nightly.cells}
    # every shipped revision, negative controls included, is in the nightly
    assert {c.revision for c in nightly.cells} == set(revision.available())
    control = cells["upstream-nowake-6.1-virt-gicv3-every-exit"]
    assert (control.expect, control.expect_reason) == ("fail", "wake:")
    assert any(c.prebuilt for c in nightly.cells) and any(c.prebuilt for c in smoke.cells)
    machines = {c.machine for c in nightly.cells}
    assert {"virt-gicv2", "virt-gicv3-nvhe", "virt-gicv3-smp2", "virt-gicv3-debian"} <= machines
    assert cells["v6-6.1-virt-gicv3-eintr-only"].expect == "fail"
    assert cells["v4-6.1-virt-gicv3-eintr-only"].expect == "pass"
    # every revision on both Debian sources, both policies; a 6.1-only negative
    # control shows on 6.12 that its series does not apply
    for rev in ("upstream", "v4", "v5", "v6"):
        for src, policy in itertools.product(("6.1", "6.12"), ("every-exit", "eintr-only")):
            cell = cells[f"{rev}-{src}-virt-gicv3-{policy}"]
            want = "fail" if policy == "eintr-only" and rev in ("v6", "upstream") else "pass"
            assert cell.expect == want, cell.name
            # the failing eintr-only cells run a few tests that fail at once (the rest
            # of the suite fails too, mostly after a guest time-out)
            if want == "fail":
                assert {"oneshot_tval", "mmio_spin"} <= set(cell.tests), cell.name
                assert cell.expect_reason == "visible:" and len(cell.tests) <= 5
    control = cells["v5-coalesce-6.12-virt-gicv3-every-exit"]
    assert (control.expect, control.expect_reason) == ("error", "does not apply")
    assert not revision.load("v5-coalesce").series  # it has no 6.12 series of its own
    deb = cells["upstream-deb6.1.0-56-virt-gicv3-debian-every-exit"]
    assert deb.source == "linux-image-6.1.0-56-arm64" and deb.kernel_key()[0] == "prebuilt"


def test_lists_expand_to_the_cross_product_with_defaults(tmp_path):
    p = write(
        tmp_path,
        """
name: t
defaults: {policy: eintr-only, tests: [rearm_n]}
cells:
  - revision: [upstream, v5]
    machine: [virt-gicv3, virt-gicv2]
  - {revision: v6, name: mine, expect: fail, tests: [oneshot_wfi, mmio_spin]}
""",
    )
    m = spec.load(p)
    names = [c.name for c in m.cells]
    assert names == [
        "upstream-6.1-virt-gicv3-eintr-only",
        "upstream-6.1-virt-gicv2-eintr-only",
        "v5-6.1-virt-gicv3-eintr-only",
        "v5-6.1-virt-gicv2-eintr-only",
        "mine",
    ]
    assert m.cells[0].tests == ("rearm_n",) and m.cells[-1].tests == ("oneshot_wfi", "mmio_spin")
    assert m.cells[0].line == 5 and m.cells[-1].line == 7
    # same fragments -> one kernel for both machines
    assert m.cells[0].kernel_key() == m.cells[1].kernel_key() != m.cells[2].kernel_key()
    assert [c.name for c in m.select(["mine"]).cells] == ["mine"]
    with pytest.raises(InputError, match="no cell 'nope'"):
        m.select(["nope"])


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("  - {revision: upstream, colour: red}", 4, "unknown key 'colour'"),
        ("  - {revision: v7}", 4, "key 'revision': unknown revision 'v7'"),
        ("  - {revision: upstream, policy: sometimes}", 4, "key 'policy': unknown policy"),
        ("  - {revision: upstream, source: linux-source-5.10}", 4, "unknown kernel source"),
        ("  - {revision: upstream, machine: pdp11}", 4, "unknown machine 'pdp11'"),
        ("  - {revision: upstream, expect: maybe}", 4, "key 'expect': unknown value 'maybe'"),
        ("  - {revision: upstream, expect_reason: x}", 4, "'expect_reason' needs expect"),
        ("  - {revision: upstream, tests: [nosuch]}", 4, "unknown test 'nosuch'"),
        ("  - {revision: [upstream, v4], name: x}", 4, "expands to 2 cells"),
        ("  - {revision: []}", 4, "non-empty list"),
        ("  - {policy: every-exit}", 4, "missing key 'revision'"),
        (
            "  - revision: v5\n    source: linux-image-6.1.0-56-arm64",
            5,
            "carries no patches: only revision upstream",
        ),
        (
            "  - {revision: upstream, machine: virt-gicv3-debian}",
            4,
            "has no kernel fragments",
        ),
        ("  - {revision: upstream}\n  - {revision: upstream}", 5, "duplicate cell"),
    ],
)
def test_errors_are_one_line_naming_file_line_and_key(tmp_path, body, line, message):
    p = write(tmp_path, f"name: t\ncells:\n  # a comment\n{body}\n")
    with pytest.raises(InputError) as e:
        spec.load(p)
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(f"{p}:{line}: "), text
    assert message in text


def test_top_level_errors(tmp_path):
    with pytest.raises(InputError, match=r"m.yaml:1: unknown key 'cellz'"):
        spec.load(write(tmp_path, "cellz: []\nname: t\n"))
    with pytest.raises(InputError, match=r"m.yaml:2: key 'cells' must be a non-empty list"):
        spec.load(write(tmp_path, "name: t\ncells: []\n"))
    with pytest.raises(InputError, match=r"m.yaml:2: unknown key 'revision'"):
        spec.load(write(tmp_path, "name: t\ndefaults: {revision: v4}\ncells: [{revision: v4}]\n"))


def test_sources_and_names():
    assert spec.short_source("linux-source-6.12") == "6.12"
    assert spec.short_source("linux-image-6.1.0-56-arm64") == "deb6.1.0-56"
    assert debkernel.is_package("linux-image-6.1.0-50-arm64")
    assert not debkernel.is_package("linux-image-6.1.0-50-amd64")
    assert "linux-source-6.12" in kernel.SOURCES


# -- outcomes on recorded results --------------------------------------------------


def _recorded(tmp_path: Path) -> Path:
    import tarfile

    with tarfile.open(repo.ROOT / "tests" / "data" / "diff-nightly.tar.gz") as t:
        t.extractall(tmp_path, filter="data")
    return tmp_path


def _cell_results(root: Path, side: str, cell: str) -> dict:
    m = json.loads((root / side / "matrix.json").read_text())
    c = next(c for c in m["cells"] if c["name"] == cell)
    return json.loads((root / side / c["run_dir"] / "results.json").read_text())


def test_outcomes_of_recorded_cells(tmp_path):
    root = _recorded(tmp_path)
    cases = {
        ("b", "upstream-6.1-virt-gicv3-every-exit"): "pass",
        ("b", "v4-6.1-virt-gicv3-every-exit"): "fail",
        ("b", "v6-6.1-virt-gicv3-eintr-only"): "fail",
        ("b", "v5-6.12-virt-gicv3-every-exit"): "error",  # the patch does not apply
        ("a", "upstream-6.1-virt-gicv3-eintr-only"): "error",  # QEMU died (QMP refused)
    }
    for (side, cell), want in cases.items():
        data = _cell_results(root, side, cell)
        got = outcome.outcome_of(data["tests"], data["boot"])
        assert got == want, (side, cell)
        why = outcome.reason_of(got, data)
        assert (why == "") == (want == "pass")
    data = _cell_results(root, "b", "v5-6.12-virt-gicv3-every-exit")
    assert "does not apply" in outcome.reason_of("error", data)
    data = _cell_results(root, "b", "v4-6.1-virt-gicv3-every-exit")
    assert outcome.reason_of("fail", data).startswith("1 not passed (oneshot_tval); oneshot_tval:")


# -- the runner, with kernels and boots faked ----------------------------------------


class FakeBoots:
    """Stands in for boot_test: writes a results.json with the statuses asked for."""

    def __init__(self, statuses: dict[str, list[str]], boot_status: dict | None = None):
        self.statuses = statuses
        self.boot_status = boot_status or {}
        self.calls: list[str] = []
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def __call__(self, opts, say):
        key = f"{opts.revision}-{opts.policy}"
        with self.lock:
            self.calls.append(key)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        time.sleep(0.05)
        run_dir = opts.results_base / f"run-{len(self.calls)}"
        run_dir.mkdir()
        statuses = self.statuses.get(key, ["PASS"])
        if isinstance(statuses[0], list):  # one list per run of the cell
            with self.lock:
                statuses = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if opts.kernel_source == "linux-source-6.12" and opts.revision != "upstream":
            statuses = ["ERROR"]  # the run retries the build, which fails again
        boot = self.boot_status.get(key)
        if isinstance(boot, list):  # one per attempt
            boot = boot.pop(0) if len(boot) > 1 else boot[0]
        boot = boot or "completed"
        data = {
            "identity": {"kernel": {"release": "6.1.0-test", "source": "x"}},
            "boot": {"status": boot, "wall_s": 1.0, "init_s": None if boot != "completed" else 0.3},
            "tests": [
                {"name": f"t{i}", "status": s, "reasons": [] if s == "PASS" else [f"why {i}"]}
                for i, s in enumerate(statuses)
            ],
            "summary": {s: statuses.count(s) for s in ("PASS", "FAIL", "ERROR", "SKIP", "MISS")},
        }
        (run_dir / "results.json").write_text(json.dumps(data))
        say(f"fake run of {key}")
        with self.lock:
            self.running -= 1
        return RunOutcome(run_dir, [], None, 0)


@pytest.fixture
def fake_kernels(monkeypatch):
    built: list[tuple] = []

    class K:
        cached = False
        build_seconds = 1.0
        image = Path("/nonexistent/Image")

    def build(rev, mach, jobs=None, say=print, source_package=kernel.DEFAULT_SOURCE):
        built.append((rev.name, source_package))
        if source_package == "linux-source-6.12" and rev.name != "upstream":
            raise BuildError("kernel_patches/x.patch", "does not apply: fails on kvm.h")
        return K()

    monkeypatch.setattr(kernel, "build", build)
    monkeypatch.setattr(kernel, "cached", lambda *a, **k: None)  # every kernel is "built"
    monkeypatch.setattr(
        debkernel,
        "fetch",
        lambda pkg, say=print: debkernel.DebKernel(pkg, "1", "6.1.0-x", Path("/x"), "00", True),
    )
    return built


def test_runner_runs_cells_checks_expectations_and_writes_matrix_json(tmp_path, fake_kernels):
    p = write(
        tmp_path,
        """
name: fake
cells:
  - revision: [upstream, v4, v5]
  - {revision: v6, policy: eintr-only, expect: fail, expect_reason: "why 1"}
  - {revision: v5, source: linux-source-6.12, expect: error}
  - {revision: upstream, source: linux-image-6.1.0-56-arm64, machine: virt-gicv3-debian}
  - {revision: upstream, machine: virt-gicv2}
""",
    )
    boots = FakeBoots({"v6-eintr-only": ["PASS", "FAIL"]})
    lines: list[str] = []
    runner = scheduler.Runner(spec.load(p), tmp_path / "res", slots=2, out=lines.append, boot=boots)
    assert runner.run() == 0, "\n".join(lines)
    # one kernel per (revision, source, fragments): upstream on gicv2 shares gicv3's
    assert sorted(fake_kernels) == sorted(
        [
            ("upstream", "linux-source-6.1"),
            ("v4", "linux-source-6.1"),
            ("v5", "linux-source-6.1"),
            ("v6", "linux-source-6.1"),
            ("v5", "linux-source-6.12"),
        ]
    )
    assert boots.max_running == 2 and len(boots.calls) == 7
    data = json.loads((runner.dir / "matrix.json").read_text())
    assert data["complete"] and data["ok"] and len(data["cells"]) == 7
    by_name = {c["name"]: c for c in data["cells"]}
    assert by_name["v6-6.1-virt-gicv3-eintr-only"]["outcome"] == "fail"
    deb = by_name["upstream-deb6.1.0-56-virt-gicv3-debian-every-exit"]
    assert deb["kernel"]["how"] == "cached" and deb["outcome"] == "pass"
    for c in data["cells"]:
        assert (runner.dir / c["run_dir"] / "results.json").is_file()
        assert (runner.dir / c["name"] / "output.log").read_text().startswith("fake run of")
    # progress: a start and an end line per cell, then the table
    assert sum(" start " in line for line in lines) == 7
    assert sum(" end " in line for line in lines) == 7
    assert lines[-1].startswith("# matrix fake: all cells as expected")
    assert lines[-9].split()[:4] == ["cell", "outcome", "expect", "ok"]


def test_a_cell_not_as_expected_fails_the_matrix(tmp_path, fake_kernels):
    p = write(
        tmp_path,
        """
name: fake
cells:
  - {revision: upstream}
  - {revision: v6, policy: eintr-only, expect: fail, expect_reason: "no such reason"}
""",
    )
    boots = FakeBoots({"upstream-every-exit": ["PASS", "ERROR"], "v6-eintr-only": ["FAIL"]})
    lines: list[str] = []
    runner = scheduler.Runner(spec.load(p), tmp_path, slots=1, out=lines.append, boot=boots)
    assert runner.run() == 1
    assert boots.max_running == 1
    data = json.loads((runner.dir / "matrix.json").read_text())
    assert not data["ok"]
    assert [c["as_expected"] for c in data["cells"]] == [False, False]
    assert "NOT AS EXPECTED (expect pass)" in next(x for x in lines if "end   upstream" in x)
    assert "2 cell(s) NOT as expected" in lines[-1]


def test_qemu_dying_before_the_kernel_is_retried_once(tmp_path, fake_kernels):
    p = write(tmp_path, "name: fake\ncells:\n  - {revision: upstream}\n  - {revision: v4}\n")
    boots = FakeBoots(
        {"v4-every-exit": ["MISS"]},
        {"upstream-every-exit": ["qemu-died", "completed"], "v4-every-exit": ["qemu-died"]},
    )
    lines: list[str] = []
    runner = scheduler.Runner(spec.load(p), tmp_path, slots=2, out=lines.append, boot=boots)
    assert runner.run() == 1
    data = json.loads((runner.dir / "matrix.json").read_text())
    up, v4 = data["cells"]
    assert up["outcome"] == "pass" and len(up["retried"]) == 1
    assert v4["outcome"] == "error" and len(v4["retried"]) == 1  # died twice: error
    assert sum(" retry " in line for line in lines) == 2


def test_repeat_runs_each_cell_n_times_and_lists_tests_that_changed(tmp_path, fake_kernels):
    p = write(tmp_path, "name: fake\ncells:\n  - {revision: upstream}\n  - {revision: v4}\n")
    flaky = [["PASS", "PASS"], ["PASS", "FAIL"], ["PASS", "PASS"]]
    boots = FakeBoots({"upstream-every-exit": flaky})
    lines: list[str] = []
    m = spec.load(p).repeated(3)
    assert [c.name for c in m.cells][:3] == [
        "upstream-6.1-virt-gicv3-every-exit#1",
        "v4-6.1-virt-gicv3-every-exit#1",
        "upstream-6.1-virt-gicv3-every-exit#2",
    ]
    runner = scheduler.Runner(m, tmp_path, slots=1, out=lines.append, boot=boots)
    assert runner.run() == 1  # the run with a FAIL was not as expected
    assert len(fake_kernels) == 2  # a kernel per cell, not per run
    data = json.loads((runner.dir / "matrix.json").read_text())
    assert data["repeat"] == 3 and len(data["cells"]) == 6
    assert data["unstable"] == [
        {
            "cell": "upstream-6.1-virt-gicv3-every-exit",
            "test": "t1",
            "statuses": {"PASS": 2, "FAIL": 1},
        }
    ]
    assert "#   upstream-6.1-virt-gicv3-every-exit t1: pass 2, fail 1" in lines


def test_tokens_bound_concurrency():
    t = scheduler.Tokens(2)
    assert t.take(5) == 2  # an smp-4 boot on a 2-token machine takes both
    done = []

    def other():
        done.append(t.take(1))

    th = threading.Thread(target=other)
    th.start()
    time.sleep(0.05)
    assert not done  # waits for a token
    t.give(2)
    th.join(1)
    assert done == [1]


def test_kernel_source_is_part_of_the_cache_key():
    from harness.core.errors import HarnessError
    from harness.inputs import machine, revision

    rev, mach = revision.load("upstream"), machine.load("virt-gicv3")
    d61 = kernel.build_dir(rev, mach)
    d612 = kernel.build_dir(rev, mach, "linux-source-6.12")
    assert d61 != d612 and d612.name.startswith("upstream-6.12-")
    assert d61.name.startswith("upstream-") and not d61.name.startswith("upstream-6.")
    # gicv2 and nvhe share gicv3's fragments, so its kernel
    assert kernel.build_dir(rev, machine.load("virt-gicv2")) == d61
    assert kernel.source_tarball("linux-source-6.12").name == "linux-source-6.12.tar.xz"
    with pytest.raises(HarnessError, match=r"unknown kernel source 'linux-source-4\.19'"):
        kernel.build_dir(rev, mach, "linux-source-4.19")


def test_tokens_first_come_first_served():
    t = scheduler.Tokens(2)
    assert t.take(1) == 1
    order = []

    def want(n, tag):
        t.take(n)
        order.append(tag)
        t.give(n)

    big = threading.Thread(target=want, args=(2, "two-cpu boot"))
    big.start()
    time.sleep(0.05)
    small = threading.Thread(target=want, args=(1, "one-cpu boot"))
    small.start()
    time.sleep(0.05)
    assert order == []  # one token is free, but the two-CPU boot came first
    t.give(1)
    big.join(1)
    small.join(1)
    assert order == ["two-cpu boot", "one-cpu boot"]


def _boot_until_stopped(opts, say):
    """A boot that runs until told to stop, as QemuRun.follow() does (signals.check())."""
    from harness.core import signals

    run_dir = opts.results_base / "run"
    run_dir.mkdir()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            signals.check()
        except signals.Interrupted as e:
            data = {
                "identity": {},
                "boot": {"status": "interrupted", "wall_s": 1.0, "init_s": 0.3},
                "tests": [{"name": "t0", "status": "ERROR", "reasons": [e.reason]}],
                "summary": {"ERROR": 1},
            }
            (run_dir / "results.json").write_text(json.dumps(data))
            return RunOutcome(run_dir, [], None, e.exit_code, interrupted=e.name)
        time.sleep(0.02)
    raise AssertionError("the boot was never told to stop")


def test_sigterm_stops_the_matrix_its_running_cells_end_interrupted(tmp_path, fake_kernels):
    import os
    import signal

    from harness.core import signals

    p = write(tmp_path, "name: stop\ncells:\n  - revision: [upstream, v4, v5]\n")
    lines: list[str] = []
    runner = scheduler.Runner(
        spec.load(p), tmp_path / "res", slots=2, out=lines.append, boot=_boot_until_stopped
    )
    timer = threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGTERM))
    with signals.handled():
        timer.start()
        try:
            code = runner.run()
        finally:
            timer.cancel()
            signals.reset()
    assert code == 143, "\n".join(lines)
    data = json.loads((runner.dir / "matrix.json").read_text())
    assert data["complete"] is False and data["ok"] is False and data["interrupted"] == "SIGTERM"
    outcomes = [c["outcome"] for c in data["cells"]]
    assert outcomes == ["interrupted", "interrupted", "pending"]  # two slots: two ran
    assert all(c["reason"] == "interrupted (SIGTERM)" for c in data["cells"][:2])
    assert lines[-1].startswith("# matrix stop: interrupted (SIGTERM); 0 of 3 cells finished")
