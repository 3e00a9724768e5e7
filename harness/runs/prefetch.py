"""What a boot-test can start before its own imports: `make artifacts` and
`git describe`, two subprocesses (~50 ms) that run while Python imports the
harness (~150 ms) instead of after it.

harness/__main__.py starts them for `boot-test` alone; the run takes each
result where it used to compute it (take: the prefetched result, or its own
call when nothing was started, as in a matrix's later cells or a test). A job
that raised raises the same at take, so an error surfaces where it always did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class _Job:
    """One call in a thread of its own, its result or exception kept."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as e:  # re-raised in the caller's thread, at take
            self._error = e

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


_jobs: dict[str, _Job] = {}
_lock = threading.Lock()


def start(name: str, fn: Callable[[], Any]) -> None:
    with _lock:
        _jobs[name] = _Job(fn)


def take(name: str, fn: Callable[[], Any]) -> Any:
    """The prefetched result of name (once), else fn()."""
    with _lock:
        job = _jobs.pop(name, None)
    return job.result() if job is not None else fn()


def boot_test() -> None:
    """Start what every boot-test runs first."""
    from harness.build.artifacts import build_artifacts
    from harness.core import repo

    start("artifacts", build_artifacts)
    start("git", repo.git_describe)
