"""Following a boot's serial console (pexpect) and its records port line by
line, to a classified end: the suite done, a kernel panic (seen on the line
that reports it, not by time-out), QEMU gone (EOF), or a hang (a deadline, or
silence on both). It notes when /init started, and looks at signals.check()
every signals.POLL_S, so a signal reaches a boot in any thread.
"""

from __future__ import annotations

import re
import select
import time
from collections.abc import Callable

import pexpect

from harness.boot.channels import POLL_S, RecordsFile
from harness.core import signals
from harness.core.status import BootStatus
from harness.inputs.options import Timeouts

PANIC = re.compile(r"Kernel panic - not syncing|Internal error: Oops|BUG: ")
POWER_OFF = "reboot: Power down"
INIT_STARTED = re.compile(r"Run /init as init process|@VT1 \d+ - \d+ boot ")
Line = Callable[[str], None]


class ConsoleFollower:
    """The console of one running QEMU (its pexpect child), read in large chunks,
    and its records port (a file), read beside it every POLL_S."""

    def __init__(
        self,
        child: pexpect.spawn,
        timeouts: Timeouts,
        records: RecordsFile | None = None,
        since: float | None = None,
    ) -> None:
        self._child = child
        self._records = records
        self.timeouts = timeouts
        # when the machine started (time.monotonic(); default: follow()'s start): the
        # boot's deadline and init_s count from it
        self.since = since
        self.init_s: float | None = None  # the machine's start to the first line of /init
        self._pending = ""  # a console line not yet complete

    def _lines(self, timeout: float) -> tuple[list[str], list[str] | None]:
        """The complete records-port and console lines that arrive within timeout
        (([], []) if none); the console's are None at its EOF (QEMU gone).

        Reads in large chunks: a console read slowly backs QEMU's serial up and
        slows the guest itself down.
        """
        fd = self._child.child_fd
        if self._records is not None:
            timeout = min(timeout, POLL_S)
        try:
            ready = select.select([fd], [], [], timeout)[0]
        except InterruptedError:
            ready = []
        recs = self._records.lines() if self._records is not None else []
        if fd not in ready and not self._child.buffer:
            return recs, []
        try:
            chunk = self._child.read_nonblocking(1 << 16, timeout=0)
        except pexpect.TIMEOUT:
            return recs, []
        except pexpect.EOF:
            return recs, None
        text = self._pending + chunk
        lines = text.split("\n")
        self._pending = lines.pop()
        return recs, [line.rstrip("\r") for line in lines]

    def _last_records(self, on_record: Line, recs: list[str]) -> None:
        """QEMU is gone: recs (read with its end), then what its records port wrote last."""
        for line in recs:
            on_record(line)
        if self._records is None:
            return
        for line in self._records.lines():
            on_record(line)
        if rest := self._records.rest():
            on_record(rest)

    def follow(
        self,
        on_line: Line,
        done: Callable[[], bool],
        doing: Callable[[], str] = lambda: "",
        on_record: Line | None = None,
    ) -> tuple[BootStatus, str]:
        """Read the console (to on_line) and the records port (to on_record) line by
        line until the suite is done, a panic, EOF or a time-out.

        Returns (status, reason) with status in completed, panic, hang, qemu-died; a
        hang's reason ends with what doing() says the suite was doing then.
        """
        on_record = on_record or on_line
        t = self.timeouts
        started = time.monotonic() if self.since is None else self.since
        deadline = started + t.boot_s
        quiet_since = started
        init_seen = False
        while True:
            now = time.monotonic()
            if now > deadline or now - quiet_since >= t.silence_s:  # a hang
                phase = "suite" if init_seen else "boot (before /init)"
                at = f": {doing()}" if init_seen and doing() else ""
                if now > deadline:
                    bound = t.suite_s if init_seen else t.boot_s
                    return BootStatus.HANG, f"{phase} did not finish within {bound:g} s{at}"
                quiet = f"no console or records output for {t.silence_s:.0f} s"
                return BootStatus.HANG, f"{phase}: {quiet}{at}"
            signals.check()  # a signal to stop: raised in this thread too
            wait = min(deadline - now, t.silence_s - (now - quiet_since), signals.POLL_S)
            recs, lines = self._lines(max(0.0, wait))
            if lines is None:
                self._last_records(on_record, recs)
                if self._pending:
                    on_line(self._pending)
                    self._pending = ""
                if done():  # the suite's last record came with QEMU's end
                    return BootStatus.COMPLETED, "suite finished"
                return BootStatus.QEMU_DIED, "QEMU exited before the suite finished"
            if recs or lines:
                quiet_since = time.monotonic()
            for source, line in [*((on_record, r) for r in recs), *((on_line, c) for c in lines)]:
                if not init_seen and INIT_STARTED.search(line):
                    init_seen = True
                    self.init_s = time.monotonic() - started
                    deadline = time.monotonic() + (t.suite_s or 300.0)
                if source is on_line and PANIC.search(line):
                    self._drain(2.0, on_line, on_record)
                    return BootStatus.PANIC, line.strip()
                source(line)
            if done():  # after the whole round: console lines that came with it too
                return BootStatus.COMPLETED, "suite finished"

    def _drain(self, seconds: float, on_line: Line, on_record: Line) -> None:
        """Keep reading for a moment (a panic's backtrace) so the log has it."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            recs, lines = self._lines(max(0.05, end - time.monotonic()))
            if lines is None:
                self._last_records(on_record, recs)
                return
            for line in recs:
                on_record(line)
            for line in lines:
                on_line(line)
