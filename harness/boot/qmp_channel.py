"""qemu.qmp's client on a private event loop, every call with a deadline.

Its own module because asyncio and qemu.qmp take ~25 ms to import: harness/boot/qmp.py
imports it when it connects, while QEMU is starting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient, QMPError

__all__ = ["ExecuteError", "QMPError", "QmpChannel"]

_T = TypeVar("_T")
# qemu.qmp logs the failures it raises (a cancelled negotiation, a lost connection);
# the harness reports them itself, as a boot status
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


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
