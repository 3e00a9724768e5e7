"""QMP with deadlines: the one connection of a boot (connect, one command at a
time, the wedged state, quit) over qemu.qmp's client (harness/boot/qmp_channel.py,
imported at the first connection).

Every QMP exchange (connect, each command, disconnect) has a deadline: a
wedged QEMU (stopped, say, so that QMP never answers) ends as QmpTimeout,
naming the command, and QMP is not asked again. A QMP error reply is a
QmpError naming the command and QEMU's message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.errors import HarnessError
from harness.inputs.options import Timeouts

if TYPE_CHECKING:
    from harness.boot.qmp_channel import QmpChannel


class QmpTimeout(HarnessError):
    """QMP did not answer in time: QEMU is wedged (the boot is a hang)."""


class QmpError(HarnessError):
    """QEMU answered a QMP command with an error, or the QMP connection broke."""


class Qmp:
    """A boot's QMP connection: each exchange within its Timeouts; once one times
    out, wedged says why and nothing more is sent."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.wedged: str | None = None  # why QMP is not asked any more
        self._channel: QmpChannel | None = None

    @property
    def connected(self) -> bool:
        return self._channel is not None

    def connect(self, sock: Path, alive: Callable[[], bool], stderr: Path) -> None:
        """Connect to QEMU's QMP socket. QEMU creates the socket file a moment before it
        listens on it, so a refused connection is retried until the deadline; a QEMU
        that accepts but never greets times out (QmpTimeout). alive() says whether
        QEMU still runs (its stderr is named when it does not)."""
        from harness.boot.qmp_channel import QmpChannel, QMPError

        limit = self.timeouts.qmp_connect_s
        deadline = time.monotonic() + limit
        while True:
            if not alive():
                raise HarnessError(stderr, "QEMU exited before its QMP socket appeared")
            if sock.exists():
                channel = QmpChannel()
                try:
                    channel.connect(sock, max(0.1, deadline - time.monotonic()))
                    self._channel = channel
                    return
                except TimeoutError:
                    channel.close()
                    self.wedged = f"QMP did not answer the connection within {limit:g} s"
                    raise QmpTimeout(sock, self.wedged) from None
                except (QMPError, OSError) as e:  # ConnectError: not listening yet
                    channel.close()
                    if time.monotonic() > deadline:
                        raise HarnessError(sock, f"QMP connection failed: {e}") from None
            elif time.monotonic() > deadline:
                raise HarnessError(sock, "QMP socket did not appear")
            time.sleep(0.01)

    def command(self, command: str, args: dict[str, object]) -> Any:
        """One QMP command, answered within timeouts.qmp_s or QmpTimeout (and QMP is not
        asked again); an error reply is QmpError."""
        if self.wedged:
            raise QmpTimeout(None, f"not sent: {self.wedged}")
        if self._channel is None:
            raise HarnessError(None, "QMP is not connected")
        from harness.boot.qmp_channel import ExecuteError, QMPError

        limit = self.timeouts.qmp_s
        try:
            return self._channel.execute(command, args, limit)
        except TimeoutError:
            self.wedged = f"QMP did not answer '{command}' within {limit:g} s"
            raise QmpTimeout(None, self.wedged) from None
        except ExecuteError as e:
            raise QmpError(None, f"QMP '{command}' failed: {e}") from None
        except (QMPError, OSError, EOFError) as e:  # the connection broke (QEMU died)
            raise QmpError(None, f"QMP '{command}': {type(e).__name__}: {e}") from None

    def quit(self) -> bool:
        """QMP quit; whether QEMU may be ending by itself now (not if QMP is wedged)."""
        try:
            self.command("quit", {})
        except QmpTimeout:
            return False
        except QmpError:
            pass  # the connection broke: QEMU is ending, or has ended
        return True

    def close(self) -> None:
        """Disconnect (bounded); QMP is not connected any more."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
