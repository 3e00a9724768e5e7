"""Faults injected into a live boot at each test's first timer arming (--fault).

stop-cont pauses the whole machine over QMP for 200 ms; host-load burns every
host CPU for 500 ms. Either way each timer must still fire exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from harness.boot.qemu_runner import QemuRun


def burn_cpu(seconds: float) -> None:
    """Load every host CPU for a while (processes, so the GIL does not serialize)."""
    import multiprocessing

    def spin(until: float) -> None:
        while time.monotonic() < until:
            pass

    until = time.monotonic() + seconds
    procs = [
        multiprocessing.Process(target=spin, args=(until,)) for _ in range(os.cpu_count() or 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def injector(
    fault: str,
    q: QemuRun,
    armed: Callable[[], str | None],
    on_line: Callable[[str], None],
    say: Callable[[str], None],
) -> Callable[[str], None]:
    """on_line, injecting fault after each test's first timer arming (armed()
    names the test whose ARM report the last line held)."""
    done: set[str] = set()

    def wrapped(line: str) -> None:
        on_line(line)
        test = armed()
        if test is None or test in done:
            return
        done.add(test)
        if fault == "stop-cont":
            q.qmp("stop")
            time.sleep(0.2)
            q.qmp("cont")
        elif fault == "host-load":
            burn_cpu(0.5)
        say(f"# fault {fault} injected in {test}")

    return wrapped
