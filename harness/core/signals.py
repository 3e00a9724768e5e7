"""SIGINT and SIGTERM, handled explicitly: either one becomes an Interrupted exception.

CI runners and schedulers cancel a job with SIGTERM; a job started in the
background inherits SIGINT *ignored*, and Python then installs no SIGINT
handler of its own. install() (called by the command line) sets a handler
for both, whatever the process inherited. The handler:

- records the signal, so that threads other than the main one, which never
  see the exception, find out with check() (a matrix's boot threads do, at
  least every POLL_S seconds while they follow a console);
- raises Interrupted in the main thread, the first time only: a second
  signal while the harness is ending QEMU and writing results is recorded
  and nothing more, so those bounded steps are not cut short;
- inside deferred() (the main thread ending QEMU) raises nothing until the
  block ends.

Interrupted is a KeyboardInterrupt, so code that handles Ctrl-C handles
SIGTERM the same way. The exit status is 128 + the signal's number (130, 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.25  # how often a waiting thread looks at check()


class Interrupted(KeyboardInterrupt):
    """The harness was told to stop by a signal; carries the signal's number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(self.reason)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def reason(self) -> str:
        """What a result interrupted by it says: interrupted (SIGTERM)."""
        return f"interrupted ({self.name})"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def of(exc: BaseException) -> Interrupted:
    """The Interrupted an exception stands for: a plain KeyboardInterrupt is SIGINT."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)


# Written only in the main thread (the handler runs there, and so does deferred()'s
# bookkeeping), read by any: no lock, which a handler could deadlock on anyway.
_received: int | None = None  # the first signal received
_raised = False  # Interrupted was raised in the main thread already
_defer_depth = 0  # > 0 inside deferred() in the main thread


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received, _raised
    if _received is None:
        _received = signum
    if _raised or _defer_depth:
        return
    _raised = True
    raise Interrupted(signum)


def install() -> None:
    """Handle SIGINT and SIGTERM (main thread only), even if they were ignored at start."""
    for signum in HANDLED:
        signal.signal(signum, _handler)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """install() for the block (from the main thread; elsewhere a no-op), with no signal
    received yet; the handlers from before again after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in HANDLED}
    reset()
    install()
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def received() -> int | None:
    """The signal that asked the harness to stop, if one did."""
    return _received


def check() -> None:
    """Raise Interrupted if a signal was received (for threads that poll)."""
    signum = _received
    if signum is not None:
        raise Interrupted(signum)


def request(signum: int) -> None:
    """Record a stop as the handler would (no raise): for a KeyboardInterrupt that came
    without it, so that the threads that poll check() stop too."""
    global _received
    if _received is None:
        _received = int(signum)


def reset() -> None:
    """Forget a received signal (for tests that run the harness in-process)."""
    global _received, _raised
    _received, _raised = None, False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """No Interrupted inside the block (main thread); one that arrives meanwhile is
    raised at its end, in place of any exception on its way out."""
    global _defer_depth, _raised
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1
        if _defer_depth == 0 and _received is not None and not _raised:
            _raised = True
            raise Interrupted(_received)  # the user asked to stop: this wins
