"""The records port's host side: a named pipe QEMU's chardev writes into.

The VMM writes its records to a virtio-serial port (vmm/record.c), which QEMU
hands on in whole buffers, not byte by byte as the serial console does. The
harness holds the pipe open read-write, so it never sees an end of file
while QEMU starts or after it ends, and reads it without blocking beside the
console. The pipe's buffer is enlarged so that a harness busy judging a test
does not hold the guest up; what is read is copied to records.log.
"""

from __future__ import annotations

import codecs
import fcntl
import os
from pathlib import Path
from typing import IO

# as large as an unprivileged pipe may be (/proc/sys/fs/pipe-max-size's default)
PIPE_BYTES = 1 << 20
# the most one call takes: the console gets its turn between
_READ_MAX = 4 << 20


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
        os.mkfifo(self.path, 0o600)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller buffer only makes a slow harness slow the guest down
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
