"""Failed guest checks with their values (VT_CHECK_<OP>), decoded and shown in verdicts.

upstream-nointr-checks.console.log.gz is a real boot of the negative control
upstream-nointr (its guests' timer IRQs never come), recorded with
  python -m harness boot-test --rev upstream-nointr --test oneshot_tval --test rearm_n
from this tree's guest_tests/. Its FAIL records name lines of oneshot_tval.c and
runtime/runtime.c: when those lines move, re-record it.
"""

from __future__ import annotations

import dataclasses
import gzip
import re

from conftest import DATA, console

from harness.core import repo
from harness.inputs import guest_spec, revision
from harness.judge import guest_check
from harness.judge.guest_check import GuestCheck, check_hash, source_text
from harness.judge.model import FAIL, Model
from harness.judge.verdict import FAILED, evaluate
from harness.traces import records

NOINTR = "upstream-nointr-checks.console.log.gz"


def _lines(log: str) -> list[str]:
    if log.endswith(".gz"):
        with gzip.open(DATA / log, "rt", errors="replace") as f:
            return f.read().splitlines()
    return console(log)


def _judge(log: str, test: str, rev: str, spec=None):
    parsed = records.parse(_lines(log))
    spec = spec or guest_spec.load_all()[test]
    recs = [r for r in parsed.records if r.test == test]
    return evaluate(spec, recs, parsed.problems_for(test), Model.of(revision.load(rev)))


def _exit_code_reason(res) -> str:
    (line,) = [r for r in res.reasons if r.startswith("exit_code:")]
    return line


def test_failed_check_in_the_test_shows_its_values_after_the_broken_promise():
    res = _judge(NOINTR, "oneshot_tval", "upstream-nointr")
    assert res.status == FAILED
    assert _exit_code_reason(res) == (
        "exit_code: expected 0, observed 1 (guest check at line 32 of oneshot_tval.c: "
        "vt_irqs >= 1 failed: expected >= 1, observed 0)"
    )
    # the property the kernel broke comes first, the guest's check is its symptom
    failed = [p for p in res.properties if p.status == FAIL]
    assert failed and res.reasons[0] == failed[0].line()
    assert res.reasons.index(_exit_code_reason(res)) > len(failed)


def test_failed_check_in_the_runtime_names_runtime_c():
    res = _judge(NOINTR, "rearm_n", "upstream-nointr")
    assert res.status == FAILED
    assert _exit_code_reason(res) == (
        "exit_code: expected 0, observed 1 (guest check at line 241 of runtime/runtime.c: "
        "vt_irqs >= n failed: expected >= 5, observed 0)"
    )
    # the check's value is the guest's count when it checked; an IRQ came after it
    assert "irqs: expected 5, observed 1" in res.reasons


def test_the_guest_and_the_harness_hash_a_check_alike():
    fails = [r for r in records.parse(_lines(NOINTR)).records if r.get("port") == "FAIL"]
    hashes = {r.test: int(r.get("val"), 16) >> 48 for r in fails}
    assert hashes == {"oneshot_tval": check_hash("vt_irqs, 1"), "rearm_n": check_hash("vt_irqs, n")}


def test_records_from_before_the_values_keep_the_line_only():
    # recorded with plain VT_CHECKs (an upstream eintr-only boot of an older VMM and
    # guest runtime): bits 40-63 of FAIL's value are zero
    res = _judge("upstream-plain-checks.console.log.gz", "rearm_n", "upstream")
    assert _exit_code_reason(res) == (
        "exit_code: expected 0, observed 1 (guest check at line 218 of runtime/runtime.c)"
    )


def test_a_line_that_holds_another_check_now_is_not_named(tmp_path):
    spec = guest_spec.load_all()["oneshot_tval"]
    moved = tmp_path / "oneshot_tval.c"
    moved.write_text("/* a line more */\n" + spec.source.read_text())
    res = _judge(NOINTR, "oneshot_tval", "upstream-nointr", dataclasses.replace(spec, source=moved))
    assert _exit_code_reason(res) == (
        "exit_code: expected 0, observed 1 (guest check at line 32 of oneshot_tval.c: "
        "VT_CHECK_GE failed (the line holds another check now): expected >= 1, observed 0)"
    )


def test_source_text_finds_the_check_with_the_guests_hash():
    lines = [
        "\tVT_CHECK(a);  VT_CHECK(timer_istatus(0) ||   after < cval);",
        "\tVT_CHECK_EQ(vt_irq(0).pending, 1U << VT_TIMER_VIRT); /* x */",
        "\tVT_CHECK_LT(f(x, y),",
        "\t\t    LIMIT);",
    ]
    plain = check_hash("timer_istatus(0) || after < cval")
    assert source_text(lines, 1, 0, plain) == "timer_istatus(0) || after < cval"
    assert source_text(lines, 1, 0, check_hash("a")) == "a"
    eq = check_hash("vt_irq(0).pending, 1U << VT_TIMER_VIRT")
    assert source_text(lines, 2, 1, eq) == "vt_irq(0).pending == 1U << VT_TIMER_VIRT"
    assert source_text(lines, 2, 6, eq) is None  # the guest said GE: not this check
    assert source_text(lines, 2, 0, eq) is None
    # the check may run on over the next lines, as the preprocessor joins them
    assert source_text(lines, 3, 3, check_hash("f(x, y), LIMIT")) == "f(x, y) < LIMIT"
    assert source_text(lines, 4, 3, check_hash("f(x, y), LIMIT")) is None
    assert source_text(lines, 9, 0, plain) is None


def test_values_are_shown_in_one_base_that_fits():
    at = dict(source="t.c", line=7, text="x")
    assert GuestCheck(cmp=1, expected=3, observed=2, **at).describe() == (
        "guest check at line 7 of t.c: x failed: expected 3, observed 2"
    )
    # counter values in hex, as the records show cnt; both sides alike
    big = GuestCheck(cmp=6, expected=0x243BAB88, observed=5, **at)
    assert big.describe().endswith("expected >= 0x243bab88, observed 0x5")
    # a signed comparison (the guest says so) shows negative values
    neg = GuestCheck(cmp=4, expected=0, observed=-3, **at)
    assert neg.describe().endswith("expected <= 0, observed -3")
    lost = GuestCheck(cmp=2, **at)
    assert lost.describe().endswith("x failed: its values were not recorded")
    assert GuestCheck("t.c", 7, 0, text="ok()").describe().endswith(": ok() failed")
    assert GuestCheck("t.c", 7, None).describe() == "guest check at line 7 of t.c"


def test_comparisons_match_the_runtimes_macros():
    """VT_CMPS in vt_ports.h (what the harness decodes) and guest.h's VT_CHECK_<OP>."""
    cmps = guest_check.comparisons()
    assert sorted(name for name, _ in cmps.values()) == ["EQ", "GE", "GT", "LE", "LT", "NE"]
    header = (repo.GUEST_TESTS / "runtime" / "guest.h").read_text()
    for name, op in cmps.values():
        m = re.search(rf"#define VT_CHECK_{name}\(observed, expected\) \\\n\t(.*)", header)
        assert m, name
        assert m.group(1).startswith(f"_VT_CHECK_CMP(observed, {op}, expected, VT_CMP_{name},")
