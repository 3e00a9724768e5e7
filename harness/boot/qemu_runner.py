"""Run QEMU: QMP on a private unix socket, the serial console through pexpect.

QEMUMachine-style: a context manager that starts QEMU running, its trace
events on from the command line (no -S: the guest does not wait for the QMP
handshake), asks QMP which events are on and which thread is which vCPU, and
always ends it (a soft QMP quit, then a hard kill). Every wait is bounded; a
kernel panic is seen on the console line that reports it, not by time-out.

QemuRun puts together the parts, one job each: the process (qemu_process:
argv, start, kill, exit status, stderr; end_all), QMP with deadlines (qmp: a
wedged QEMU ends as QmpTimeout and is killed), the console (console: panic,
hang, silence and EOF classified, /init's timing) and, on a hang, the
diagnostics QMP can still give (save_diagnostics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.boot.channels import TraceFile
from harness.boot.console import INIT_STARTED, PANIC, POWER_OFF, ConsoleFollower
from harness.boot.qemu_process import QemuProcess, end_all
from harness.boot.qmp import Qmp, QmpError, QmpTimeout
from harness.core import signals
from harness.core.errors import HarnessError, InputError
from harness.core.status import BootStatus
from harness.inputs.machine import MachineConfig
from harness.inputs.options import Timeouts

__all__ = [
    "INIT_STARTED",
    "PANIC",
    "POWER_OFF",
    "TRACE_EVENTS_SMP",
    "BootResult",
    "QemuRun",
    "QmpError",
    "QmpTimeout",
    "Timeouts",
    "end_all",
    "save_diagnostics",
]

# the trace events layer 0 needs besides arm_gt_* on smp > 1, by GIC version: the
# GIC's PPI input names the CPU of a timer that fired by itself (harness/traces/qemu_trace.py)
TRACE_EVENTS_SMP = {2: ("gic_set_irq",), 3: ("gicv3_redist_set_irq",)}


@dataclass
class BootResult:
    """How the boot ended: completed, panic, hang, qemu-died or interrupted."""

    status: BootStatus
    reason: str
    console_log: Path
    qemu_stderr: Path
    trace_log: Path | None
    wall_s: float
    qemu_exit: int | None = None
    qemu_version: str = ""
    traces_enabled: list[str] = field(default_factory=list)
    diagnostics: Path | None = None
    init_s: float | None = None  # QEMU start to the first line of /init
    # QEMU's trace: bytes in trace_log, and past its bound (boot/channels.py)
    trace_bytes: tuple[int, int] = (0, 0)


def save_diagnostics(qmp: Callable[..., Any], path: Path) -> Path:
    """On a hang: QMP query-status and the CPU registers, saved to path. A QMP that
    does not answer is said so (which command, how long), not waited for."""
    parts = []
    for title, command, args in (
        ("query-status", "query-status", {}),
        ("info registers", "human-monitor-command", {"command-line": "info registers"}),
    ):
        try:
            parts.append(f"== {title}\n{qmp(command, **args)}\n")
        except HarnessError as e:
            parts.append(f"== {title}\nfailed: {e}\n")
    path.write_text("".join(parts))
    return path


class QemuRun:
    """One QEMU process for one boot of the suite."""

    def __init__(
        self,
        machine: MachineConfig,
        kernel: Path,
        initrd: Path,
        run_dir: Path,
        trace_events: tuple[str, ...] = ("arm_gt_*",),
        timeouts: Timeouts | None = None,
        on_spawn: Callable[[], None] = lambda: None,  # QEMU has started, QMP is not connected
    ) -> None:
        self.machine = machine
        self.on_spawn = on_spawn
        self.kernel = kernel
        self.initrd = initrd
        self.run_dir = run_dir
        self.trace_events = trace_events
        self.timeouts = timeouts or Timeouts()
        self.trace_log = run_dir / "qemu-trace.log" if trace_events else None
        self._process = QemuProcess(machine, run_dir, self.trace_log, trace_events)
        self.console_log = self._process.console_log
        self.qemu_stderr = self._process.qemu_stderr
        self._qmp = Qmp(self.timeouts)
        self._console: ConsoleFollower | None = None
        self.cpu_threads: dict[int, int] = {}  # vCPU thread id -> CPU index (QMP)

    @property
    def argv(self) -> list[str]:
        return self._process.argv

    @property
    def trace_file(self) -> TraceFile | None:
        """QEMU's trace log as it is written (None without trace events)."""
        return self._process.trace

    @property
    def qmp_wedged(self) -> str | None:
        """Why QMP is not asked any more (None while it answers)."""
        return self._qmp.wedged

    @property
    def init_s(self) -> float | None:
        return None if self._console is None else self._console.init_s

    @property
    def exit_status(self) -> int | None:
        """QEMU's exit status, or -signal if a signal ended it; None while it runs."""
        return self._process.exit_status

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> QemuRun:
        try:
            sock = self._process.start(self.kernel, self.initrd)
            self.on_spawn()
            self._qmp.connect(sock, self._process.child.isalive, self.qemu_stderr)
            return self
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> int | None:
        """End QEMU: soft QMP quit, then SIGKILL (a wedged QEMU at once). Returns its exit
        status. A signal that arrives meanwhile is raised once QEMU has ended."""
        with signals.deferred():
            return self._stop()

    def _stop(self) -> int | None:
        proc, qmp = self._process, self._qmp
        if proc.alive() and qmp.connected and not qmp.wedged and qmp.quit():
            proc.wait_gone(self.timeouts.shutdown_s)
        proc.kill()
        qmp.close()
        proc.release()
        return proc.exitstatus

    def kill(self) -> None:
        """SIGKILL QEMU (a stopped one too) if it runs, and reap it (bounded)."""
        self._process.kill()

    def qmp(self, command: str, **args: object) -> Any:
        """One QMP command, answered within timeouts.qmp_s or QmpTimeout (and QMP is not
        asked again); an error reply is QmpError."""
        return self._qmp.command(command, args)

    def stderr_tail(self, lines: int = 5) -> str:
        return self._process.stderr_tail(lines)

    # -- running -----------------------------------------------------------
    def start(self) -> tuple[str, list[str]]:
        """What runs: QEMU's version and the trace events on (every pattern must match
        one); the vCPU threads. Returns (version, events)."""
        v = self.qmp("query-version")
        version = "{major}.{minor}.{micro}".format(**v["qemu"])
        if v.get("package"):
            version += f" ({v['package'].strip()})"
        enabled: list[str] = []
        for pattern in self.trace_events:
            enabled += self._enabled(pattern)
        self.cpu_threads = {
            int(c["thread-id"]): int(c["cpu-index"]) for c in self.qmp("query-cpus-fast")
        }
        return version, enabled

    def _enabled(self, pattern: str) -> list[str]:
        """The trace events pattern switched on (-trace enable=); none is the user's
        error (QEMU only warns of a name it does not know)."""
        try:
            states = self.qmp("trace-event-get-state", name=pattern)
        except QmpError as e:  # e.g. unknown event "no_such_event": the user's input
            raise InputError(None, f"trace event pattern '{pattern}': {e}") from None
        enabled = [ev["name"] for ev in states if ev["state"] == "enabled"]
        if not enabled:
            raise InputError(None, f"trace event pattern '{pattern}': matches no event")
        return enabled

    def follow(
        self,
        on_line: Callable[[str], None],
        done: Callable[[], bool],
        doing: Callable[[], str] = lambda: "",
        on_record: Callable[[str], None] | None = None,
    ) -> tuple[BootStatus, str]:
        """Read the console and the records port until the suite is done, a panic,
        EOF or a time-out (ConsoleFollower.follow): (status, reason)."""
        proc = self._process
        self._console = ConsoleFollower(proc.child, self.timeouts, proc.records, proc.started_at)
        return self._console.follow(on_line, done, doing, on_record)

    def save_diagnostics(self) -> Path:
        """On a hang: QMP query-status and the CPU registers, saved next to the log."""
        return save_diagnostics(self.qmp, self.run_dir / "hang-diagnostics.txt")

    def wait_exit(self) -> int | None:
        """After the suite: let the guest power off by itself (bounded)."""
        return self._process.wait_exit(self.timeouts.shutdown_s)
