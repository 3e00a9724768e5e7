"""Faults end as classified results with their logs kept (real QEMU, no kernel build)."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.boot.qemu_runner import Timeouts
from harness.core import repo
from harness.runs.run import RunOptions, boot_test

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


def _spin_image(tmp_path) -> Path:
    image = tmp_path / "spin.Image"
    image.write_bytes(struct.pack("<I", 0x14000000) * 1024)  # "b ." forever, no console
    return image


def _qemus(marker: str) -> list[int]:
    """The pids of the qemu-system-aarch64 processes whose command line has marker."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if argv and argv[0].endswith(b"qemu-system-aarch64") and marker.encode() in b" ".join(argv):
            pids.append(int(d.name))
    return pids


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _sigstop_qemu(marker: str, when: str, stopped: list[int]) -> None:
    """SIGSTOP the QEMU of this run once its QMP socket exists: at once ("at-start"), or
    once its vCPU spins ("running": a QEMU started -S burns next to no CPU until `cont`,
    then the guest's "b ." burns a whole CPU)."""
    deadline = time.monotonic() + 30
    samples: list[tuple[float, float]] = []  # (time, QEMU's CPU seconds)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        pids = _qemus(marker)
        if not pids:
            continue
        try:
            cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes().decode()
            if not Path(re.search(r"unix:([^,]+),", cmdline)[1]).exists():
                continue
            samples.append((time.monotonic(), _cpu_s(pids[0])))
        except OSError:  # it ended meanwhile
            return
        burnt = [c1 - c0 for (t0, c0) in samples for (t1, c1) in samples[-1:] if t1 - t0 <= 0.6]
        if when == "at-start" or (burnt and max(burnt) > 0.35):
            os.kill(pids[0], signal.SIGSTOP)
            stopped.append(pids[0])
            return


@pytest.mark.parametrize("when", ["running", "at-start"])
def test_wedged_qemu_is_killed_and_the_hang_says_which_qmp_command_timed_out(tmp_path, when):
    image = _spin_image(tmp_path)
    stopped: list[int] = []
    stopper = threading.Thread(target=_sigstop_qemu, args=(str(image), when, stopped))
    stopper.start()
    start = time.monotonic()
    try:
        out, _ = _run(
            tmp_path,
            kernel_image=image,
            tests=["oneshot_wfi"],
            timeouts=Timeouts(qmp_connect_s=3, boot_s=30, silence_s=4, shutdown_s=2, qmp_s=1.5),
        )
    finally:
        stopper.join(30)
        for pid in _qemus(str(image)):  # only if the run failed to end it
            os.kill(pid, signal.SIGKILL)
    wall = time.monotonic() - start
    assert stopped, "QEMU was not seen running"
    assert wall < 20, f"the run took {wall:.1f} s"
    assert out.exit_code == 1
    assert out.boot.status == "hang", out.boot.reason
    # at start: the connection's greeting (qmp_connect_s) or a first command (qmp_s)
    assert re.search(r"QMP did not answer .* within (1\.5|3) s", out.boot.reason), out.boot.reason
    assert out.boot.qemu_exit in (None, -signal.SIGKILL)  # SIGKILLed (reaped or not yet)
    diag = (out.run_dir / "hang-diagnostics.txt").read_text()
    assert "== query-status\nfailed: " in diag
    # at start QMP may stop at its greeting (the connection) or at a first command
    assert re.search(r"QMP did not answer ('|the connection)", diag), diag
    if when == "running":
        assert "QMP did not answer 'query-status' within 1.5 s" in diag
    assert _qemus(str(image)) == []
    (res,) = out.results
    assert res.status == "MISS"
    data = json.loads((out.run_dir / "results.json").read_text())
    assert data["complete"] is False and data["boot"]["status"] == "hang"
    assert {"console.log", "qemu.stderr", "hang-diagnostics.txt", "junit.xml"} <= set(
        p.name for p in out.run_dir.iterdir()
    )


@pytest.mark.parametrize(
    ("pattern", "why"),
    [("no_such_event", 'unknown event "no_such_event"'), ("zz_*", "matches no event")],
)
def test_unknown_trace_event_is_a_one_line_error_naming_it(tmp_path, pattern, why):
    """QEMU switches the events on from its command line and only warns of a name it
    does not know; QMP's check of each pattern makes it the user's one-line error."""
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "boot-test", "--results", str(results),
         "--kernel", str(_spin_image(tmp_path)), "--test", "oneshot_wfi",
         "--trace", "arm_gt_*", "--trace", pattern],
        cwd=repo.ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: trace event pattern '{pattern}': ") and why in line, line
    (run_dir,) = results.iterdir()
    data = json.loads((run_dir / "results.json").read_text())
    assert pattern in data["identity"]["error"] and data["complete"] is False
    assert _qemus(str(run_dir)) == []


def test_qemu_that_dies_at_start_keeps_exit_status_and_stderr(tmp_path):
    cfg = (repo.QEMU_CONFIGS / "virt-gicv3.yaml").read_text()
    bad = tmp_path / "broken.yaml"
    cfg = cfg.replace("name: virt-gicv3", "name: broken")
    bad.write_text(cfg + "extra_args: ['-device', 'no-such-device']\n")
    image = tmp_path / "unused.Image"
    image.write_bytes(b"\0" * 4096)
    out, said = _run(tmp_path, machine=str(bad), kernel_image=image, tests=["oneshot_wfi"])
    assert out.exit_code == 1
    assert out.boot.status == "qemu-died"
    # KTAP (its header made once QEMU started) still says the test
    assert any(line.startswith("KTAP version") for line in said), said
    assert any(line.startswith("not ok 1 oneshot_wfi") for line in said), said
    assert out.boot.qemu_exit == 1
    assert "no-such-device" in out.boot.reason
    assert "no-such-device" in (out.run_dir / "qemu.stderr").read_text()
    (res,) = out.results
    assert res.status == "MISS"


def test_qemu_that_cannot_be_started_still_gets_every_test_in_ktap(tmp_path, monkeypatch):
    """The KTAP header is made once QEMU runs: a boot that ends before it ran says
    every test all the same (none silently missing from stdout)."""
    from harness.boot import qemu_process
    from harness.core.errors import HarnessError

    def refuse(self, kernel, initrd):
        raise HarnessError(None, "cannot start QEMU (test)")

    monkeypatch.setattr(qemu_process.QemuProcess, "start", refuse)
    image = tmp_path / "unused.Image"
    image.write_bytes(b"\0" * 4096)
    out, said = _run(tmp_path, kernel_image=image, tests=["oneshot_wfi", "rearm_n"])
    assert out.boot.status == "qemu-died" and "cannot start QEMU" in out.boot.reason
    assert any(line.startswith("KTAP version") for line in said), said
    assert [line.split()[:4] for line in said if line.startswith("not ok")] == [
        ["not", "ok", "1", "oneshot_wfi"],
        ["not", "ok", "2", "rearm_n"],
    ], said


def test_patch_that_does_not_apply_is_an_error_naming_patch_and_file(tmp_path):
    rev = tmp_path / "broken-rev"
    rev.mkdir()
    for f in ("series", "profile.yaml"):
        (rev / f).write_text((repo.KERNEL_PATCHES / "v5" / f).read_text())
    profile = (rev / "profile.yaml").read_text().replace("revision: v5", "revision: broken-rev")
    # the 6.1 series only (v5 names a series per source)
    profile = re.sub(r"^series:\n(  .*\n)+", "", profile, flags=re.M)
    (rev / "profile.yaml").write_text(profile)
    (name,) = (repo.KERNEL_PATCHES / "v5" / "series").read_text().split()
    patch = repo.KERNEL_PATCHES / "v5" / name
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
    from harness.build import kernel

    for kept in kernel.KERNELS.glob("broken-rev-*"):  # kept for the user; not for the test
        shutil.rmtree(kept)


def test_config_option_that_does_not_stick_is_listed(tmp_path):
    (tmp_path / "bogus.config").write_text("CONFIG_VTIMER_HARNESS_NO_SUCH_OPTION=y\n")
    cfg = (repo.QEMU_CONFIGS / "virt-gicv3.yaml").read_text()
    machine_file = tmp_path / "bogus.yaml"
    machine_file.write_text(
        cfg.replace(
            "[kvm-minimal.config, trace.config, records.config]",
            "[kvm-minimal.config, bogus.config]",
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

    from harness.build import kernel

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
    log = (out.run_dir / "records.log").read_text()  # the records port's copy
    assert "status=watchdog" in log and "status=vmm-crash signal=11" in log
    assert "@VT1" not in (out.run_dir / "console.log").read_text()
    assert any("(line " in r and r.startswith("records: ") for r in garbled.reasons)


def test_fault_tests_run_only_when_named():
    from harness.inputs import guest_spec

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


class Harness:
    """`python -m harness ...` as a job of its own: started with SIGINT ignored, as a
    background job inherits it (the harness must handle SIGINT anyway), in a new session
    (its process group gets a terminal's Ctrl-C), its output read by a thread."""

    def __init__(self, *args: str) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness", *args],
            cwd=repo.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
            start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # the test failed before the harness ended
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if line.startswith(prefix):
                return
        raise AssertionError(f"no line {prefix!r} in:\n" + "".join(self.seen))

    def send(self, signum: int) -> None:
        """SIGINT to the whole process group (a terminal's Ctrl-C), SIGTERM to the
        harness alone (a scheduler's cancel)."""
        if signum == signal.SIGINT:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)

    def finish(self, timeout: float = 60) -> str:
        """Wait for the exit (bounded); the output after what wait_for() saw."""
        self.proc.wait(timeout=timeout)
        self._reader.join(10)
        rest = []
        while not self.lines.empty():
            if (line := self.lines.get()) is not None:
                rest.append(line)
        return "".join(rest)


def _kill_left(marker: str) -> list[int]:
    """The QEMUs of this test still running, killed (a failed test must not leave any)."""
    pids = _qemus(marker)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def _check_interrupted_boot_test(tmp_path, signum: int) -> None:
    name = signal.Signals(signum).name
    results = tmp_path / "results"
    h = Harness("boot-test", "--results", str(results),
                "--test", "oneshot_wfi", "--test", "hang_forever", "--test", "rearm_n")  # fmt: skip
    try:
        with h:
            h.wait_for("ok 1 oneshot_wfi")  # hang_forever runs now, for 2 s
            h.send(signum)
            rest = h.finish()
    finally:
        left = _kill_left(str(results))
    out = "".join(h.seen) + rest
    assert h.proc.returncode == 128 + signum, out
    assert f"# interrupted ({name}): QEMU ended, partial results kept" in out
    assert left == [], f"QEMU still running after {name}"
    (run_dir,) = results.iterdir()
    data = json.loads((run_dir / "results.json").read_text())
    assert data["complete"] is False
    assert data["boot"]["status"] == "interrupted", data["boot"]
    assert data["boot"]["reason"] == f"interrupted ({name})"
    tests = {t["name"]: t for t in data["tests"]}
    assert tests["oneshot_wfi"]["status"] == "PASS"
    # the test running when the signal came is ERROR; those after it never ran
    interrupted = [t for t in data["tests"] if t["status"] == "ERROR"]
    assert len(interrupted) == 1 and interrupted[0]["reasons"] == [f"interrupted ({name})"]
    after = data["tests"][data["tests"].index(interrupted[0]) + 1 :]
    assert all(t["status"] == "MISS" and name in t["reasons"][0] for t in after), after
    assert (run_dir / "console.log").stat().st_size > 0
    # QEMU was ended by the harness, not by the signal (it runs in a session of its own)
    assert "terminating on signal" not in (run_dir / "qemu.stderr").read_text()
    assert data["boot"]["qemu_exit"] == 0  # it quit when QMP told it to
    assert f"interrupted ({name})" in (run_dir / "junit.xml").read_text()
    assert f"interrupted ({name})" in (run_dir / "ktap.txt").read_text()


def test_ctrl_c_ends_qemu_and_keeps_partial_results(tmp_path):
    _check_interrupted_boot_test(tmp_path, signal.SIGINT)


def test_sigterm_ends_qemu_and_keeps_partial_results(tmp_path):
    _check_interrupted_boot_test(tmp_path, signal.SIGTERM)


def test_sigterm_ends_a_wedged_qemu_too(tmp_path):
    """QEMU stopped (QMP never answers), then the harness told to stop: `quit` is not
    answered within Timeouts.qmp_s, so QEMU is killed, and the results are kept."""
    image = _spin_image(tmp_path)
    results = tmp_path / "results"
    stopped: list[int] = []
    h = Harness("boot-test", "--results", str(results), "--kernel", str(image),
                "--test", "oneshot_wfi")  # fmt: skip
    try:
        with h:
            _sigstop_qemu(str(image), "running", stopped)
            assert stopped, "QEMU was not seen running"
            start = time.monotonic()
            h.send(signal.SIGTERM)
            rest = h.finish(timeout=60)
            took = time.monotonic() - start
    finally:
        left = _kill_left(str(image))
    assert h.proc.returncode == 143, rest
    assert left == [], "a stopped QEMU outlived the harness"
    assert took < 10 + 8, f"{took:.1f} s"  # quit not answered (qmp_s), then the kill
    (run_dir,) = results.iterdir()
    data = json.loads((run_dir / "results.json").read_text())
    assert data["complete"] is False and data["boot"]["status"] == "interrupted"
    assert [t["status"] for t in data["tests"]] == ["MISS"]
    assert "Traceback" not in rest and "Task" not in rest, rest


MATRIX = """\
# two cells booting at once, each long enough to be running when the signal comes
name: signals
description: interrupted by a signal while both cells run
defaults:
  tests: [oneshot_wfi, hang_forever, rearm_n, mmio_spin, two_vcpus, save_restore]
cells:
  - revision: upstream
    policy: [every-exit, eintr-only]
"""


def _wait_until(what: str, ok, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_ends_every_running_cell_of_a_matrix(tmp_path, signum):
    name = signal.Signals(signum).name
    (tmp_path / "signals.yaml").write_text(MATRIX)
    results = tmp_path / "results"
    h = Harness("matrix", str(tmp_path / "signals.yaml"), "--results", str(results),
                "--slots", "2")  # fmt: skip
    try:
        with h:

            def both_booting() -> bool:
                logs = list(results.glob("*-matrix-signals-*/*/output.log"))
                return len(logs) == 2 and all("# qemu: " in p.read_text() for p in logs)

            _wait_until("both cells boot", both_booting)
            h.send(signum)
            rest = h.finish()
    finally:
        left = _kill_left(str(results))
    out = "".join(h.seen) + rest
    assert h.proc.returncode == 128 + signum, out
    assert left == [], f"QEMU still running after {name}"
    (mdir,) = results.iterdir()
    data = json.loads((mdir / "matrix.json").read_text())
    assert data["complete"] is False and data["ok"] is False and data["interrupted"] == name
    assert len(data["cells"]) == 2
    for cell in data["cells"]:
        assert cell["outcome"] == "interrupted", cell
        assert cell["reason"] == f"interrupted ({name})"
        run = json.loads((mdir / cell["run_dir"] / "results.json").read_text())
        assert run["complete"] is False and run["boot"]["status"] == "interrupted"
        reasons = [why for t in run["tests"] for why in t["reasons"]]
        assert any(f"interrupted ({name})" in why for why in reasons), run["tests"]
        assert (mdir / cell["run_dir"] / "junit.xml").is_file()
    assert f"# matrix signals: interrupted ({name}); 0 of 2 cells finished" in out


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
