"""Following a boot's serial console (pexpect) line by line, to a classified end:
the suite done, a kernel panic (seen on the line that reports it, not by
time-out), QEMU gone (EOF), or a hang (a deadline, or silence). It notes when
/init started, and looks at signals.check() every signals.POLL_S, so a signal
reaches a boot in any thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pexpect

from harness.core import signals
from harness.core.status import BootStatus
from harness.inputs.options import Timeouts

PANIC = re.compile(r"Kernel panic - not syncing|Internal error: Oops|BUG: ")
POWER_OFF = "reboot: Power down"
INIT_STARTED = re.compile(r"Run /init as init process|@VT1 \d+ - \d+ boot ")


class ConsoleFollower:
    """The console of one running QEMU (its pexpect child), read in large chunks."""

    def __init__(self, child: pexpect.spawn, timeouts: Timeouts) -> None:
        self._child = child
        self.timeouts = timeouts
        self.init_s: float | None = None  # follow()'s start to the first line of /init
        self._pending = ""  # a console line not yet complete

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
    ) -> tuple[BootStatus, str]:
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
                return BootStatus.HANG, f"{phase} did not finish within {bound:g} s{at}"
            if now - quiet_since >= t.silence_s:
                return BootStatus.HANG, f"{phase}: no console output for {t.silence_s:.0f} s{at}"
            signals.check()  # a signal to stop: raised in this thread too
            wait = min(deadline - now, t.silence_s - (now - quiet_since), signals.POLL_S)
            lines = self._lines(max(0.0, wait))
            if lines is None:
                if self._pending:
                    on_line(self._pending)
                    self._pending = ""
                return BootStatus.QEMU_DIED, "QEMU exited before the suite finished"
            if lines:
                quiet_since = time.monotonic()
            for line in lines:
                if not init_seen and INIT_STARTED.search(line):
                    init_seen = True
                    self.init_s = time.monotonic() - started
                    deadline = time.monotonic() + (t.suite_s or 300.0)
                if PANIC.search(line):
                    self._drain(2.0, on_line)
                    return BootStatus.PANIC, line.strip()
                on_line(line)
                if done():
                    return BootStatus.COMPLETED, "suite finished"

    def _drain(self, seconds: float, on_line: Callable[[str], None]) -> None:
        """Keep reading for a moment (a panic's backtrace) so the log has it."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            lines = self._lines(max(0.05, end - time.monotonic()))
            if lines is None:
                return
            for line in lines:
                on_line(line)
