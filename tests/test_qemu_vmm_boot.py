"""QEMU as a second VMM, for real: Debian's arm64 qemu-system-aarch64 runs with KVM
and kernel-irqchip=off inside the booted L1 kernel, next to our VMM on the peers.

The first run builds the rootfs (~10 s: apt resolution, download, unpack;
cached under build/rootfs/), then each boot takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.runs.run import RunOptions, boot_test

pytestmark = pytest.mark.boot


def _run(tmp_path: Path, **kw):
    lines: list[str] = []
    out = boot_test(RunOptions(results_base=tmp_path, vmm="qemu", **kw), say=lines.append)
    return out, lines


def test_qemu_vmm_passes_on_upstream_and_agrees_with_ours(tmp_path):
    out, lines = _run(tmp_path)
    assert out.exit_code == 0, "\n".join(lines)
    assert out.run_dir.name.split("-")[-2] == "qemu"
    data = json.loads((out.run_dir / "results.json").read_text())
    assert data["complete"] is True and data["identity"]["vmm"] == "qemu"
    tests = {t["name"]: t for t in data["tests"]}
    assert list(tests) == ["rearm_n", "oneshot_wfi", "mmio_spin", "vtimer_gic"]
    assert all(t["status"] == "PASS" for t in tests.values())
    m = tests["vtimer_gic"]["metrics"]
    assert m["irqs"] == 7 and m["spurious"] == 0 and m["early"] == 0
    assert m["kt_irq_lines"] > 0  # the IRQs went in through KVM_IRQ_LINE
    assert m["kt_vtimer_edges"] == 7  # the kernel's view of the line: one rise per IRQ
    assert 0 < m["wall_ms"] < 30_000
    assert data["vmm_comparison"] == [
        {
            "test": "vtimer_gic",
            "qemu": "PASS",
            "ours": {"rearm_n": "PASS", "oneshot_wfi": "PASS", "mmio_spin": "PASS"},
            "agree": True,
        }
    ]
    qv = data["identity"]["qemu_vmm"]
    assert qv["qemu_package"].startswith("qemu-system-arm:arm64 1:7.2")
    assert qv["machine"] == "virt,gic-version=2,kernel-irqchip=off"
    assert qv["rootfs"]["bytes"] < 80 << 20
    ktap = (out.run_dir / "ktap.txt").read_text().splitlines()
    assert "ok 4 vtimer_gic" in ktap
    assert ktap[ktap.index("ok 4 vtimer_gic") + 1] == (
        "# vmm vtimer_gic: qemu PASS, ours rearm_n PASS, oneshot_wfi PASS, mmio_spin PASS: agree"
    )
    assert out.boot is not None and out.boot.wall_s < 60


def test_an_eintr_only_vmm_disagrees_with_qemu_on_upstream(tmp_path):
    """QEMU reads the line on every exit; our VMM reading it only on KVM_EXIT_INTR misses
    the changes that ride on MMIO exits: the same kernel, two VMMs, two verdicts.

    Which of ours' tests lose a change is timing: mmio_spin's fall after its IRQ usually
    rides the handler's MMIO exit, but a host interrupt in between sends it as its own
    KVM_EXIT_INTR (one CI run). Every failure must be that miss, named by `visible`."""
    out, lines = _run(tmp_path, policy="eintr-only", tests=["vtimer_gic"])
    assert out.exit_code == 1
    results = {r.name: r for r in out.results}
    assert results.pop("vtimer_gic").status == "PASS"
    assert list(results) == ["rearm_n", "oneshot_wfi", "mmio_spin"]
    failed = [r for r in results.values() if r.status == "FAIL"]
    assert failed, [(r.name, r.status) for r in results.values()]
    for r in failed:
        assert r.reasons[0].startswith("visible: ") and "(MMIO), never read" in r.reasons[0]
    (cmp,) = json.loads((out.run_dir / "results.json").read_text())["vmm_comparison"]
    assert cmp["agree"] is False
    assert any(
        line.startswith("# vmm vtimer_gic: qemu PASS, ours ") and line.endswith(": DISAGREE")
        for line in lines
    )
