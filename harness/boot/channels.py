"""The files QEMU writes beside the console: the records port's and its trace log.

The VMM writes its records to a virtio-serial port (vmm/record.c), which QEMU
writes in whole buffers straight into the run's records.log; QEMU's trace log
(-D) is the run's qemu-trace.log. The harness follows both as they grow:
RecordsFile gives the records' new lines beside the console (boot/console.py
looks every POLL_S), TraceFile looks at the trace's size in a thread, wakes
layer 0 when it grew, and keeps it bounded.

Files, not pipes: QEMU writes both from its vCPU thread, a write at a time
(the trace: every event), and a pipe's reader woke at each one. On this
project's machine that made a boot 5-8 % slower than the same boot writing
files (bench/README.md, session 7). A file's writer wakes no one; following it
costs one read or stat every POLL_S, and a record reaches the judge at most
POLL_S late.
"""

from __future__ import annotations

import codecs
import os
import threading
from pathlib import Path

# how often the records file and the trace log are looked at while QEMU runs
POLL_S = 0.01
# the most one look reads of the records: the console gets its turn between
_READ_MAX = 4 << 20
# how much of QEMU's trace a run keeps on disk (a storm's millions of events stop there)
TRACE_MAX = 512 << 20


class RecordsFile:
    """The records port's file at path (made empty here), read as QEMU writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def open(self) -> None:
        self.path.write_bytes(b"")  # QEMU's file chardev truncates it again: no matter
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def lines(self) -> list[str]:
        """The complete lines written since the last call (none if nothing was)."""
        text, taken = [], 0
        while self.fd >= 0 and taken < _READ_MAX:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                break
            taken += len(chunk)
            text.append(self._decoder.decode(chunk))
        if not taken:
            return []
        parts = (self._pending + "".join(text)).split("\n")
        self._pending = parts.pop()
        return parts

    def rest(self) -> str:
        """A last line the VMM did not end (QEMU is gone): '' if none."""
        rest, self._pending = self._pending + self._decoder.decode(b"", final=True), ""
        return rest

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TraceFile:
    """QEMU's trace log (-D) as QEMU writes it: a thread looks at its size every
    POLL_S and wakes whoever waits for more (layer 0), so no reader spins. The log
    is kept to max_bytes: what QEMU writes past it is cut off again at each look
    (and counted, not kept), so a storming kernel's trace cannot fill the disk."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.kept = 0  # bytes of the log that count (at most max_bytes)
        self.dropped = 0  # bytes QEMU wrote past max_bytes
        self._closed = False
        self._more = threading.Condition()
        self._looking = threading.Lock()  # the thread's looks and a reader's, one at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self.path.write_bytes(b"")  # there before QEMU opens it, so layer 0 can open it
        self._thread = threading.Thread(target=self._watch, daemon=True, name="trace-file")
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self.look()

    def look(self) -> int:
        """The log's size now (to its bound), not as the thread last saw it: a
        reader that judges a record looks first, because QEMU wrote the trace of
        what the record reports before the record (layer 0 is never behind it)."""
        with self._looking:
            self._look()
        return self.kept

    def _look(self) -> None:
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return
        if size > self.max_bytes:
            # QEMU writes on at its own offset: the size is all it wrote, the cut
            # leaves a hole that takes no disk
            self.dropped = max(self.dropped, size - self.max_bytes)
            try:
                os.truncate(self.path, self.max_bytes)
            except OSError:
                pass
        kept = min(size, self.max_bytes)
        if kept > self.kept:
            with self._more:
                self.kept = kept
                self._more.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait (up to timeout) for the log to grow past seen bytes; False if it
        did not (the time ran out, or QEMU's trace has ended)."""
        with self._more:
            return self._more.wait_for(lambda: self.kept > seen or self._closed, timeout) and (
                self.kept > seen
            )

    def close(self) -> None:
        """QEMU has ended: the log's last size is looked at, and no one waits any more."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None
        self.look()
        with self._more:
            self._closed = True
            self._more.notify_all()
