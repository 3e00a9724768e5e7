"""The real path: build the minimal kernel, boot it nested in QEMU, run the suite.

The first run builds the kernel (minutes, cached under build/kernels/ by
source version, patches and config); the boots themselves take seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core import repo
from harness.inputs import guest_spec
from harness.runs.run import RunOptions, boot_test

pytestmark = pytest.mark.boot


def _run(tmp_path: Path, **kw):
    lines: list[str] = []
    out = boot_test(RunOptions(results_base=tmp_path, **kw), say=lines.append)
    return out, lines


def test_upstream_suite_passes_for_real(tmp_path):
    out, lines = _run(tmp_path)
    assert out.exit_code == 0, "\n".join(lines)
    n = len(guest_spec.select(guest_spec.load_all(), []))  # the fault tests run when named
    assert lines[lines.index("KTAP version 1") + 1] == f"1..{n}"
    assert sum(line.startswith("ok ") for line in lines) == n
    data = json.loads((out.run_dir / "results.json").read_text())
    assert data["complete"] is True
    assert data["summary"]["PASS"] == n
    assert data["boot"]["status"] == "completed" and data["boot"]["qemu_exit"] == 0
    assert data["identity"]["kernel"]["release"].startswith("6.1.")
    assert data["boot"]["qemu_version"].startswith(("7.", "8.", "9."))
    assert "arm_gt_recalc" in data["boot"]["trace_events"]
    for name in (
        "console.log",
        "junit.xml",
        "ktap.txt",
        "qemu-cmdline.sh",
        "qemu-trace.log",
        "report.html",
    ):
        assert (out.run_dir / name).is_file(), name
    assert "gt_recalc" in (out.run_dir / "qemu-trace.log").read_text()
    # the records came on their own port; the report, written while QEMU powered off,
    # knows how the boot went
    assert "@VT1" not in (out.run_dir / "console.log").read_text()
    assert " done tests=" in (out.run_dir / "records.log").read_text()
    report = (out.run_dir / "report.html").read_text()
    assert "boot: completed (suite finished" in report and "QEMU 7." in report
    assert data["boot"]["trace_bytes"]["kept"] > 0 and data["boot"]["trace_bytes"]["dropped"] == 0
    for t in data["tests"]:  # all three layers saw the same edges, in every test
        m = t["metrics"]
        assert m["vtimer_edges"] == m["hw_vtimer_edges"] == m["kt_vtimer_edges"], t["name"]
        assert m["exits"] == m["kt_userspace_exits"], t["name"]
    rearm = next(t for t in data["tests"] if t["name"] == "rearm_n")
    assert rearm["metrics"]["vtimer_edges"] == 5 and rearm["metrics"]["irqs"] == 5
    props = {(t["name"], p["prop"]): p for t in data["tests"] for p in t["properties"]}
    for name in ("ptimer_oneshot", "both_timers"):  # the direct ptimer, at every exit
        truthful = props[(name, "truthful")]
        assert truthful["status"] == "pass" and "vtimer and ptimer levels" in truthful["detail"]
    # layer 1 split per vCPU: visible and prompt judged on two vCPUs
    assert "on any of 2 vCPUs" in props[("two_vcpus", "visible")]["detail"]
    assert props[("two_vcpus", "prompt")]["status"] == "pass"


def test_eintr_only_vmm_is_shown_missing_changes_on_upstream(tmp_path):
    """Each test's fall after its IRQ usually rides the IRQ report's MMIO exit; a host
    interrupt in between gives it a KVM_EXIT_INTR instead, so one test alone may pass."""
    out, _ = _run(tmp_path, policy="eintr-only", tests=["mmio_spin", "oneshot_wfi"])
    assert out.exit_code == 1
    failed = [r for r in out.results if r.status == "FAIL"]
    assert failed and all(r.status in ("PASS", "FAIL") for r in out.results)
    for res in failed:
        visible = next(p for p in res.properties if p.prop == "visible")
        assert visible.status == "fail" and "never read" in visible.detail
    assert out.boot is not None and out.boot.wall_s < 60


def test_kernel_panic_is_a_classified_failure(tmp_path):
    cfg = (repo.QEMU_CONFIGS / "virt-gicv3.yaml").read_text()
    bad = tmp_path / "panic.yaml"
    cfg = cfg.replace("name: virt-gicv3", "name: panic")
    bad.write_text(cfg.replace("rdinit=/init", "rdinit=/nonexistent root=/dev/nowhere"))
    out, _ = _run(tmp_path, machine=str(bad), tests=["oneshot_wfi"])
    assert out.exit_code == 1
    assert out.boot.status == "panic"
    assert out.boot.wall_s < 60  # seen on the console, not by time-out
    (res,) = out.results
    assert res.status == "MISS" and "panic" in res.reasons[0]
    assert "Kernel panic" in (out.run_dir / "console.log").read_text()


def test_cross_revision_v5_kernel_judged_by_every_model(tmp_path):
    """A real v5 kernel (built from kernel_patches/v5) with an eintr-only VMM: it sees
    every change, and its traces satisfy all four models."""
    out, lines = _run(
        tmp_path,
        revision="v5",
        policy="eintr-only",
        tests=["mmio_spin", "oneshot_wfi", "rearm_n"],
        models=["upstream", "v4", "v6"],
    )
    assert out.exit_code == 0, "\n".join(lines)
    assert [r.status for r in out.results] == ["PASS"] * 3
    assert set(out.by_model) == {"upstream", "v4", "v6"}
    for results in out.by_model.values():
        assert all(r.status == "PASS" for r in results)
    # every fall rode on the IRQ report's MMIO exit and still got its own EINTR
    notices = [r.metrics["notice_exits"] for r in out.results]
    assert all(n >= 2 for n in notices)


def test_failed_guest_check_values_reach_results_and_ktap(tmp_path):
    """upstream-nointr forces no exit for a timer change: oneshot_tval's IRQ never comes
    while it spins, and its check of the IRQ count says what it saw."""
    out, _ = _run(tmp_path, revision="upstream-nointr", tests=["oneshot_tval"])
    assert out.exit_code == 1
    why = "vt_irqs >= 1 failed: expected >= 1, observed 0)"
    (test,) = json.loads((out.run_dir / "results.json").read_text())["tests"]
    assert test["status"] == "FAIL"
    assert test["reasons"][0].startswith("visible: ")  # the broken promise first
    (check,) = [r for r in test["reasons"] if r.startswith("exit_code: ")]
    assert check.startswith("exit_code: expected 0, observed 1 (guest check at line ")
    assert check.endswith(f" of oneshot_tval.c: {why}")
    assert f"# oneshot_tval: {check}\n" in (out.run_dir / "ktap.txt").read_text()
