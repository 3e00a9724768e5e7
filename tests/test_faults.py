"""Faults end as classified results with their logs kept (real QEMU, no kernel build)."""

from __future__ import annotations

import json
import struct

import pytest

from harness import repo
from harness.qemu_runner import Timeouts
from harness.run import RunOptions, boot_test

pytestmark = pytest.mark.boot


def _run(tmp_path, **kw):
    lines: list[str] = []
    out = boot_test(RunOptions(results_base=tmp_path / "results", **kw), say=lines.append)
    return out, lines


def test_hang_before_init_is_bounded_and_diagnosed(tmp_path):
    image = tmp_path / "spin.Image"
    image.write_bytes(struct.pack("<I", 0x14000000) * 1024)  # "b ." forever, no console
    out, _ = _run(
        tmp_path,
        kernel_image=image,
        tests=["oneshot_wfi"],
        timeouts=Timeouts(boot_s=4, silence_s=3, shutdown_s=2),
    )
    assert out.exit_code == 1
    assert out.boot.status == "hang" and "boot (before /init)" in out.boot.reason
    diag = (out.run_dir / "hang-diagnostics.txt").read_text()
    assert "== query-status" in diag and "running" in diag
    assert "== info registers" in diag and "PC=" in diag
    (res,) = out.results
    assert res.status == "MISS"
    data = json.loads((out.run_dir / "results.json").read_text())
    assert data["complete"] is False and data["boot"]["status"] == "hang"


def test_qemu_that_dies_at_start_keeps_exit_status_and_stderr(tmp_path):
    cfg = (repo.QEMU_CONFIGS / "virt-gicv3.yaml").read_text()
    bad = tmp_path / "broken.yaml"
    bad.write_text(cfg + "extra_args: ['-device', 'no-such-device']\n")
    image = tmp_path / "unused.Image"
    image.write_bytes(b"\0" * 4096)
    out, _ = _run(tmp_path, machine=str(bad), kernel_image=image, tests=["oneshot_wfi"])
    assert out.exit_code == 1
    assert out.boot.status == "qemu-died"
    assert out.boot.qemu_exit == 1
    assert "no-such-device" in out.boot.reason
    assert "no-such-device" in (out.run_dir / "qemu.stderr").read_text()
    (res,) = out.results
    assert res.status == "MISS"
