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
    cfg = cfg.replace("name: virt-gicv3", "name: broken")
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
    from harness import kernel

    for kept in kernel.KERNELS.glob("broken-rev-*"):  # kept for the user; not for the test
        shutil.rmtree(kept)


def test_config_option_that_does_not_stick_is_listed(tmp_path):
    (tmp_path / "bogus.config").write_text("CONFIG_VTIMER_HARNESS_NO_SUCH_OPTION=y\n")
    cfg = (repo.QEMU_CONFIGS / "virt-gicv3.yaml").read_text()
    machine_file = tmp_path / "bogus.yaml"
    machine_file.write_text(
        cfg.replace(
            "[kvm-minimal.config, trace.config]", "[kvm-minimal.config, bogus.config]"
        ).replace("name: virt-gicv3", "name: bogus")
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


def test_hang_crash_and_garbled_console_are_classified_and_the_suite_goes_on(tmp_path):
    out, _ = _run(
        tmp_path, tests=["hang_forever", "fault_vmm_crash", "fault_garble", "oneshot_wfi"]
    )
    res = {r.name: r for r in out.results}
    assert out.exit_code == 1
    assert res["hang_forever"].status == "FAIL"
    assert "watchdog" in res["hang_forever"].reasons[0]
    assert res["fault_vmm_crash"].status == "ERROR"
    assert "the VMM crashed" in res["fault_vmm_crash"].reasons
    garbled = res["fault_garble"]
    assert garbled.status == "ERROR"
    assert any("checksum mismatch" in r for r in garbled.reasons)
    assert any("lost" in r for r in garbled.reasons)
    assert res["oneshot_wfi"].status == "PASS"  # the suite went on after all of them
    log = (out.run_dir / "console.log").read_text()
    assert "status=watchdog" in log and "status=vmm-crash signal=11" in log


def test_fault_tests_run_only_when_named():
    from harness import guest_spec

    default = {t.name for t in guest_spec.select(guest_spec.load_all(), [])}
    assert "hang_forever" not in default and "oneshot_wfi" in default


@pytest.mark.parametrize("fault", ["stop-cont", "host-load"])
def test_timer_still_fires_once_under_injected_faults(tmp_path, fault):
    out, lines = _run(tmp_path, fault=fault, tests=["oneshot_wfi", "rearm_n", "mmio_spin"])
    assert out.exit_code == 0, "\n".join(lines)
    injected = [line for line in lines if line.startswith(f"# fault {fault} injected")]
    assert len(injected) == 3
    for r in out.results:
        once = next(p for p in r.properties if p.prop == "once")
        assert once.status == "pass", (r.name, once.detail)


def test_ctrl_c_ends_qemu_and_keeps_partial_results(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "boot-test", "--results", str(results),
         "--test", "oneshot_wfi", "--test", "hang_forever"],
        cwd=repo.ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("ok 1 oneshot_wfi"):
            break
    time.sleep(0.3)  # hang_forever is running now
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    (run_dir,) = results.iterdir()
    data = json.loads((run_dir / "results.json").read_text())
    assert data["complete"] is False
    status = {t["name"]: t["status"] for t in data["tests"]}
    assert status == {"oneshot_wfi": "PASS", "hang_forever": "ERROR"}
    assert (run_dir / "console.log").stat().st_size > 0
    qemus = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    assert qemus.stdout == "", "QEMU still running after Ctrl-C"
    assert os.path.exists(run_dir / "junit.xml")


def test_two_runs_at_once_share_the_kernel_but_not_results(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int):
        return boot_test(
            RunOptions(results_base=tmp_path / "results", tests=["rearm_n"]),
            say=lambda line: None,
        )

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(one, range(2))
    assert a.exit_code == b.exit_code == 0
    assert a.run_dir != b.run_dir
    ka = json.loads((a.run_dir / "results.json").read_text())["identity"]["kernel"]
    kb = json.loads((b.run_dir / "results.json").read_text())["identity"]["kernel"]
    assert ka["build_dir"] == kb["build_dir"]
