"""Executable semantics models of the revisions, checked over one test's trace.

A model is a revision's rules (kernel_patches/<rev>/profile.yaml): which
timers its ABI reports, whether a notice may ride on another exit
(coalesce) and whether a VMM that reads the line only on the ABI's own
notice exits sees every change (eintr-suffices). The same trace can be
checked against several models; that is how revisions are compared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness import kernel_trace, oracle
from harness.records import Record
from harness.revision import Revision
from harness.trace import Change, Exit, TestTrace

PASS, FAIL, SKIP = "pass", "fail", "skip"
# a property whose evidence is absent or was dropped: neither pass nor fail
NOT_JUDGED = "not-judged"
# a property the model does not promise: what the kernel did is said, never "pass"
NA = "n/a"
# the properties each judged from the VMM's exit records
_FROM_EXITS = ("visible", "once", "coalesce", "eintr-suffices", "progress", "truthful", "wake")
# properties of the kernel's notices that every trace shows, whatever the test
ALWAYS = ("coalesce", "eintr-suffices")
# the VT_WAKE value: IRQs taken so far, and VT_WAKE_EARLY (guest_tests/runtime/vt_ports.h)
_WAKE_IRQS, _WAKE_EARLY = 0xFFFFFFFF, 1 << 32


@dataclass(frozen=True)
class PropertyResult:
    prop: str
    status: str  # pass, fail, skip
    detail: str
    seq: int | None = None  # the first record where it failed
    expected: str | None = None
    observed: str | None = None

    def line(self) -> str:
        where = f" (record seq {self.seq})" if self.seq is not None else ""
        if self.status == NOT_JUDGED:
            return f"{self.prop} not judged: {self.detail}{where}"
        eo = ""
        if self.expected is not None:
            eo = f": expected {self.expected}, observed {self.observed}"
        return f"{self.prop}: {self.detail}{eo}{where}"


@dataclass(frozen=True)
class Model:
    name: str
    timers: tuple[str, ...]
    coalesce: bool
    eintr_suffices: bool

    @classmethod
    def of(cls, rev: Revision) -> Model:
        timers = tuple(t for t in ("vtimer", "ptimer") if rev.abi.reports(t))
        return cls(rev.model, timers, rev.coalesce, rev.eintr_suffices)

    # -- properties --------------------------------------------------------
    def check(self, tr: TestTrace, props: tuple[str, ...]) -> list[PropertyResult]:
        checks = {
            "visible": self.visible,
            "once": self.once,
            "coalesce": self.coalesce_rule,
            "eintr-suffices": self.eintr_rule,
            "wake": self.wake,
            "truthful": self.truthful,
            "progress": self.progress,
        }
        wanted = list(props) + [p for p in ALWAYS if p not in props]
        if tr.storm is not None:  # an exit storm breaks progress, whatever the test exercises
            wanted = ["progress"] + [p for p in wanted if p != "progress"]
        return [_evidence(tr, checks[p](tr)) for p in wanted if p in checks]

    def _changes(self, tr: TestTrace) -> list[Change]:
        out = [c for t in self.timers for c in tr.changes(t)]
        return sorted(out, key=lambda c: c.first.seq)

    def visible(self, tr: TestTrace) -> PropertyResult:
        """Every change of a reported timer's level reaches the VMM."""
        for c in self._changes(tr):
            if c.read_at is None:
                return PropertyResult(
                    "visible",
                    FAIL,
                    f"{c.timer} change to {c.level} on vcpu {c.vcpu}, first shown on "
                    f"exit {c.first.n} ({c.first.reason}), never read by the VMM",
                    seq=c.first.seq,
                    expected="read on an exit",
                    observed="never read",
                )
        kev = tr.kernel_events
        if kev and len(tr.vcpus()) <= 1:
            bad = kernel_trace.unreported_entries(kev, self.timers)
            if bad:
                b = bad[0]
                return PropertyResult(
                    "visible",
                    FAIL,
                    f"the guest was entered with a {b.timer} change unreported: the kernel saw "
                    f"level {b.level} (kvm_timer_update_irq at {b.change.t_ns / 1e9:.6f} s) and "
                    f"ran the guest (kvm_entry at {b.entry.t_ns / 1e9:.6f} s) before any return "
                    f"to user space; {len(bad)} such entries",
                    seq=b.entry.seq,
                    expected=f"a return to user space showing {b.level} before the next entry",
                    observed=f"kvm_entry with level {b.reported} last reported",
                )
        if tr.status == "guest-timeout":
            fail = tr.ports("FAIL")
            return PropertyResult(
                "visible",
                FAIL,
                "the guest's bounded wait for its IRQ ran out: a change never reached it",
                seq=fail[0].seq if fail else None,
            )
        n = len(self._changes(tr))
        if not kev:
            return PropertyResult(
                "visible",
                NOT_JUDGED,
                f"the VMM read all {n} changes it was shown, but which changes the kernel saw "
                f"is unknown: {tr.kernel_missing()}",
            )
        if len(tr.vcpus()) > 1:
            return PropertyResult(
                "visible",
                PASS,
                f"{n} changes all read (the kernel's entries carry no vCPU: layer 1 checked "
                "on one-vCPU tests only)",
            )
        return PropertyResult(
            "visible", PASS, f"{n} changes all read; no guest entry with a change unreported"
        )

    def once(self, tr: TestTrace) -> PropertyResult:
        """One IRQ per injected edge, no spurious IRQ."""
        spurious = tr.ports("SPURIOUS")
        if spurious:
            return PropertyResult(
                "once",
                FAIL,
                "IRQ taken with no timer pending",
                seq=spurious[0].seq,
                expected="0 spurious IRQs",
                observed=str(len(spurious)),
            )
        rises = [r for r in tr.injections if r.get("level") == "1"]
        irqs = tr.ports("IRQ")
        if tr.storm is not None and len(irqs) < len(rises):
            return PropertyResult(
                "once",
                NOT_JUDGED,
                f"the VMM ended the test in an exit storm after {len(rises)} injections, "
                f"before the guest could take them ({len(irqs)} IRQs taken)",
                seq=tr.storm.seq,
            )
        if len(rises) != len(irqs):
            seq = (
                irqs[len(rises)].seq
                if len(irqs) > len(rises)
                else (rises[len(irqs)].seq if rises else None)
            )
            return PropertyResult(
                "once",
                FAIL,
                "IRQs taken differ from rising edges injected",
                seq=seq,
                expected=f"{len(rises)} IRQs",
                observed=str(len(irqs)),
            )
        return PropertyResult("once", PASS, f"{len(irqs)} edges, {len(irqs)} IRQs")

    def _own_notice(self, tr: TestTrace, c: Change) -> Exit | None:
        """The exit where change c got (or failed to get) a notice of its own."""
        if c.first.notice:
            return None
        nxt = tr.next_exit(c.first)
        if nxt is not None and nxt.notice and nxt.level is not None:
            return None
        return c.first

    def _rode(self, tr: TestTrace) -> tuple[list[Change], list[tuple[Change, Exit]]]:
        """The changes, and those that rode on another exit with no notice exit of
        their own (with the exit they rode on)."""
        changes = self._changes(tr)
        rode = [(c, bad) for c in changes if (bad := self._own_notice(tr, c)) is not None]
        return changes, rode

    def coalesce_rule(self, tr: TestTrace) -> PropertyResult:
        """Does each change get a notice exit of its own, or may it ride on another
        exit (an MMIO exit) with none? Measured under every model; judged where the
        model promises its own notice."""
        changes, rode = self._rode(tr)
        seen = (
            f"{len(rode)} of {len(changes)} changes rode on other exits with no notice of their own"
        )
        if self.coalesce:
            return PropertyResult(
                "coalesce",
                NA,
                f"not promised by this model (a notice may ride on any exit); observed: {seen}",
                observed=f"{len(rode)}/{len(changes)}",
            )
        if rode:
            c, bad = rode[0]
            return PropertyResult(
                "coalesce",
                FAIL,
                f"{c.timer} change to {c.level} rode on exit {bad.n} ({bad.reason}) "
                f"with no notice exit of its own ({seen})",
                seq=bad.seq,
                expected="a notice exit next",
                observed=_describe(tr.next_exit(bad)),
            )
        return PropertyResult(
            "coalesce", PASS, f"each of {len(changes)} changes had a notice exit of its own"
        )

    def eintr_rule(self, tr: TestTrace) -> PropertyResult:
        """Would a VMM that reads the line only on the ABI's notice exits see every
        change before the guest runs on? Measured under every model; judged where
        the model promises it."""
        changes = self._changes(tr)
        missed = [
            c for c in changes if c.first_notice is None or self._own_notice(tr, c) is not None
        ]
        seen = (
            f"{len(missed)} of {len(changes)} changes reached no notice exit before the "
            "guest ran on"
        )
        if not self.eintr_suffices:
            return PropertyResult(
                "eintr-suffices",
                NA,
                f"not promised by this model (the VMM must read every exit); observed: {seen}",
                observed=f"{len(missed)}/{len(changes)}",
            )
        if missed:
            c = missed[0]
            return PropertyResult(
                "eintr-suffices",
                FAIL,
                f"{c.timer} change to {c.level} reached no notice exit before the guest ran on "
                f"({seen})",
                seq=c.first.seq,
                expected="a notice exit",
                observed=_describe(tr.next_exit(c.first)),
            )
        return PropertyResult(
            "eintr-suffices", PASS, f"each of {len(changes)} changes came with a notice exit"
        )

    def wake(self, tr: TestTrace) -> PropertyResult:
        """A vCPU asleep in WFI when its timer fires is woken and takes the IRQ.

        The guest's VT_WAKE says whether it was asleep before the timer fired
        (timer_arm_wfi reads ISTATUS just before the WFI); the kernel layer,
        when present, must show KVM itself blocking and waking the vCPU (a VM
        with no vGIC always traps WFI; a host booted with
        kvm-arm.wfi_trap_policy=notrap, 6.12 and later, would not).
        """
        wakes = [e for e in tr.ports("WAKE") if (e.value or 0) & _WAKE_IRQS >= 1]
        if not wakes and tr.storm is not None:
            return PropertyResult(
                "wake",
                NOT_JUDGED,
                "the VMM ended the test in an exit storm before the guest could report a "
                "wake-up from WFI",
                seq=tr.storm.seq,
            )
        if not wakes:
            return PropertyResult(
                "wake",
                FAIL,
                "the vCPU never returned from WFI with its IRQ taken",
                expected="a WAKE report after the IRQ",
                observed="none",
            )
        if all((e.value or 0) & _WAKE_EARLY for e in wakes):
            return PropertyResult(
                "wake",
                SKIP,
                "not exercised: the timer had fired before the vCPU reached its WFI",
                seq=wakes[0].seq,
            )
        events = tr.kernel_events
        if not events:
            return PropertyResult(
                "wake",
                NOT_JUDGED,
                f"the guest woke from WFI with its IRQ, but whether KVM blocked and woke the "
                f"vCPU is unknown: {tr.kernel_missing()}",
                seq=wakes[0].seq,
            )
        if not any(ev.event == "kvm_vcpu_wakeup" for ev in events):
            return PropertyResult(
                "wake",
                FAIL,
                "the guest slept in WFI but KVM never blocked the vCPU",
                seq=wakes[0].seq,
                expected="a kvm_vcpu_wakeup event",
                observed="none among the test's kvm events",
            )
        return PropertyResult("wake", PASS, "woken from WFI by the timer")

    def truthful(self, tr: TestTrace) -> PropertyResult:
        """The reported level agrees with the hardware: the guest's own ISTATUS at
        IRQ entry; at every exit, the architectural timer output at its counter
        (layer 0, harness/oracle.py); and the count of rises in the kernel's
        tracepoints (layer 1) and QEMU's trace."""
        for e in tr.ports("IRQ"):
            if not (e.value or 0) & 0xF:
                return PropertyResult(
                    "truthful", FAIL, "IRQ entry with no timer pending", seq=e.seq
                )
        verdict = oracle.judge(tr, tr.hw) if tr.hw is not None and "vtimer" in self.timers else None
        if verdict is not None and verdict.mismatch is not None:
            return _mismatch(verdict)
        shown = sum(1 for c in tr.changes("vtimer") if c.level == 1)
        kev = tr.kernel_events
        if kev and "vtimer" in self.timers and kernel_trace.rises(kev) != shown:
            return PropertyResult(
                "truthful", FAIL, "the ABI showed a different number of vtimer rises than the "
                "kernel's kvm_timer_update_irq saw",
                expected=f"{kernel_trace.rises(kev)} (L1 tracepoints)", observed=str(shown),
            )  # fmt: skip
        if tr.hw is None:
            kernel = (
                f"{kernel_trace.rises(kev)} in the kernel's kvm_timer_update_irq"
                if kev
                else f"layer 1: {tr.kernel_missing()}"
            )
            return PropertyResult(
                "truthful", NOT_JUDGED, f"every IRQ found its timer pending, but the level at "
                f"each exit is not judged without layer 0: {tr.hw_missing} ({shown} vtimer "
                f"rises shown, {kernel})",
            )  # fmt: skip
        if "vtimer" in self.timers and shown != tr.hw.edges():
            return PropertyResult(
                "truthful", FAIL, "the ABI showed a different number of vtimer rises than QEMU's "
                "timer produced", expected=f"{tr.hw.edges()} (QEMU arm_gt_*)", observed=str(shown),
            )  # fmt: skip
        counts = f"{shown} vtimer rises shown, {tr.hw.edges()} in QEMU's trace" + (
            f", {kernel_trace.rises(kev)} in the kernel's" if kev else ""
        )
        return _truthful_at_exits(self, tr, verdict, counts)

    def progress(self, tr: TestTrace) -> PropertyResult:
        """While the shown level stays high and unchanged, the guest runs on: the
        exits it did not cause (no port report, no signal of the VMM's) stay under
        a constant bound, however long the line stays high, and its heartbeat
        counter (loop iterations, reported in VT_HBEAT) advances."""
        if tr.storm is not None:
            return _storm(tr.storm)
        max_idle = 2  # exits the guest did not cause, per high interval
        min_beats = 3  # heartbeats in the longest high interval
        best: tuple[int, str] | None = None
        for vcpu in tr.vcpus():
            exits = [e for e in tr.exits if e.vcpu == vcpu]
            i = 0
            while i < len(exits):
                first = exits[i]
                if not first.level:
                    i += 1
                    continue
                j = i + 1
                while j < len(exits) and exits[j].level in (None, first.level):
                    j += 1
                span = exits[i + 1 : j]  # after the exit that showed the change
                idle = [x for x in span if x.port is None and not x.signal]
                if len(idle) > max_idle:
                    return PropertyResult(
                        "progress",
                        FAIL,
                        f"exit storm while the line stayed high on vcpu {vcpu}: exits "
                        "the guest did not cause kept coming",
                        seq=idle[max_idle].seq,
                        expected=f"at most {max_idle} such exits",
                        observed=str(len(idle)),
                    )
                beats = [x for x in span if x.port == "HBEAT"]
                values = [x.value or 0 for x in beats]
                stuck = [k for k in range(1, len(values)) if values[k] <= values[k - 1]]
                if stuck:
                    bad = beats[stuck[0]]
                    return PropertyResult(
                        "progress",
                        FAIL,
                        f"the guest's loop counter did not advance on vcpu {vcpu}",
                        seq=bad.seq,
                        expected="increasing heartbeat values",
                        observed=", ".join(str(v) for v in values),
                    )
                end = exits[j - 1]
                ms = (end.t_ns - first.t_ns) / 1e6
                signals = sum(1 for x in span if x.signal)
                what = (
                    f"line {first.level:x} high {ms:.0f} ms on vcpu {vcpu}: {len(beats)} "
                    f"heartbeats (loop {values[0] if values else 0}..{values[-1] if values else 0}"
                    f"), {len(idle)} exits not caused by the guest, {signals} signal exits"
                )
                if best is None or len(beats) > best[0]:
                    best = (len(beats), what)
                i = j
        if best is None or best[0] < min_beats:
            return PropertyResult(
                "progress",
                FAIL,
                "the line never stayed high across the guest's heartbeats",
                expected=f"at least {min_beats} heartbeats while high",
                observed=str(best[0] if best else 0),
            )
        return PropertyResult("progress", PASS, best[1])


def _mismatch(v: oracle.Verdict) -> PropertyResult:
    """truthful's failure at the first exit whose level the oracle does not allow."""
    x = v.mismatch
    assert x is not None
    why = x.cause.describe() if x.cause else "the timer's reset state"
    return PropertyResult(
        "truthful",
        FAIL,
        f"exit {x.exit.n} on vcpu {x.exit.vcpu} ({x.exit.reason}, cnt {x.exit.cnt or 0:x}) "
        f"showed vtimer {x.shown}, the timer's output there was {x.level}, set by {why}; "
        f"{v.clock.describe() if v.clock else 'no change, no clock needed'}",
        seq=x.exit.seq,
        expected=f"vtimer {x.level} (QEMU arm_gt_*)",
        observed=f"vtimer {x.shown} (lvl={x.exit.level or 0:x})",
    )


def _truthful_at_exits(
    m: Model, tr: TestTrace, v: oracle.Verdict | None, counts: str
) -> PropertyResult:
    """truthful, the counts agreeing: judged at every exit, or why not."""
    if v is None:
        return PropertyResult(
            "truthful", NOT_JUDGED, f"this ABI reports no vtimer level to judge ({counts})"
        )
    if v.why_not:
        return PropertyResult(
            "truthful", NOT_JUDGED, f"the level at each exit is not judged: {v.why_not} ({counts})"
        )
    if "ptimer" in m.timers and tr.changes("ptimer"):
        return PropertyResult(
            "truthful", NOT_JUDGED, f"vtimer right at all {v.judged} exits, but layer 0 does not "
            f"follow the ptimer the ABI reported ({counts})",
        )  # fmt: skip
    clock = v.clock.describe() if v.clock else "no change, no clock needed"
    return PropertyResult(
        "truthful",
        PASS,
        f"vtimer level right at all {v.judged} exits against QEMU's timer output ({clock}); "
        + counts,
    )


def _evidence(tr: TestTrace, r: PropertyResult) -> PropertyResult:
    """A pass judged on records of which some were dropped is not a pass."""
    n = tr.dropped.get("exit", 0)
    if not n or r.prop not in _FROM_EXITS or r.status not in (PASS, NA):
        return r
    if r.status == NA:
        return dataclasses.replace(r, detail=f"{r.detail} (of the kept records; {n} dropped)")
    return PropertyResult(
        r.prop,
        NOT_JUDGED,
        f"{n} exit records were dropped (over the VMM's bound); on the kept ones: {r.detail}",
        r.seq,
    )


def _storm(rec: Record) -> PropertyResult:
    """progress, when the VMM ended the test in an exit storm (vmm/vt_limits.h)."""
    ms = max(rec.int("ms"), 1)
    idle = rec.int("idle_exits")
    return PropertyResult(
        "progress",
        FAIL,
        f"exit storm on vcpu {rec.get('vcpu')}: {idle} exits that told user space nothing "
        f"(no guest report, no signal, no level change) in {ms} ms; the VMM ended the test",
        seq=rec.seq,
        expected=f"under {rec.get('rate_min')} such exits/s",
        observed=f"{idle * 1000 // ms}/s for {ms} ms",
    )


def _describe(e: Exit | None) -> str:
    if e is None:
        return "no further exit"
    return f"exit {e.n} ({e.reason}{', notice' if e.notice else ''})"
