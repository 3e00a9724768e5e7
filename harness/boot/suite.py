"""One QEMU boot of a suite: QEMU's failures end as a classified boot status.

What the boot meets goes to its hooks: on_start once QEMU runs (its trace log's
tap and vCPU threads, for layer 0), on_line for every console line and on_record
for every line of the records port (a judge session's feed), done and doing
to know when the suite ended and what it was doing at a hang, armed for the
fault injection's moment.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.boot import faults
from harness.boot.channels import TraceFile
from harness.boot.qemu_runner import TRACE_EVENTS_SMP, BootResult, QemuRun, QmpTimeout, Timeouts
from harness.core import signals
from harness.core.errors import HarnessError, InputError
from harness.core.status import BootStatus
from harness.inputs import guest_spec, machine


@dataclass
class Hooks:
    on_start: Callable[[TraceFile | None, dict[int, int]], None]  # trace, vCPU thread -> CPU
    on_line: Callable[[str], None]
    done: Callable[[], bool]  # the suite said done
    doing: Callable[[], str]  # what the suite is doing (a hang's reason)
    armed: Callable[[], str | None] = lambda: None  # a test whose timer was just armed
    on_record: Callable[[str], None] | None = None  # the records port's lines (else on_line)
    # the suite is done and QEMU powers off (the boot so far): the verdicts' files can
    # be written meanwhile
    on_done: Callable[[BootResult], None] = lambda boot: None
    # QEMU has started (before QMP connects): what can be made while QEMU sets itself up
    on_spawn: Callable[[], None] = lambda: None


# /init's grace after a watchdog (STOP_GRACE_MS in vmm/init.c), and the time to write
# a test's records and kernel events after it ended
_STOP_GRACE_S, _RECORDS_S, _SUITE_MARGIN_S = 5.0, 5.0, 30.0


def suite_bound(tests: list[guest_spec.GuestTest]) -> float:
    """How long /init may take for tests, whatever the kernel does: each test's
    watchdog, the grace after it, its records, and a margin."""
    return sum(t.timeout_s + _STOP_GRACE_S + _RECORDS_S for t in tests) + _SUITE_MARGIN_S


class SuiteBoot:
    """Boots machine with image and initrd once; result says how it ended (also
    when a signal ended it: the KeyboardInterrupt goes on after result is set)."""

    def __init__(
        self,
        mach: machine.Machine,
        run_dir: Path,
        events: tuple[str, ...],
        timeouts: Timeouts,
        say: Callable[[str], None],
    ) -> None:
        self.machine = mach
        self.run_dir = run_dir
        self.events = events
        if mach.smp > 1 and any(p.startswith("arm_gt") for p in events):
            self.events += TRACE_EVENTS_SMP[mach.gic_version]
        self.timeouts = dataclasses.replace(timeouts)
        self.say = say
        self.result: BootResult | None = None
        self.cpu_threads: dict[int, int] = {}

    def run(
        self,
        image: Path,
        initrd: Path,
        hooks: Hooks,
        fault: str | None = None,
    ) -> BootResult:
        signals.check()  # a stop asked for in another thread (a matrix's) before the boot
        start = time.monotonic()
        q = QemuRun(
            self.machine, image, initrd, self.run_dir, self.events, self.timeouts,
            on_spawn=hooks.on_spawn,
        )  # fmt: skip
        version, enabled, diag, exit_status = "", [], None, None

        def result(status: BootStatus, reason: str) -> BootResult:
            tap = q.trace_file
            return BootResult(
                status, reason, q.console_log, q.qemu_stderr, q.trace_log,
                time.monotonic() - start, exit_status, version, enabled, diag, q.init_s,
                (tap.kept, tap.dropped) if tap else (0, 0),
            )  # fmt: skip

        try:
            with q:
                self.say(f"# qemu: {machine.shell_line(q.argv)}")
                version, enabled = q.start()
                self.cpu_threads = q.cpu_threads
                hooks.on_start(q.trace_file, q.cpu_threads)
                on_line, on_record = hooks.on_line, hooks.on_record or hooks.on_line
                if fault:  # after the record that reports an arming, wherever it comes
                    on_line = faults.injector(fault, q, hooks.armed, on_line, self.say)
                    on_record = faults.injector(fault, q, hooks.armed, on_record, self.say)
                status, reason = q.follow(on_line, hooks.done, hooks.doing, on_record)
                diag = q.save_diagnostics() if status == BootStatus.HANG else None
                if q.qmp_wedged:
                    reason += f"; {q.qmp_wedged}"
                if status == BootStatus.COMPLETED:
                    hooks.on_done(result(status, reason))
                exit_status = q.wait_exit() if status == BootStatus.COMPLETED else q.stop()
        except InputError:
            raise
        except KeyboardInterrupt as e:  # SIGINT/SIGTERM: QEMU was ended by `with q`
            exit_status = q.exit_status
            self.result = result(BootStatus.INTERRUPTED, signals.of(e).reason)
            raise
        except QmpTimeout as e:  # wedged: killed on the way out of `with q`
            status, reason = BootStatus.HANG, str(e)
            diag = q.save_diagnostics()
            exit_status = q.exit_status
        except HarnessError as e:
            status, reason = BootStatus.QEMU_DIED, str(e)
            exit_status = q.exit_status
        if status == BootStatus.QEMU_DIED:
            exit_status = q.exit_status
            tail = q.stderr_tail()
            reason += f" (exit status {exit_status}{'; stderr: ' + tail if tail else ''})"
        self.result = result(status, reason)
        return self.result
