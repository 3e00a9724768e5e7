"""One test's records turned into facts: exits, level changes, guest events."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from harness.traces import kernel_trace
from harness.traces.qemu_trace import VmTimeline
from harness.traces.records import Record

TIMER_BITS = kernel_trace.TIMER_BITS


@dataclass(frozen=True)
class Exit:
    """One return from KVM_RUN, as the VMM logged it."""

    seq: int
    vcpu: int
    n: int
    reason: str
    errno: int
    level: int | None  # the timer bitmap this exit showed (None: shows none)
    read: bool  # the VMM's policy looked at it
    notice: bool  # the ABI's own notice exit (EINTR, or v4's dedicated exit)
    port: str | None
    value: int | None
    t_ns: int
    in_run_ns: int
    cnt: int | None = None  # the L1 counter when KVM_RUN returned
    stop: bool = False
    sig: int = 0  # SIGALRMs of the VMM's own timers that ended this KVM_RUN
    hist: int | None = None  # v5's user_timer_pending at this exit (None: not logged)

    @property
    def signal(self) -> bool:
        """Ended by a signal of the VMM's (its watchdog stop or an alarm), not by the kernel."""
        return self.stop or self.sig > 0


@dataclass(frozen=True)
class Change:
    """A change of the reported level, first shown at exit `first`."""

    vcpu: int
    timer: str
    level: int
    first: Exit
    first_notice: Exit | None  # the first notice exit showing it (None: never)
    read_at: Exit | None  # the first exit the VMM read it at (None: never)


@dataclass
class TestTrace:
    __test__ = False  # not a pytest class
    name: str
    records: list[Record]
    begin: Record | None = None
    end: Record | None = None
    exits: list[Exit] = field(default_factory=list)
    injections: list[Record] = field(default_factory=list)
    errors: list[Record] = field(default_factory=list)
    hw: VmTimeline | None = None  # layer 0: QEMU's view of this test's VM, when traced
    hw_missing: str = "no QEMU trace for this test"  # why hw is None, when it is
    storm: Record | None = None  # the VMM ended the test in an exit storm
    # records the VMM did not write (over its bounds): "exit" (vt_limits.h), "kernel" (ktdrop)
    dropped: dict[str, int] = field(default_factory=dict)
    # every kernel event of the test by name, kept or dropped (the VMM's ktsum records);
    # "kvm_exit_irq": the guest runs a host interrupt ended
    kernel_counts: dict[str, int] = field(default_factory=dict)
    _changes: dict[str, list[Change]] = field(default_factory=dict, repr=False)
    _by_vcpu: dict[int, list[Exit]] | None = field(default=None, repr=False)
    _by_n: dict[tuple[int, int], Exit] | None = field(default=None, repr=False)

    @classmethod
    def from_records(cls, name: str, records: list[Record]) -> TestTrace:
        tr = cls(name, records)
        for r in records:
            if r.kind == "begin":
                tr.begin = r
            elif r.kind == "end":
                tr.end = r
            elif r.kind == "inject":
                tr.injections.append(r)
            elif r.kind == "error":
                tr.errors.append(r)
            elif r.kind == "storm":
                tr.storm = r
            elif r.kind == "drop":
                tr.dropped[r.get("what", "?")] = r.int("n")
            elif r.kind == "ktdrop":
                tr.dropped["kernel"] = r.int("n")
            elif r.kind == "ktsum":
                tr.kernel_counts[r.get("ev", "?")] = r.int("n")
            elif r.kind == "exit":
                lvl = r.get("lvl", "-")
                val = r.get("val")
                tr.exits.append(
                    Exit(
                        seq=r.seq,
                        vcpu=r.int("vcpu"),
                        n=r.int("n"),
                        reason=r.get("r", "?"),
                        errno=r.int("err"),
                        level=None if lvl == "-" else int(lvl, 16),
                        read=r.get("read") == "1",
                        # the VMM marks a signal exit of its own as no notice (vmm/vm.c)
                        notice=r.get("ntc") == "1",
                        port=r.get("port"),
                        value=int(val, 16) if val is not None else None,
                        t_ns=r.t_ns,
                        in_run_ns=r.int("dt"),
                        cnt=r.int("cnt", base=16) if r.get("cnt") else None,
                        stop=r.get("stop") == "1",
                        sig=r.int("sig"),
                        hist=int(r.get("hist", ""), 16) if r.get("hist") else None,
                    )
                )
        return tr

    @cached_property
    def kernel_events(self) -> list[kernel_trace.KernelEvent]:
        """Layer 1: the kernel's events during this test, parsed once."""
        return kernel_trace.events(self.records)

    @cached_property
    def kernel_by_vcpu(self) -> dict[int, list[kernel_trace.KernelEvent]] | str:
        """Layer 1 split per vCPU (kernel_trace.per_vcpu), or why it cannot be."""
        vcpus = self.vcpus()
        if len(vcpus) <= 1:
            return {v: self.kernel_events for v in vcpus}
        return kernel_trace.per_vcpu(
            self.kernel_events, kernel_trace.vcpu_threads(self.records), vcpus
        )

    def kernel_missing(self) -> str:
        """Why kernel_events is empty."""
        if "kernel" in self.dropped:
            return (
                f"the VMM dropped {self.dropped['kernel']} kernel events over its bound, "
                "so none are judged"
            )
        if any(r.kind == "kt" for r in self.records):
            return "no kvm events for this test"
        return "no kernel events (tracefs absent, or none recorded)"

    # -- guest events ------------------------------------------------------
    def ports(self, port: str, vcpu: int | None = None) -> list[Exit]:
        return [e for e in self.exits if e.port == port and (vcpu is None or e.vcpu == vcpu)]

    @property
    def guest_exit_code(self) -> int | None:
        ends = self.ports("EXIT")
        return ends[-1].value if ends else None

    @property
    def status(self) -> str | None:
        return self.end.get("status") if self.end else None

    def vcpus(self) -> list[int]:
        return sorted(self.by_vcpu())

    def by_vcpu(self) -> dict[int, list[Exit]]:
        """Each vCPU's exits, in order (built once)."""
        if self._by_vcpu is None:
            self._by_vcpu = {}
            for e in self.exits:
                self._by_vcpu.setdefault(e.vcpu, []).append(e)
        return self._by_vcpu

    # -- the line as user space saw it ---------------------------------------
    def changes(self, timer: str) -> list[Change]:
        """Every change of timer's bit in the shown level, per vCPU, in order (one pass)."""
        if timer not in self._changes:
            self._changes[timer] = [
                c for vcpu in self.vcpus() for c in _changes(self.by_vcpu()[vcpu], vcpu, timer)
            ]
        return self._changes[timer]

    def edges(self, timer: str) -> int:
        """Rising edges of timer that the VMM read."""
        return sum(1 for c in self.changes(timer) if c.level == 1 and c.read_at is not None)

    def next_exit(self, e: Exit) -> Exit | None:
        if self._by_n is None:
            self._by_n = {}
            for x in self.exits:
                self._by_n.setdefault((x.vcpu, x.n), x)
        return self._by_n.get((e.vcpu, e.n + 1))


def _changes(exits: list[Exit], vcpu: int, timer: str) -> list[Change]:
    """The changes of timer's bit over one vCPU's exits: each with the first
    exit showing it, and the first notice and the first read among the exits
    that show it until it changes again."""
    shift = TIMER_BITS[timer]
    out: list[Change] = []
    current = 0
    first: Exit | None = None
    notice: Exit | None = None
    read: Exit | None = None

    def close() -> None:
        if first is not None:
            out.append(Change(vcpu, timer, current, first, notice, read))

    for e in exits:
        if e.level is None:
            continue
        level = (e.level >> shift) & 1
        if level != current:
            close()
            current, first, notice, read = level, e, None, None
        if first is None:
            continue
        if notice is None and e.notice:
            notice = e
        if read is None and e.read:
            read = e
    close()
    return out
