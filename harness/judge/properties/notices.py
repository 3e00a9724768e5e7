"""coalesce and eintr-suffices: whether a change rides on another exit, under every model
(judged where promised, n/a with what was measured elsewhere)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.judge.property import (
    FAIL,
    NA,
    PASS,
    PropertyResult,
    changes,
    describe,
)
from harness.traces.test_trace import TIMER_BITS, Change, Exit, TestTrace

if TYPE_CHECKING:
    from harness.judge.model import Model


def _own_notice(m: Model, tr: TestTrace, c: Change) -> Exit | None:
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


def _rode(m: Model, tr: TestTrace) -> tuple[list[Change], list[tuple[Change, Exit]]]:
    """The changes, and those that rode on another exit with no notice exit of
    their own (with the exit they rode on)."""
    found = changes(m, tr)
    rode = [(c, bad) for c in found if (bad := _own_notice(m, tr, c)) is not None]
    return found, rode


def coalesce_rule(m: Model, tr: TestTrace) -> PropertyResult:
    """Does each change get a notice exit of its own, or may it ride on another
    exit (an MMIO exit) with none? Measured under every model; judged where the
    model promises its own notice."""
    changes, rode = _rode(m, tr)
    seen = f"{len(rode)} of {len(changes)} changes rode on other exits with no notice of their own"
    if m.coalesce:
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
            observed=describe(tr.next_exit(bad)),
        )
    return PropertyResult(
        "coalesce", PASS, f"each of {len(changes)} changes had a notice exit of its own"
    )


def eintr_rule(m: Model, tr: TestTrace) -> PropertyResult:
    """Would a VMM that reads the line only on the ABI's notice exits see every
    change before the guest runs on? Measured under every model; judged where
    the model promises it."""
    found = changes(m, tr)
    missed = [c for c in found if c.first_notice is None or _own_notice(m, tr, c) is not None]
    seen = f"{len(missed)} of {len(found)} changes reached no notice exit before the guest ran on"
    if not m.eintr_suffices:
        return PropertyResult(
            "eintr-suffices",
            NA,
            f"not promised by this model (the VMM must read every exit); observed: {seen}",
            observed=f"{len(missed)}/{len(found)}",
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
            observed=describe(tr.next_exit(c.first)),
        )
    return PropertyResult(
        "eintr-suffices", PASS, f"each of {len(found)} changes came with a notice exit"
    )
