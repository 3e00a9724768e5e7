"""Faults end as classified results with their logs kept (real QEMU, no kernel build)."""

from __future__ import annotations

import json
import shutil
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


def test_patch_that_does_not_apply_is_an_error_naming_patch_and_file(tmp_path):
    rev = tmp_path / "broken-rev"
    rev.mkdir()
    for f in ("series", "profile.yaml"):
        (rev / f).write_text((repo.KERNEL_PATCHES / "v5" / f).read_text())
    (rev / "profile.yaml").write_text(
        (rev / "profile.yaml").read_text().replace("revision: v5", "revision: broken-rev")
    )
    (patch,) = (repo.KERNEL_PATCHES / "v5").glob("*.patch")
    text = patch.read_text().replace(" struct kvm_sync_regs {", " struct kvm_sync_regz {", 1)
    (rev / patch.name).write_text(text)
    out, lines = _run(tmp_path, revision=str(rev), tests=["oneshot_wfi"])
    assert out.exit_code == 1
    err = next(line for line in lines if line.startswith("error: "))
    assert patch.name in err and "does not apply" in err
    assert "arch/arm64/include/uapi/asm/kvm.h" in err
    assert [r.status for r in out.results] == ["ERROR"]
    data = json.loads((out.run_dir / "results.json").read_text())
    assert "does not apply" in data["identity"]["error"]


def test_config_option_that_does_not_stick_is_listed(tmp_path):
    (tmp_path / "bogus.config").write_text("CONFIG_VTIMER_HARNESS_NO_SUCH_OPTION=y\n")
    cfg = (repo.QEMU_CONFIGS / "virt-gicv3.yaml").read_text()
    machine_file = tmp_path / "bogus.yaml"
    machine_file.write_text(
        cfg.replace("[kvm-minimal.config, trace.config]", "[kvm-minimal.config, bogus.config]")
    )
    out, lines = _run(tmp_path, machine=str(machine_file), tests=["oneshot_wfi"])
    assert out.exit_code == 1
    err = next(line for line in lines if line.startswith("error: "))
    assert "did not stick" in err and "CONFIG_VTIMER_HARNESS_NO_SUCH_OPTION=y (got n)" in err
    assert [r.status for r in out.results] == ["ERROR"]


def test_compiler_error_shows_the_log_tail_and_keeps_the_build_dir(tmp_path):
    rev = tmp_path / "cc-error"
    shutil.copytree(repo.KERNEL_PATCHES / "upstream", rev)
    (rev / "profile.yaml").write_text(
        (rev / "profile.yaml").read_text().replace("revision: upstream", "revision: cc-error")
    )
    (rev / "0001-break.patch").write_text(
        "--- a/arch/arm64/kvm/arch_timer.c\n+++ b/arch/arm64/kvm/arch_timer.c\n"
        "@@ -1,3 +1,4 @@\n+#error vtimer-harness: deliberately broken\n"
        + "".join(" " + line + "\n" for line in _head("arch/arm64/kvm/arch_timer.c", 3))
    )
    (rev / "series").write_text("0001-break.patch\n")
    out, lines = _run(tmp_path, revision=str(rev), tests=["oneshot_wfi"])
    assert out.exit_code == 1
    text = "\n".join(lines)
    assert "kernel build failed" in text and "deliberately broken" in text  # the log tail
    assert [r.status for r in out.results] == ["ERROR"]
    build_dir = (
        repo.ROOT
        / json.loads((out.run_dir / "results.json").read_text())["identity"]["error"].split(":")[0]
    )
    assert build_dir.is_file()  # build.log kept
    shutil.rmtree(build_dir.parent)


def _head(rel: str, n: int) -> list[str]:
    """The first lines of a file of the pristine kernel source (for a patch's context)."""
    import subprocess

    from harness import kernel

    for src in kernel.KERNELS.glob("src-*/linux"):
        return (src / rel).read_text().splitlines()[:n]
    text = subprocess.run(
        ["tar", "-xOf", str(kernel.SOURCE_TARBALL), f"linux-source-6.1/{rel}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return text.splitlines()[:n]
