"""The named pipes QEMU writes into: the records port's and the trace log's.

The VMM writes its records to a virtio-serial port (vmm/record.c), which QEMU
hands on in whole buffers, not byte by byte as the serial console does. The
harness holds the pipe open read-write, so it never sees an end of file
while QEMU starts or after it ends, and reads it without blocking beside the
console. The pipe's buffer is enlarged so that a harness busy judging a test
does not hold the guest up; what is read is copied to records.log.

QEMU's trace log goes through a pipe too (TraceTap): a thread copies it to
qemu-trace.log, bounded, and wakes layer 0 when lines arrive.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import select
import threading
from pathlib import Path
from typing import IO

# as large as an unprivileged pipe may be (/proc/sys/fs/pipe-max-size's default)
PIPE_BYTES = 1 << 20
# the most one call takes: the console gets its turn between
_READ_MAX = 4 << 20
# how much of QEMU's trace a run keeps on disk (a storm's millions of events stop there)
TRACE_COPY_MAX = 512 << 20


def open_pipe(path: Path) -> int:
    """A named pipe made at path, held open read-write (no end of file while its
    writer comes and goes), not blocking, its buffer enlarged."""
    os.mkfifo(path, 0o600)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # a smaller buffer only makes a slow harness slow the guest down
    return fd


class RecordsPipe:
    """The named pipe at path (created here), copied to copy as it is read."""

    def __init__(self, path: Path, copy: Path) -> None:
        self.path = path
        self.copy = copy
        self.fd = -1
        self.bytes = 0  # read so far
        self._log: IO[str] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def open(self) -> None:
        self.fd = open_pipe(self.path)
        self._log = open(self.copy, "w", encoding="utf-8")

    def fileno(self) -> int:
        return self.fd

    def lines(self) -> list[str]:
        """The complete lines that have arrived (none if nothing has)."""
        text, taken = [], 0
        while self.fd >= 0 and taken < _READ_MAX:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            taken += len(chunk)
            text.append(self._decoder.decode(chunk))
        if not taken:
            return []
        self.bytes += taken
        data = "".join(text)
        if self._log is not None:
            self._log.write(data)
        parts = (self._pending + data).split("\n")
        self._pending = parts.pop()
        return parts

    def rest(self) -> str:
        """A last line the VMM did not end (QEMU is gone): '' if none."""
        rest, self._pending = self._pending, ""
        return rest

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TraceTap:
    """QEMU's trace log (-D) through a named pipe: a thread drains it into the copy
    on disk (qemu-trace.log, which layer 0 reads) and wakes whoever waits for more,
    so no one polls. The copy stops at max_bytes (the rest is counted, not kept):
    a storming kernel's trace cannot fill the disk."""

    def __init__(self, path: Path, copy: Path, max_bytes: int) -> None:
        self.path = path
        self.copy = copy
        self.max_bytes = max_bytes
        self.fd = -1
        self.kept = 0  # bytes in the copy
        self.dropped = 0  # bytes past max_bytes
        self._closed = False
        self._more = threading.Condition()
        self._stop_r, self._stop_w = -1, -1
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self.fd = open_pipe(self.path)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        out = open(self.copy, "wb")
        self._thread = threading.Thread(target=self._drain, args=(out,), daemon=True)
        self._thread.name = "trace-tap"
        self._thread.start()

    def _drain(self, out: IO[bytes]) -> None:
        try:
            while True:
                ready = select.select([self.fd, self._stop_r], [], [])[0]
                got = self._read_all(out)
                if self._stop_r in ready and not got:
                    return
        finally:
            out.close()
            with self._more:
                self._closed = True
                self._more.notify_all()

    def _read_all(self, out: IO[bytes]) -> int:
        """Whatever the pipe holds now, to the copy; how many bytes."""
        got, kept = 0, self.kept
        while True:
            try:
                chunk = os.read(self.fd, PIPE_BYTES)
            except BlockingIOError:
                break
            if not chunk:
                break
            got += len(chunk)
            keep = chunk[: max(0, self.max_bytes - kept)]
            out.write(keep)
            kept += len(keep)
            self.dropped += len(chunk) - len(keep)
        if got:
            out.flush()
            with self._more:
                self.kept = kept
                self._more.notify_all()
        return got

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait (up to timeout) for the copy to grow past seen bytes; False if it
        did not (the time ran out, or QEMU's trace has ended)."""
        with self._more:
            return self._more.wait_for(lambda: self.kept > seen or self._closed, timeout) and (
                self.kept > seen
            )

    def close(self) -> None:
        """QEMU has ended: what the pipe still holds goes to the copy, then the thread ends."""
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=30)
            self._thread = None
        for fd in (self.fd, self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self.fd = self._stop_r = self._stop_w = -1
