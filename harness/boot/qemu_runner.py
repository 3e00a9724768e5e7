"""Run QEMU: QMP on a private unix socket, the serial console through pexpect.

QEMUMachine-style: a context manager that starts QEMU stopped (-S), switches
trace events on over QMP, lets it run, and always ends it (a soft QMP quit,
then a hard kill). Every wait is bounded; a kernel panic is seen on the
console line that reports it, not by time-out.

Every QMP exchange (connect, each command, disconnect) has a deadline: a
wedged QEMU (stopped, say, so that QMP never answers) ends as QmpTimeout,
naming the command, and is killed. A QMP error reply is a QmpError naming
the command and QEMU's message. follow() looks at signals.check() every
signals.POLL_S, so a signal reaches a boot in any thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pexpect
from qemu.qmp import ExecuteError, QMPClient, QMPError

from harness.core import signals
from harness.core.errors import HarnessError, InputError
from harness.inputs.machine import MachineConfig, shell_line
from harness.inputs.options import Timeouts

PANIC = re.compile(r"Kernel panic - not syncing|Internal error: Oops|BUG: ")
POWER_OFF = "reboot: Power down"
INIT_STARTED = re.compile(r"Run /init as init process|@VT1 \d+ - \d+ boot ")


_T = TypeVar("_T")
# qemu.qmp logs the failures it raises (a cancelled negotiation, a lost connection);
# the harness reports them itself, as a boot status
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QmpTimeout(HarnessError):
    """QMP did not answer in time: QEMU is wedged (the boot is a hang)."""


class QmpError(HarnessError):
    """QEMU answered a QMP command with an error, or the QMP connection broke."""


class QmpChannel:
    """qemu.qmp's QMPClient driven synchronously on a private event loop; every call
    has a deadline (the legacy QEMUMonitorProtocol can wait forever to connect or close)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient()

    def _run(self, aw: Awaitable[_T], timeout_s: float) -> _T:
        return self._loop.run_until_complete(asyncio.wait_for(aw, timeout_s))

    def connect(self, sock: Path, timeout_s: float) -> None:
        self._run(self._client.connect(str(sock)), timeout_s)

    def execute(self, command: str, args: dict[str, object], timeout_s: float) -> Any:
        return self._run(self._client.execute(command, args or None), timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        """Disconnect (bounded; its errors do not matter any more) and free the loop."""
        try:
            self._run(self._client.disconnect(), timeout_s)
        except (QMPError, OSError, EOFError, TimeoutError):
            pass
        finally:
            self._cancel_tasks(timeout_s)
            self._loop.close()

    def _cancel_tasks(self, timeout_s: float) -> None:
        """End what a command cut short by a signal's exception left in the loop, and
        read their errors, so that asyncio does not log them when they are collected."""
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        if tasks:
            self._loop.run_until_complete(asyncio.wait(tasks, timeout=timeout_s))
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()


# the QEMUs running now (any thread), so that none outlives the harness (end_all)
_live: set[QemuRun] = set()
_live_lock = threading.Lock()


def end_all() -> int:
    """Kill every QEMU still running (a last resort at exit). Returns how many."""
    with _live_lock:
        runs = list(_live)
    for run in runs:
        run.kill()
    return len(runs)


# the trace events layer 0 needs besides arm_gt_* on smp > 1, by GIC version: the
# GIC's PPI input names the CPU of a timer that fired by itself (harness/traces/qemu_trace.py)
TRACE_EVENTS_SMP = {2: ("gic_set_irq",), 3: ("gicv3_redist_set_irq",)}


@dataclass
class BootResult:
    """How the boot ended: completed, panic, hang, qemu-died or interrupted."""

    status: str
    reason: str
    console_log: Path
    qemu_stderr: Path
    trace_log: Path | None
    wall_s: float
    qemu_exit: int | None = None
    qemu_version: str = ""
    traces_enabled: list[str] = field(default_factory=list)
    diagnostics: Path | None = None
    init_s: float | None = None  # QEMU start (cont) to the first line of /init


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
    ) -> None:
        self.machine = machine
        self.kernel = kernel
        self.initrd = initrd
        self.run_dir = run_dir
        self.trace_events = trace_events
        self.timeouts = timeouts or Timeouts()
        self.console_log = run_dir / "console.log"
        self.qemu_stderr = run_dir / "qemu.stderr"
        self.trace_log = run_dir / "qemu-trace.log" if trace_events else None
        self._sockdir: str | None = None
        self._child: pexpect.spawn | None = None
        self._qmp: QmpChannel | None = None
        self.qmp_wedged: str | None = None  # why QMP is not asked any more
        self._logf = None
        self.argv: list[str] = []
        self.cpu_threads: dict[int, int] = {}  # vCPU thread id -> CPU index (QMP)
        self.init_s: float | None = None
        self._pending = ""  # a console line not yet complete

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> QemuRun:
        try:
            return self._start_process()
        except BaseException:
            self.stop()
            raise

    def _start_process(self) -> QemuRun:
        # AF_UNIX paths are limited to 108 bytes: keep the socket in a short private dir.
        self._sockdir = tempfile.mkdtemp(prefix="vt-")
        sock = Path(self._sockdir) / "qmp.sock"
        self.argv = self.machine.qemu_argv(self.kernel, self.initrd, sock, self.trace_log)
        by_hand = self.machine.qemu_argv(self.kernel, self.initrd, None)
        (self.run_dir / "qemu-cmdline.sh").write_text(
            "#!/bin/sh\n# the same machine, to rerun by hand (no QMP, no trace)\n"
            + shell_line(by_hand)
            + "\n"
        )
        self._logf = open(self.console_log, "w", encoding="utf-8", errors="replace")
        self._child = pexpect.spawn(
            "/bin/sh",
            ["-c", 'exec "$@" 2>"$0"', str(self.qemu_stderr), *self.argv],
            encoding="utf-8",
            codec_errors="replace",
            echo=False,
            timeout=None,
        )
        with _live_lock:
            _live.add(self)
        self._child.logfile_read = self._logf
        self._child.delayafterread = None  # pexpect's default sleeps 0.1 ms after every read
        self._child.delayafterclose = 0.0
        self._child.delayafterterminate = 0.0
        self._qmp = self._connect_qmp(sock)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _connect_qmp(self, sock: Path) -> QmpChannel:
        """Connect to QEMU's QMP socket. QEMU creates the socket file a moment before it
        listens on it, so a refused connection is retried until the deadline; a QEMU
        that accepts but never greets times out (QmpTimeout)."""
        limit = self.timeouts.qmp_connect_s
        deadline = time.monotonic() + limit
        while True:
            if not self._child.isalive():
                raise HarnessError(self.qemu_stderr, "QEMU exited before its QMP socket appeared")
            if sock.exists():
                qmp = QmpChannel()
                try:
                    qmp.connect(sock, max(0.1, deadline - time.monotonic()))
                    return qmp
                except TimeoutError:
                    qmp.close()
                    self.qmp_wedged = f"QMP did not answer the connection within {limit:g} s"
                    raise QmpTimeout(sock, self.qmp_wedged) from None
                except (QMPError, OSError) as e:  # ConnectError: not listening yet
                    qmp.close()
                    if time.monotonic() > deadline:
                        raise HarnessError(sock, f"QMP connection failed: {e}") from None
            elif time.monotonic() > deadline:
                raise HarnessError(sock, "QMP socket did not appear")
            time.sleep(0.01)

    def qmp(self, command: str, **args: object) -> Any:
        """One QMP command, answered within timeouts.qmp_s or QmpTimeout (and QMP is not
        asked again); an error reply is QmpError."""
        if self.qmp_wedged:
            raise QmpTimeout(None, f"not sent: {self.qmp_wedged}")
        if self._qmp is None:
            raise HarnessError(None, "QMP is not connected")
        limit = self.timeouts.qmp_s
        try:
            return self._qmp.execute(command, args, limit)
        except TimeoutError:
            self.qmp_wedged = f"QMP did not answer '{command}' within {limit:g} s"
            raise QmpTimeout(None, self.qmp_wedged) from None
        except ExecuteError as e:
            raise QmpError(None, f"QMP '{command}' failed: {e}") from None
        except (QMPError, OSError, EOFError) as e:  # the connection broke (QEMU died)
            raise QmpError(None, f"QMP '{command}': {type(e).__name__}: {e}") from None

    @property
    def exit_status(self) -> int | None:
        """QEMU's exit status, or -signal if a signal ended it; None while it runs."""
        child = self._child
        if child is None or child.isalive():
            return None
        if child.signalstatus is not None:
            return -child.signalstatus
        return child.exitstatus

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.qemu_stderr.read_text(errors="replace").strip()
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """End QEMU: soft QMP quit, then SIGKILL (a wedged QEMU at once). Returns its exit
        status. A signal that arrives meanwhile is raised once QEMU has ended."""
        with signals.deferred():
            return self._stop()

    def _stop(self) -> int | None:
        child = self._child
        alive = child is not None and not child.closed and child.isalive()
        if alive and self._qmp is not None and not self.qmp_wedged and self._quit():
            deadline = time.monotonic() + self.timeouts.shutdown_s
            while child.isalive() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.kill()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._logf is not None:
            self._logf.close()
            self._logf = None
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None
        return None if child is None else child.exitstatus

    def _quit(self) -> bool:
        """QMP quit; whether QEMU may be ending by itself now (not if QMP is wedged)."""
        try:
            self.qmp("quit")
        except QmpTimeout:
            return False
        except QmpError:
            pass  # the connection broke: QEMU is ending, or has ended
        return True

    def kill(self) -> None:
        """SIGKILL QEMU (a stopped one too) if it runs, and reap it (bounded)."""
        child = self._child
        if child is not None and not child.closed:
            if child.isalive():
                child.kill(signal.SIGKILL)
            try:
                child.expect(pexpect.EOF, timeout=2)
            except (pexpect.TIMEOUT, pexpect.EOF, OSError):
                pass
            child.close(force=True)
        with _live_lock:
            _live.discard(self)

    # -- running -----------------------------------------------------------
    def start(self) -> tuple[str, list[str]]:
        """Switch the trace events on, then let the machine run. Returns (version, events)."""
        v = self.qmp("query-version")
        version = "{major}.{minor}.{micro}".format(**v["qemu"])
        if v.get("package"):
            version += f" ({v['package'].strip()})"
        enabled: list[str] = []
        for pattern in self.trace_events:
            try:
                self.qmp("trace-event-set-state", name=pattern, enable=True)
            except QmpError as e:  # e.g. unknown event "no_such_event": the user's input
                raise InputError(None, f"trace event pattern '{pattern}': {e}") from None
            for ev in self.qmp("trace-event-get-state", name=pattern):
                if ev["state"] == "enabled":
                    enabled.append(ev["name"])
        self.cpu_threads = {
            int(c["thread-id"]): int(c["cpu-index"]) for c in self.qmp("query-cpus-fast")
        }
        self.qmp("cont")
        return version, enabled

    def save_diagnostics(self) -> Path:
        """On a hang: QMP query-status and the CPU registers, saved next to the log.
        A QMP that does not answer is said so (which command, how long), not waited for."""
        path = self.run_dir / "hang-diagnostics.txt"
        parts = []
        for title, command, args in (
            ("query-status", "query-status", {}),
            ("info registers", "human-monitor-command", {"command-line": "info registers"}),
        ):
            try:
                parts.append(f"== {title}\n{self.qmp(command, **args)}\n")
            except HarnessError as e:
                parts.append(f"== {title}\nfailed: {e}\n")
        path.write_text("".join(parts))
        return path

    def _lines(self, timeout: float) -> list[str] | None:
        """The complete console lines that arrive within timeout ([] if none; None at EOF).

        Reads in large chunks: a console read slowly backs QEMU's serial up and
        slows the guest itself down.
        """
        try:
            chunk = self._child.read_nonblocking(1 << 16, timeout=timeout)
        except pexpect.TIMEOUT:
            return []
        except pexpect.EOF:
            return None
        text = self._pending + chunk
        lines = text.split("\n")
        self._pending = lines.pop()
        return [line.rstrip("\r") for line in lines]

    def follow(
        self,
        on_line: Callable[[str], None],
        done: Callable[[], bool],
        doing: Callable[[], str] = lambda: "",
    ) -> tuple[str, str]:
        """Read the console line by line until the suite is done, a panic, EOF or a time-out.

        Returns (status, reason) with status in completed, panic, hang, qemu-died; a
        hang's reason ends with what doing() says the suite was doing then.
        """
        t = self.timeouts
        started = time.monotonic()
        deadline = started + t.boot_s
        quiet_since = started
        init_seen = False
        while True:
            now = time.monotonic()
            phase = "suite" if init_seen else "boot (before /init)"
            at = f": {doing()}" if init_seen and doing() else ""
            if now > deadline:
                bound = t.suite_s if init_seen else t.boot_s
                return "hang", f"{phase} did not finish within {bound:g} s{at}"
            if now - quiet_since >= t.silence_s:
                return "hang", f"{phase}: no console output for {t.silence_s:.0f} s{at}"
            signals.check()  # a signal to stop: raised in this thread too
            wait = min(deadline - now, t.silence_s - (now - quiet_since), signals.POLL_S)
            lines = self._lines(max(0.0, wait))
            if lines is None:
                if self._pending:
                    on_line(self._pending)
                    self._pending = ""
                return "qemu-died", "QEMU exited before the suite finished"
            if lines:
                quiet_since = time.monotonic()
            for line in lines:
                if not init_seen and INIT_STARTED.search(line):
                    init_seen = True
                    self.init_s = time.monotonic() - started
                    deadline = time.monotonic() + (t.suite_s or 300.0)
                if PANIC.search(line):
                    self._drain(2.0, on_line)
                    return "panic", line.strip()
                on_line(line)
                if done():
                    return "completed", "suite finished"

    def _drain(self, seconds: float, on_line: Callable[[str], None]) -> None:
        """Keep reading for a moment (a panic's backtrace) so the log has it."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            lines = self._lines(max(0.05, end - time.monotonic()))
            if lines is None:
                return
            for line in lines:
                on_line(line)

    def wait_exit(self) -> int | None:
        """After the suite: let the guest power off by itself (bounded)."""
        try:
            self._child.expect(pexpect.EOF, timeout=self.timeouts.shutdown_s)
        except pexpect.TIMEOUT:
            return None
        self._child.close()
        return self._child.exitstatus
