"""The rules of one revision's ABI: v5's history (user_timer_pending), v4's
dedicated exit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.judge.property import (
    FAIL,
    NA,
    NOT_JUDGED,
    PASS,
    SKIP,
    PropertyResult,
    changes,
)
from harness.traces.test_trace import TestTrace

if TYPE_CHECKING:
    from harness.judge.model import Model


def history_rule(m: Model, tr: TestTrace) -> PropertyResult:
    """v5: user_timer_pending is the level as of the last forced notice. At every
    notice exit it equals the vtimer level being notified; every other exit
    leaves it as it was (Dall: "internal historical state only used by the
    kernel to figure out whether or not it should force an exit")."""
    if not m.history:
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


def dedicated_exit_rule(m: Model, tr: TestTrace) -> PropertyResult:
    """v4: each exit of its own (KVM_EXIT_ARM_TIMER) carries the line, and
    reports a change: one dedicated exit per change, none that repeats."""
    if not m.dedicated_exit:
        return PropertyResult(
            "dedicated-exit", NA, "not promised by this model (no exit reason of its own)"
        )
    own = [e for e in tr.exits if e.reason == "ARM_TIMER"]
    if not own and changes(m, tr):
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
