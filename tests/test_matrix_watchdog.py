"""A matrix cell's timeout_s: every test's watchdog in the cell, checked as a guest
spec's timeout_s is, carried by RunOptions.test_timeout_s into the suite (and
boot-test --test-timeout); kernels and boots faked, no QEMU here."""

from __future__ import annotations

import dataclasses
import json
import re
from types import SimpleNamespace

import pytest
import yaml
from test_matrix import FakeBoots, fake_kernels, write  # noqa: F401  (fake_kernels: a fixture)

from harness import cli
from harness.boot.suite import suite_bound
from harness.build import initramfs
from harness.core import repo
from harness.core.errors import InputError
from harness.inputs import guest_spec, limits, revision
from harness.inputs.options import RunOptions
from harness.runs.matrix import scheduler, spec
from harness.runs.vmms.ours import Vmm

MOST_S = limits.get("VT_TIMEOUT_MS_MAX") / 1000


def test_a_cells_timeout_s_is_loaded_and_described(tmp_path):
    p = write(
        tmp_path,
        "name: t\ncells:\n"
        "  - {revision: upstream, tests: [oneshot_wfi], timeout_s: 4}\n"
        "  - {revision: v4, timeout_s: 0.5}\n"
        "  - {revision: v5}\n",
    )
    cells = spec.load(p).cells
    assert [c.timeout_s for c in cells] == [4.0, 0.5, None]
    assert cells[0].describe()["timeout_s"] == 4.0 and cells[2].describe()["timeout_s"] is None
    # a repeated cell keeps it
    assert {c.timeout_s for c in spec.load(p).select([cells[0].name]).repeated(2).cells} == {4.0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", f"key 'timeout_s' must be in 0.001..{MOST_S:g} seconds, not 0"),
        ("-3", "key 'timeout_s' must be in 0.001.."),
        (str(int(MOST_S) + 1), f"must be in 0.001..{MOST_S:g} seconds"),
        (".nan", "number .nan is not finite"),  # the YAML loader says so
        ("fast", "key 'timeout_s' must be int or float, not 'fast'"),
        ("true", "key 'timeout_s' must be int or float, not True"),
    ],
)
def test_a_bad_timeout_s_is_one_line_naming_file_and_line(tmp_path, value, message):
    body = f"  - revision: v4\n  - revision: v5\n    timeout_s: {value}\n"
    p = write(tmp_path, f"name: t\ncells:\n{body}")
    with pytest.raises(InputError) as e:
        spec.load(p)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{p}:5: "), text
    assert message in text


def test_the_guest_specs_and_the_cells_share_one_rule():
    assert guest_spec.timeout_problem(4) is None and guest_spec.timeout_problem(0.001) is None
    assert guest_spec.timeout_problem(MOST_S) is None
    for bad in (0, 0.0005, MOST_S + 1, float("inf"), float("nan"), True, "4"):
        assert guest_spec.timeout_problem(bad), bad


def _suite(test_timeout_s: float | None, tests: list[str]):
    opts = RunOptions(tests=tests, test_timeout_s=test_timeout_s)
    return Vmm(opts, revision.load("v6"), lambda line: None).suite()


def test_run_options_test_timeout_sets_every_tests_watchdog():
    names = ["oneshot_wfi", "rearm_n", "ptimer_oneshot"]  # ptimer_oneshot: v6 skips it
    own = {t.name: t.timeout_s for t in _suite(None, names).specs}
    assert own == {"oneshot_wfi": 20.0, "rearm_n": 30.0, "ptimer_oneshot": 20.0}
    suite = _suite(4.0, names)
    assert [t.timeout_s for t in suite.specs] == [4.0, 4.0, 4.0]
    assert [t.name for t in suite.runnable] == ["oneshot_wfi", "rearm_n"]
    assert list(suite.skipped) == ["ptimer_oneshot"]
    # what /init is told and how long the boot may take follow it
    manifest = initramfs.SuitePlan("v6", "every-exit", tuple(suite.runnable)).manifest()
    assert manifest.count("timeout_ms=4000") == 2 and "timeout_ms=20000" not in manifest
    assert suite_bound(suite.runnable) < suite_bound(_suite(None, names).runnable) - 40


def test_a_cells_timeout_s_reaches_its_runs_options(tmp_path, fake_kernels):  # noqa: F811
    p = write(
        tmp_path,
        "name: t\ncells:\n  - {revision: upstream, timeout_s: 2.5}\n  - {revision: v4}\n",
    )
    seen: dict[str, float | None] = {}
    boots = FakeBoots({})

    def boot(opts, say):
        seen[opts.revision] = opts.test_timeout_s
        return boots(opts, say)

    m = spec.load(p)
    runner = scheduler.Runner(m, tmp_path / "res", slots=1, out=lambda s: None, boot=boot)
    assert runner.run() == 0
    assert seen == {"upstream": 2.5, "v4": None}
    data = json.loads((runner.dir / "matrix.json").read_text())
    assert [c["timeout_s"] for c in data["cells"]] == [2.5, None]


def test_boot_test_test_timeout(monkeypatch, capsys):
    seen: list[RunOptions] = []

    def boot_test(opts):
        seen.append(opts)
        return SimpleNamespace(exit_code=0)

    monkeypatch.setattr(cli, "boot_test", boot_test)
    assert cli.main(["boot-test", "--test", "oneshot_wfi", "--test-timeout", "4"]) == 0
    assert cli.main(["boot-test", "--test", "oneshot_wfi"]) == 0
    assert [o.test_timeout_s for o in seen] == [4.0, None]
    for bad in ("0", "soon", str(MOST_S * 2)):
        with pytest.raises(SystemExit) as e:
            cli.main(["boot-test", "--test-timeout", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("python -m harness boot-test: error: argument --test-timeout")
    assert len(seen) == 2  # no run for a bad value


def test_the_nightly_controls_that_wait_for_a_watchdog_wait_2_s():
    cells = {c.name: c for c in spec.load(repo.ROOT / "matrix" / "nightly.yaml").cells}
    for name in ("upstream-nowake", "upstream-irqstorm"):
        assert cells[f"{name}-6.1-virt-gicv3-every-exit"].timeout_s == 2.0
    assert sum(c.timeout_s is not None for c in cells.values()) == 2


def test_the_qemu_vmm_and_its_peers_take_the_watchdog_too():
    from harness.runs.vmms.qemu_vmm import QemuVmm

    def suite(timeout_s):
        opts = RunOptions(vmm="qemu", test_timeout_s=timeout_s)
        return QemuVmm(opts, revision.load("upstream"), lambda line: None).suite()

    own = {t.name: t.timeout_s for t in suite(None).specs}
    assert own["vtimer_gic"] == 60.0 and own["rearm_n"] == 30.0
    assert {t.name: t.timeout_s for t in suite(4.0).specs} == dict.fromkeys(own, 4.0)


def test_a_cells_timeout_s_reaches_its_lava_job():
    from harness.lab.lava import export

    m = spec.load(repo.ROOT / "matrix" / "nightly.yaml")
    (cell,) = [c for c in m.cells if c.name == "upstream-nowake-6.1-virt-gicv3-every-exit"]
    assert cell.timeout_s == 2.0
    assert [s.timeout_s for s in export._specs(cell)] == [2.0, 2.0]
    plain = dataclasses.replace(cell, timeout_s=None)
    assert [s.timeout_s for s in export._specs(plain)] == [20.0, 30.0]
    # the job's initramfs tells /init so, and the job still renders
    manifest = initramfs.SuitePlan("upstream", "every-exit", tuple(export._specs(cell))).manifest()
    assert re.findall(r"timeout_ms=(\d+)", manifest) == ["2000", "2000"], manifest
    art = export.Artifact("k", "file:///k", "0" * 64, "kernel")
    job = yaml.safe_load(export.job_for(cell, "nightly", art, art))
    assert job["metadata"]["vtimer.cell"] == cell.name


def test_the_watchdog_is_in_the_runs_identity(tmp_path):
    from harness.runs.run import RunSetup

    opts = RunOptions(tests=["oneshot_wfi"], test_timeout_s=3.0, results_base=tmp_path)
    assert RunSetup.of(opts, lambda line: None).files.identity["test_timeout_s"] == 3.0
    opts = dataclasses.replace(opts, test_timeout_s=None)
    assert "test_timeout_s" not in RunSetup.of(opts, lambda line: None).files.identity
