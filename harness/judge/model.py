"""Executable semantics models of the revisions, checked over one test's trace.

A model is a revision's rules (kernel_patches/<rev>/profile.yaml): which
timers its ABI reports, whether a notice may ride on another exit
(coalesce) and whether a VMM that reads the line only on the ABI's own
notice exits sees every change (eintr-suffices). The same trace can be
checked against several models; that is how revisions are compared.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from harness.inputs import limits
from harness.inputs.revision import Revision
from harness.judge import oracle
from harness.traces import kernel_trace
from harness.traces.records import Record
from harness.traces.test_trace import TIMER_BITS, Change, Exit, TestTrace

PASS, FAIL, SKIP = "pass", "fail", "skip"
# a property whose evidence is absent or was dropped: neither pass nor fail
NOT_JUDGED = "not-judged"
# a property the model does not promise: what the kernel did is said, never "pass"
NA = "n/a"
# the properties each judged from the VMM's exit records
_FROM_EXITS = ("visible", "once", "coalesce", "eintr-suffices", "progress", "truthful", "wake")
# properties of the kernel's notices that every trace shows, whatever the test
ALWAYS = ("prompt", "coalesce", "eintr-suffices", "history", "dedicated-exit")
# the VT_WAKE value: IRQs taken so far, and VT_WAKE_EARLY (guest_tests/runtime/vt_ports.h)
_WAKE_EARLY = 1 << limits.get("VT_WAKE_EARLY_BIT")
_WAKE_IRQS = _WAKE_EARLY - 1


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
    history: bool = False  # v5: kernel-written history of the last forced notice
    dedicated_exit: bool = False  # v4: an exit reason of its own carries the line

    @classmethod
    def of(cls, rev: Revision) -> Model:
        timers = tuple(t for t in ("vtimer", "ptimer") if rev.abi.reports(t))
        return cls(
            rev.model,
            timers,
            rev.coalesce,
            rev.eintr_suffices,
            history=rev.abi.history_field is not None,
            dedicated_exit=rev.abi.exit_reason is not None,
        )

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
            "prompt": self.prompt,
            "history": self.history_rule,
            "dedicated-exit": self.dedicated_exit_rule,
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
        paired = True
        split = tr.kernel_by_vcpu if kev else {}
        several = len(tr.vcpus()) > 1
        for vcpu, evs in split.items() if isinstance(split, dict) else ():
            shown = [e.level for e in tr.by_vcpu()[vcpu]]
            bad = kernel_trace.unreported_entries(evs, self.timers, shown)
            paired = paired and bad is not None
            if bad:
                b = bad[0]
                on = f" on vcpu {vcpu}" if several else ""
                return PropertyResult(
                    "visible",
                    FAIL,
                    f"the guest was entered{on} with a {b.timer} change unreported: the kernel "
                    f"saw level {b.level} (kvm_timer_update_irq at {b.change.t_ns / 1e9:.6f} s) "
                    f"and ran the guest (kvm_entry at {b.entry.t_ns / 1e9:.6f} s) before any "
                    f"return to user space; {len(bad)} such entries",
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
        if isinstance(split, str):
            return PropertyResult(
                "visible", PASS, f"{n} changes all read (layer 1 not checked per vCPU: {split})"
            )
        if not paired:
            return PropertyResult(
                "visible",
                NOT_JUDGED,
                f"the VMM read all {n} changes it was shown, but the kernel's returns to user "
                "space do not pair up with the VMM's exit records",
            )
        per = f" on any of {len(split)} vCPUs" if several else ""
        return PropertyResult(
            "visible", PASS, f"{n} changes all read; no guest entry{per} with a change unreported"
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
        extra = self._reports_over_edges(tr)
        if extra is not None:
            return extra
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

    def _reports_over_edges(self, tr: TestTrace) -> PropertyResult | None:
        """More vtimer rises reported than the timer made (layer 1, else layer 0):
        an edge reported twice, or one it never made. Fewer is visible's and
        truthful's to judge. The guest's IRQs cannot show it when the VMM's
        injection absorbs the extra report (late_inject)."""
        if "vtimer" not in self.timers:
            return None
        shown = [c for c in tr.changes("vtimer") if c.level == 1]
        kev = tr.kernel_events
        if kev:
            edges, where = kernel_trace.rises(kev), "the kernel's kvm_timer_update_irq"
        elif tr.hw is not None:
            edges, where = tr.hw.edges(), "QEMU's timer (arm_gt_*)"
        else:
            return None
        if len(shown) <= edges:
            return None
        return PropertyResult(
            "once",
            FAIL,
            f"the ABI reported {len(shown)} vtimer rises for {edges} "
            f"edge{'' if edges == 1 else 's'} of {where}",
            seq=shown[edges].first.seq,
            expected=f"{edges} (one report per edge)",
            observed=str(len(shown)),
        )

    def _own_notice(self, tr: TestTrace, c: Change) -> Exit | None:
        """The exit where change c got (or failed to get) a notice of its own.

        The notice must show c's level: a notice exit next that shows the
        line changed again is the next change's notice, not c's (a fall that
        rode on the guest's MMIO report, then the re-armed timer's rise).
        Exits the VMM's own signals caused are passed over: a signal pending
        ends KVM_RUN before the kernel's entry check, so the notice follows
        at the next KVM_RUN (v5 under sigalrm's 2 ms alarms).
        """
        if c.first.notice:
            return None
        nxt = tr.next_exit(c.first)
        while nxt is not None and nxt.signal and not nxt.notice:
            nxt = tr.next_exit(nxt)
        if (
            nxt is not None
            and nxt.notice
            and nxt.level is not None
            and (nxt.level >> TIMER_BITS[c.timer]) & 1 == c.level
        ):
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

    def prompt(self, tr: TestTrace) -> PropertyResult:
        """A rise reaches user space without waiting for an unrelated event: the
        guest run that ended with the notice was ended by the timer's own host
        interrupt (or, for a blocked vCPU, its background timer), not by the
        host's tick or another exit that happened to come (layer 1)."""
        kev = tr.kernel_events
        if not kev:
            return PropertyResult("prompt", NOT_JUDGED, tr.kernel_missing())
        split = tr.kernel_by_vcpu
        if isinstance(split, str):
            return PropertyResult("prompt", NOT_JUDGED, f"several vCPUs: {split}")
        traced = "irq_handler_entry" in tr.kernel_counts
        causes: list[tuple[kernel_trace.NoticeCause, Exit]] = []
        for vcpu, evs in split.items():
            exits = tr.by_vcpu()[vcpu]
            mine = kernel_trace.notice_causes(evs, self.timers, [e.level for e in exits], traced)
            if mine is None:
                return PropertyResult(
                    "prompt", NOT_JUDGED, f"the kernel's returns to user space on vcpu {vcpu} do "
                    "not pair up with the VMM's exit records" if traced else "the timers' host "
                    "interrupts were not traced (irq_handler_entry)",
                )  # fmt: skip
            causes += [(c, exits[c.exit_index]) for c in mine]
        if not causes:
            return PropertyResult("prompt", SKIP, "not exercised: no rise was reported")
        rise_at = _RiseTicks(tr)
        late, raced = [], 0
        for c, e in causes:
            if c.cause != "other":
                continue
            lag = rise_at.lag(c.timer, e.cnt)
            if lag is not None and lag <= COINCIDENT:
                raced += 1  # the run ended just as the timer fired: its interrupt lost a race
            else:
                late.append((c, e))
        # a single late rise among several is seen on healthy kernels now and then
        # (v5 rearm_n, 1 of 5, once in a loaded make test); the broken promise is
        # a test whose rises mostly wait for another exit
        if len(late) == len(causes) == 1 and not rise_at.known(late[0][0].timer):
            c, e = late[0]
            return PropertyResult(
                "prompt",
                NOT_JUDGED,
                f"the one {c.timer} rise reached user space at exit {e.n} by another exit "
                f"({c.ended_by or 'no kvm_exit'}); without layer 0 to time it, a race with "
                "its own interrupt cannot be ruled out",
            )
        if 2 * len(late) > len(causes):
            c, e = min(late, key=lambda ce: ce[1].seq)
            return PropertyResult(
                "prompt",
                FAIL,
                f"the {c.timer} rise reached user space at exit {e.n} on vcpu {e.vcpu} "
                f"({e.reason}) only "
                f"because the guest's run ended otherwise ({c.ended_by or 'no kvm_exit'}): "
                f"its own interrupt never came; {len(late)} of {len(causes)} rises so",
                seq=e.seq,
                expected="the timer's own host interrupt ending the run",
                observed=(c.ended_by.split(":")[0] or "?") + " exit",
            )
        own = sum(c.cause == "timer" for c, _ in causes)
        some = f"; {len(late)} waited for another exit" if late else ""
        some += f"; {raced} came with another exit within 1 ms of the fire" if raced else ""
        return PropertyResult(
            "prompt",
            PASS,
            f"{own} rises ended the guest's run by their own interrupt, "
            f"{len(causes) - own - len(late) - raced} came with no guest run between{some}",
        )

    def history_rule(self, tr: TestTrace) -> PropertyResult:
        """v5: user_timer_pending is the level as of the last forced notice. At every
        notice exit it equals the vtimer level being notified; every other exit
        leaves it as it was (Dall: "internal historical state only used by the
        kernel to figure out whether or not it should force an exit")."""
        if not self.history:
            return PropertyResult("history", NA, "not promised by this model (no history field)")
        logged = [e for e in tr.exits if e.hist is not None]
        if not logged:
            return PropertyResult(
                "history", NOT_JUDGED, "no exit record carries the history field (hist=)"
            )
        for vcpu, exits in tr.by_vcpu().items():
            prev = 0  # a new vCPU's history: nothing notified yet
            for e in exits:
                if e.hist is None:
                    continue
                want = (e.level or 0) & 1 if e.notice else prev
                if e.hist != want:
                    what = "the level notified" if e.notice else "the history before it"
                    return PropertyResult(
                        "history",
                        FAIL,
                        f"user_timer_pending on vcpu {vcpu} at exit {e.n} ({e.reason}"
                        f"{', notice' if e.notice else ''}) is not {what}",
                        seq=e.seq,
                        expected=str(want),
                        observed=str(e.hist),
                    )
                prev = e.hist
        notices = sum(1 for e in logged if e.notice)
        return PropertyResult(
            "history",
            PASS,
            f"user_timer_pending followed {notices} notices and stayed put on "
            f"{len(logged) - notices} other exits",
        )

    def dedicated_exit_rule(self, tr: TestTrace) -> PropertyResult:
        """v4: each exit of its own (KVM_EXIT_ARM_TIMER) carries the line, and
        reports a change: one dedicated exit per change, none that repeats."""
        if not self.dedicated_exit:
            return PropertyResult(
                "dedicated-exit", NA, "not promised by this model (no exit reason of its own)"
            )
        own = [e for e in tr.exits if e.reason == "ARM_TIMER"]
        if not own and self._changes(tr):
            return PropertyResult(
                "dedicated-exit", NOT_JUDGED, "no exit of its own (ARM_TIMER) in the records: "
                "the VMM read another ABI",
            )  # fmt: skip
        if not own:
            return PropertyResult("dedicated-exit", SKIP, "not exercised: the line never changed")
        for vcpu, exits in tr.by_vcpu().items():
            prev = 0
            for e in exits:
                if e.reason != "ARM_TIMER":
                    continue
                if e.level is None:
                    return PropertyResult(
                        "dedicated-exit", FAIL, f"exit {e.n} ({e.reason}) on vcpu {vcpu} "
                        "carries no level", seq=e.seq, expected="a level bitmap",
                        observed="none",
                    )  # fmt: skip
                if e.level == prev:
                    return PropertyResult(
                        "dedicated-exit", FAIL, f"exit {e.n} ({e.reason}) on vcpu {vcpu} "
                        "reports no change", seq=e.seq, expected=f"not {prev:x}",
                        observed=f"{e.level:x}",
                    )  # fmt: skip
                prev = e.level
        return PropertyResult(
            "dedicated-exit", PASS, f"{len(own)} exits of its own, each carrying a change"
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
        (layer 0, harness/judge/oracle.py); and the count of rises in the kernel's
        tracepoints (layer 1) and QEMU's trace."""
        for e in tr.ports("IRQ"):
            if not (e.value or 0) & 0xF:
                return PropertyResult(
                    "truthful", FAIL, "IRQ entry with no timer pending", seq=e.seq
                )
        verdict = oracle.judge(tr, tr.hw) if tr.hw is not None and "vtimer" in self.timers else None
        pverdict = (
            oracle.judge(tr, tr.hw, "ptimer")
            if tr.hw is not None and "ptimer" in self.timers
            else None
        )
        found = [v for v in (verdict, pverdict) if v is not None and v.mismatch is not None]
        if found:
            return _mismatch(min(found, key=lambda v: v.mismatch.exit.seq if v.mismatch else 0))
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
        pshown = sum(1 for c in tr.changes("ptimer") if c.level == 1)
        if pverdict is not None and not pverdict.why_not:
            pirq = kernel_trace.PTIMER_IRQ
            if pshown != tr.hw.prises or (kev and kernel_trace.rises(kev, pirq) != pshown):
                return PropertyResult(
                    "truthful", FAIL, "the ABI showed a different number of ptimer rises than "
                    "the timer produced", expected=f"{tr.hw.prises} (QEMU arm_gt_* timer 0)"
                    + (f", {kernel_trace.rises(kev, pirq)} (L1 tracepoints)" if kev else ""),
                    observed=str(pshown),
                )  # fmt: skip
            counts += f"; {pshown} ptimer rises shown, {tr.hw.prises} in QEMU's trace"
        return _truthful_at_exits(self, tr, verdict, counts, pverdict)

    def _kernel_storm(self, tr: TestTrace) -> PropertyResult | None:
        """progress from layer 1: the guest's in-kernel exits while the line is high;
        when the VMM had to drop kernel events, their count over the whole test."""
        if tr.kernel_events:
            split = tr.kernel_by_vcpu
            if isinstance(split, str):
                return None  # the kernel's exits not told apart per vCPU
            found = (_kernel_storm_in(tr, v, evs) for v, evs in split.items())
            return next((r for r in found if r is not None), None)
        n = tr.kernel_counts.get("kvm_exit_irq")
        if n is None or tr.begin is None or tr.end is None:
            return None
        span = tr.end.t_ns - tr.begin.t_ns
        if span >= _MIN_SPAN_NS and _irq_exit_rate(n, span) > MAX_IRQ_EXITS_PER_S:
            return PropertyResult(
                "progress",
                FAIL,
                f"in-kernel exit storm: {n} guest runs ended by a host interrupt in the "
                f"test's {span / 1e6:.0f} ms (kernel events over the VMM's bound: counted)",
                seq=tr.end.seq,
                expected=f"at most {MAX_IRQ_EXITS_PER_S} kvm_exit (IRQ) a second",
                observed=f"{_irq_exit_rate(n, span):.0f}/s",
            )
        return None

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
        for vcpu, exits in tr.by_vcpu().items():
            for first, span, end in _high_spans(exits):
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
                ms = (end.t_ns - first.t_ns) / 1e6
                signals = sum(1 for x in span if x.signal)
                what = (
                    f"line {first.level:x} high {ms:.0f} ms on vcpu {vcpu}: {len(beats)} "
                    f"heartbeats (loop {values[0] if values else 0}..{values[-1] if values else 0}"
                    f"), {len(idle)} exits not caused by the guest, {signals} signal exits"
                )
                if best is None or len(beats) > best[0]:
                    best = (len(beats), what)
        storm = self._kernel_storm(tr)
        if storm is not None:
            return storm
        if best is None or best[0] < min_beats:
            return PropertyResult(
                "progress",
                FAIL,
                "the line never stayed high across the guest's heartbeats",
                expected=f"at least {min_beats} heartbeats while high",
                observed=str(best[0] if best else 0),
            )
        if not tr.kernel_events and "kvm_exit_irq" not in tr.kernel_counts:
            return PropertyResult(
                "progress",
                NOT_JUDGED,
                f"{best[1]}; the guest's in-kernel exits are unknown: {tr.kernel_missing()}",
            )
        return PropertyResult("progress", PASS, best[1])


# host interrupts that end guest runs without reaching user space: the host's tick
# (HZ=250) makes ~250 a second; a timer PPI the host does not keep from re-firing
# while the line is high makes thousands
MAX_IRQ_EXITS_PER_S = 1000
_MIN_SPAN_NS = 20_000_000  # rates over shorter spans say little


# A rise whose notice came by another exit this soon after the timer fired (layer
# 0) raced its own interrupt to end the run, and is not late: on healthy kernels
# notices take 0.35 ms (median; 5 ms at most under load), a kernel that holds
# them for the host's tick (upstream-late) 0-4 ms, most of them over 1 ms.
COINCIDENT = oracle.DEFAULT_FREQ // 1000  # 1 ms of ticks


class _RiseTicks:
    """Layer 0's rises of each timer that the counter caused, in tick order: how
    long before an exit's cnt the last one came (O(log n) a look-up)."""

    def __init__(self, tr: TestTrace) -> None:
        hw = tr.hw if len(tr.vcpus()) <= 1 else None  # several vCPUs: not told apart here
        self._ticks = {
            "vtimer": _rise_ticks(hw.changes if hw else []),
            "ptimer": _rise_ticks(hw.pchanges if hw else []),
        }

    def known(self, timer: str) -> bool:
        """Layer 0 shows this timer's rises (the test has layer 0, one vCPU)."""
        return bool(self._ticks.get(timer))

    def lag(self, timer: str, cnt: int | None) -> int | None:
        ticks = self._ticks.get(timer, [])
        i = bisect.bisect_right(ticks, cnt) if cnt is not None else 0
        return None if i == 0 else cnt - ticks[i - 1]


def _rise_ticks(changes: list) -> list[int]:
    return sorted(c.tick for c in changes if c.level == 1 and c.tick is not None)


def _irq_exit_rate(n: int, span_ns: int) -> float:
    return n * 1e9 / span_ns


def _kernel_storm_in(
    tr: TestTrace, vcpu: int, evs: list[kernel_trace.KernelEvent]
) -> PropertyResult | None:
    """An in-kernel exit storm while the line stayed high (layer 1 kvm_exit IRQ)."""
    irq_exits = [e.t_ns for e in evs if e.event == "kvm_exit" and e.text.startswith("IRQ")]
    for first, _span, end in _high_spans(tr.by_vcpu()[vcpu]):
        a, b = first.t_ns, end.t_ns
        lo, hi = bisect.bisect_left(irq_exits, a), bisect.bisect_right(irq_exits, b)
        if b - a >= _MIN_SPAN_NS and _irq_exit_rate(hi - lo, b - a) > MAX_IRQ_EXITS_PER_S:
            return PropertyResult(
                "progress",
                FAIL,
                f"in-kernel exit storm while the line stayed high on vcpu {vcpu}: "
                f"{hi - lo} guest runs ended by a host interrupt in {(b - a) / 1e6:.0f} ms, "
                "none reaching user space",
                seq=first.seq,
                expected=f"at most {MAX_IRQ_EXITS_PER_S} kvm_exit (IRQ) a second",
                observed=f"{_irq_exit_rate(hi - lo, b - a):.0f}/s",
            )
    return None


def _high_spans(exits: list[Exit]) -> Iterator[tuple[Exit, list[Exit], Exit]]:
    """Each interval of one vCPU's exits in which the shown level stays high and
    unchanged: the exit that showed it, the exits after it while it holds (None
    levels included), and the last exit of the interval."""
    i = 0
    while i < len(exits):
        first = exits[i]
        if not first.level:
            i += 1
            continue
        j = i + 1
        while j < len(exits) and exits[j].level in (None, first.level):
            j += 1
        yield first, exits[i + 1 : j], exits[j - 1]
        i = j


def _mismatch(v: oracle.Verdict) -> PropertyResult:
    """truthful's failure at the first exit whose level the oracle does not allow."""
    x = v.mismatch
    assert x is not None
    why = x.cause.describe() if x.cause else "the timer's reset state"
    t = x.timer
    return PropertyResult(
        "truthful",
        FAIL,
        f"exit {x.exit.n} on vcpu {x.exit.vcpu} ({x.exit.reason}, cnt {x.exit.cnt or 0:x}) "
        f"showed {t} {x.shown}, the timer's output there was {x.level}, set by {why}; "
        f"{v.clock.describe() if v.clock else 'no change, no clock needed'}",
        seq=x.exit.seq,
        expected=f"{t} {x.level} (QEMU arm_gt_*)",
        observed=f"{t} {x.shown} (lvl={x.exit.level or 0:x})",
    )


def _truthful_at_exits(
    m: Model,
    tr: TestTrace,
    v: oracle.Verdict | None,
    counts: str,
    pv: oracle.Verdict | None = None,
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
    both = "ptimer" in m.timers and pv is not None and not pv.why_not
    if "ptimer" in m.timers and not both and tr.changes("ptimer"):
        why = pv.why_not if pv is not None else "layer 0 does not follow the ptimer"
        return PropertyResult(
            "truthful", NOT_JUDGED, f"vtimer right at all {v.judged} exits, but the ptimer the "
            f"ABI reported is not judged: {why} ({counts})",
        )  # fmt: skip
    clock = v.clock.describe() if v.clock else "no change, no clock needed"
    return PropertyResult(
        "truthful",
        PASS,
        f"{'vtimer and ptimer levels' if both else 'vtimer level'} right at all {v.judged} "
        f"exits against QEMU's timer output ({clock}); " + counts,
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
    shown = f", line {e.level:x}" if e.level is not None else ""
    return f"exit {e.n} ({e.reason}{', notice' if e.notice else ''}{shown})"
