"""File locks shared by the caches (flock(2): between threads and processes alike).

flock locks belong to an open file description, so two threads of one
process that each open the lock file exclude each other just as two
processes do, and the kernel drops a lock when its holder dies.

Three uses:
- locked(): a lock file next to what it guards (a build directory, a cache);
  exclusive or shared, blocking (the holder's work is bounded) or with a
  deadline that ends in a HarnessError naming the lock.
- hold_shared(): a shared lock on a cached image itself, held while a run
  uses it (from building its boot image to the end of the boot).
- remove_unless_used(): what a pruner does to an image: take it exclusively
  without waiting and remove it, or leave it when anyone holds it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from harness.core import repo
from harness.core.errors import HarnessError

_POLL_S = (0.02, 0.5)  # first and longest pause between tries against a deadline


class LockTimeout(HarnessError):
    """A lock was not free before its deadline."""


def _holder(path: Path) -> str:
    """Who the lock file says holds it (pid and what), or '' when it does not say."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f" (held by {text})" if text else ""


def _acquire(
    fd: int, op: int, path: Path, deadline_s: float | None, on_wait: Callable[[str], None] | None
) -> None:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if on_wait:
        on_wait(f"waiting for {repo.rel(path)}{_holder(path)}")
    if deadline_s is None:
        fcntl.flock(fd, op)
        return
    start = time.monotonic()
    pause = _POLL_S[0]
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            waited = time.monotonic() - start
            if waited >= deadline_s:
                raise LockTimeout(
                    repo.rel(path), f"still locked after {waited:.0f} s{_holder(path)}"
                ) from None
            time.sleep(min(pause, deadline_s - waited))
            pause = min(pause * 2, _POLL_S[1])


@contextmanager
def locked(
    path: Path,
    *,
    shared: bool = False,
    deadline_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    what: str = "",
) -> Iterator[None]:
    """Hold the lock file path (created if need be) for the with block.

    Without deadline_s the wait blocks until the holder is done: only for
    locks whose holders do bounded work. on_wait(message) is called once when
    the lock is busy. An exclusive holder writes its pid and what into the
    file, so a waiter's message can name it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, path, deadline_s, on_wait)
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}{': ' + what if what else ''}\n".encode(), 0)
        try:
            yield
        finally:
            if not shared:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _same_file(f: BinaryIO, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(f.fileno())
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def hold_shared(path: Path) -> BinaryIO | None:
    """An open file holding a shared lock on path itself (close it to let go).

    None when path is gone, or was removed or replaced between opening and
    locking it (a pruner got there first): the caller rebuilds it. The wait
    is bounded: a pruner holds its exclusive lock only to remove the file.
    """
    try:
        f = open(path, "rb")  # the caller owns it
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        if _same_file(f, path):
            return f
    except BaseException:
        f.close()
        raise
    f.close()
    return None


def share(f: BinaryIO) -> None:
    """A shared lock on a file one just made (not yet visible to others: no wait)."""
    fcntl.flock(f.fileno(), fcntl.LOCK_SH)


def remove_unless_used(path: Path, remove: Callable[[], None] | None = None) -> bool:
    """Remove path (or call remove(), e.g. to delete its directory) while holding it
    exclusively, unless someone holds it (hold_shared); never waits. False when it
    was in use (or replaced meanwhile), True when it was gone or remove ran."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return True
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not _same_file(f, path):
            return False  # replaced under us: a new image, not ours to judge
        (remove or path.unlink)()
        return True
