"""The QEMU process of a boot: its argv, started under pexpect, its exit status and
stderr, ended with SIGKILL and reaped; end_all kills every one still running.

pexpect runs QEMU on a pty of its own, in a session of its own (so a Ctrl-C at
the terminal reaches the harness, which ends QEMU itself); QEMU's stderr goes
to a file, its console to console.log as it is read, the records port and the
trace log to the run's records.log and qemu-trace.log, followed as they grow
(boot/channels.py).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import pexpect

from harness.boot.channels import TRACE_MAX, RecordsFile, TraceFile
from harness.inputs.machine import MachineConfig, shell_line

# the QEMUs running now (any thread), so that none outlives the harness (end_all)
_live: set[QemuProcess] = set()
_live_lock = threading.Lock()


def end_all() -> int:
    """Kill every QEMU still running (a last resort at exit). Returns how many."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.kill()
    return len(procs)


class QemuProcess:
    """One qemu-system-aarch64 process, from its argv to its reaping."""

    def __init__(
        self,
        machine: MachineConfig,
        run_dir: Path,
        trace_log: Path | None,
        trace_events: tuple[str, ...] = (),
    ) -> None:
        self.machine = machine
        self.run_dir = run_dir
        self.trace_log = trace_log
        self.trace_events = trace_events
        self.console_log = run_dir / "console.log"
        self.records_log = run_dir / "records.log"
        self.qemu_stderr = run_dir / "qemu.stderr"
        self.records: RecordsFile | None = None
        self.trace: TraceFile | None = None  # QEMU's trace log (trace_log), followed
        self.argv: list[str] = []
        self.started_at: float | None = None
        self.child: pexpect.spawn | None = None
        self._sockdir: str | None = None
        self._logf: IO[str] | None = None

    def start(self, kernel: Path, initrd: Path) -> Path:
        """Write qemu-cmdline.sh and start QEMU (its console logged). Returns the path of
        its QMP socket (which QEMU creates a moment later)."""
        # AF_UNIX paths are limited to 108 bytes: keep the socket in a short private dir.
        self._sockdir = tempfile.mkdtemp(prefix="vt-")
        sock = Path(self._sockdir) / "qmp.sock"
        self.records = RecordsFile(self.records_log)
        self.records.open()
        trace_at = None
        if self.trace_log is not None:
            self.trace = TraceFile(self.trace_log, TRACE_MAX)
            self.trace.open()
            trace_at = self._link("trace", self.trace_log)
        self.argv = self.machine.qemu_argv(
            kernel, initrd, sock, trace_at, self.records_log, self.trace_events
        )
        by_hand = self.machine.qemu_argv(kernel, initrd, None)
        (self.run_dir / "qemu-cmdline.sh").write_text(
            "#!/bin/sh\n# the same machine, to rerun by hand (no QMP, no trace;"
            " the records port writes records.log here)\n" + shell_line(by_hand) + "\n"
        )
        self._logf = open(self.console_log, "w", encoding="utf-8", errors="replace")
        self.started_at = time.monotonic()  # the machine runs from its start (no -S)
        self.child = pexpect.spawn(
            "/bin/sh",
            ["-c", 'exec "$@" 2>"$0"', str(self.qemu_stderr), *self.argv],
            encoding="utf-8",
            codec_errors="replace",
            echo=False,
            timeout=None,
        )
        with _live_lock:
            _live.add(self)
        self.child.logfile_read = self._logf
        self.child.delayafterread = None  # pexpect's default sleeps 0.1 ms after every read
        self.child.delayafterclose = 0.0
        self.child.delayafterterminate = 0.0
        # close() is ptyprocess's, which sleeps its own 0.1 s before it looks at QEMU
        self.child.ptyproc.delayafterclose = 0.0
        self.child.ptyproc.delayafterterminate = 0.0
        return sock

    def _link(self, name: str, target: Path) -> Path:
        """A name in the private directory for a run file QEMU writes: -D takes a '%'
        in its path for a format (%d: QEMU's pid), and a run directory may hold one."""
        link = Path(self._sockdir) / name
        link.symlink_to(target.resolve())
        return link

    def alive(self) -> bool:
        child = self.child
        return child is not None and not child.closed and child.isalive()

    def wait_gone(self, seconds: float) -> None:
        """Wait (bounded) for QEMU to end by itself."""
        deadline = time.monotonic() + seconds
        while self.child.isalive() and time.monotonic() < deadline:
            time.sleep(0.02)

    @property
    def exit_status(self) -> int | None:
        """QEMU's exit status, or -signal if a signal ended it; None while it runs."""
        child = self.child
        if child is None or child.isalive():
            return None
        if child.signalstatus is not None:
            return -child.signalstatus
        return child.exitstatus

    @property
    def exitstatus(self) -> int | None:
        """pexpect's exitstatus (None when a signal ended QEMU, or it never started)."""
        return None if self.child is None else self.child.exitstatus

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.qemu_stderr.read_text(errors="replace").strip()
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL QEMU (a stopped one too) if it runs, and reap it (bounded)."""
        child = self.child
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

    def release(self) -> None:
        """Close the console log and remove the socket's directory (QEMU has ended)."""
        if self._logf is not None:
            self._logf.close()
            self._logf = None
        if self.records is not None:
            self.records.close()
        if self.trace is not None:
            self.trace.close()
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def wait_exit(self, seconds: float) -> int | None:
        """After the suite: let the guest power off by itself (bounded)."""
        try:
            self.child.expect(pexpect.EOF, timeout=seconds)
        except pexpect.TIMEOUT:
            return None
        self.child.close()
        return self.child.exitstatus
