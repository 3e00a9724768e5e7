"""Which VM of QEMU's trace (layer 0) is a test's.

Each test's begin record names its VM's CNTVOFF (cntvoff=, the L1 counter less
the guest's, which the VMM reads together); layer 0 sees KVM write the same
offset at each load. Consoles older than that field fall back on order: the
n-th VM in the trace is the n-th test that began, trusted only while the trace
shows no more VMs than the tests that began and the one running.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.judge import abicheck
from harness.traces import qemu_trace, records


@dataclass
class Hardware:
    """Layer 0, QEMU's own trace: a reader, or why there is none to trust."""

    reader: qemu_trace.Reader | None = None
    off: str = ""  # empty: evaluate() says "no QEMU trace for this test"
    # live: how long to wait for a test's VM to show in a trace still being written
    # (the records of a test may come before QEMU's lines of it)
    wait_s: float = 0.0

    def open(
        self,
        trace: Path,
        cpu_threads: dict[int, int] | None,
        smp: int,
        growing: qemu_trace.Growing | None = None,
    ) -> None:
        """Layer 0 from QEMU's trace log, split per L1 CPU where there are several
        (each has its own QEMU thread, named by cpu_threads). growing: the log's
        writer, while the run goes on."""
        threads = cpu_threads if smp > 1 else None
        if threads is not None and len(threads) != smp:
            self.off = "several L1 CPUs share one QEMU thread: layer 0 is not split"
            return
        self.reader = qemu_trace.Reader(trace, threads, growing)
        self.wait_s = 2.0 if growing is not None else 0.0

    def for_test(
        self, parsed: records.Parsed, test: str, wait: bool = True
    ) -> tuple[qemu_trace.VmTimeline | None, str]:
        """test's VM, or None with the reason when there is none to trust (not wait:
        as the trace read so far shows it, a live run's VM not waited for)."""
        if self.reader is None:
            return None, self.off
        began = parsed.began
        if test not in began:
            return None, "the test never began"
        vms = self.reader.timelines()
        begin = next((r for r in parsed.of(test) if r.kind == "begin"), None)
        if begin is not None and begin.get("cntvoff"):
            cntvoff = int(begin.get("cntvoff"), 16)
            deadline = time.monotonic() + (self.wait_s if wait else 0.0)
            found = _by_offset(vms, cntvoff)
            while found[0] is None and self.reader.wait_more(deadline - time.monotonic()):
                found = _by_offset(self.reader.timelines(), cntvoff)
            return found
        # the ABI probe's VM, if it ran, is the first in QEMU's trace
        vms = vms[abicheck.probe_vms(parsed) :]
        n = began.index(test)
        # the next test's VM may have started already; more VMs than that means a
        # test changed its offset (e.g. a restored CNTVCT) and the order is unreliable
        if n >= len(vms):
            return None, f"QEMU's trace shows {len(vms)} VMs, this test ran the {n + 1}th"
        if len(vms) > len(began) + 1:
            return None, (
                f"QEMU's trace shows {len(vms)} VMs for {len(began)} tests: "
                "which VM is which test's is not known"
            )
        return vms[n], ""


# how far the CNTVOFF the VMM computed (the L1 counter less the guest's, read
# together) may lie from the one KVM writes: its reads are microseconds apart,
# and VMs are made tens of milliseconds apart at the least
CNTVOFF_MATCH = 62_500_000 // 200  # 5 ms of ticks


def _by_offset(
    vms: Sequence[qemu_trace.VmTimeline], cntvoff: int
) -> tuple[qemu_trace.VmTimeline | None, str]:
    """The VM whose first CNTVOFF is cntvoff (within CNTVOFF_MATCH)."""
    best = min(vms, key=lambda vm: abs(vm.cntvoff - cntvoff), default=None)
    if best is None or abs(best.cntvoff - cntvoff) > CNTVOFF_MATCH:
        near = "" if best is None else f" (the nearest, {best.cntvoff:#x})"
        return None, f"QEMU's trace shows no VM with the test's CNTVOFF {cntvoff:#x}{near}"
    return best, ""
