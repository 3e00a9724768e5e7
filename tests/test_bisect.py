"""harness bisect's predicate (harness/runs/bisect.py): a step's run judged good, bad
or skip; the real bisection is in test_bisect_boot.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.judge.property import PropertyResult
from harness.judge.verdict import TestResult
from harness.runs import bisect
from harness.runs.run import RunOutcome


def _out(*results: TestResult, booted: bool = True) -> RunOutcome:
    return RunOutcome(Path("run"), list(results), object() if booted else None, 0)


def _t(name: str, status: str, **props: str) -> TestResult:
    ps = [PropertyResult(p, s, f"{p} {s}") for p, s in props.items()]
    return TestResult(name, status, [f"{name} is {status}"], ps)


def test_a_step_is_good_bad_or_skipped_by_its_tests():
    assert bisect.judge(_out(_t("a", "PASS"), _t("b", "SKIP")), [], None)[0] == bisect.GOOD
    assert bisect.judge(_out(_t("a", "PASS"), _t("b", "FAIL")), [], None)[0] == bisect.BAD
    assert bisect.judge(_out(_t("a", "PASS"), _t("b", "FAIL")), ["a"], None)[0] == bisect.GOOD
    assert bisect.judge(_out(_t("a", "ERROR")), [], None)[0] == bisect.SKIP
    assert bisect.judge(_out(_t("a", "MISS")), [], None)[0] == bisect.SKIP
    code, why = bisect.judge(_out(_t("a", "ERROR"), booted=False), [], None)
    assert code == bisect.SKIP and "did not build" in why


def test_a_step_judged_by_one_property():
    out = _out(_t("w", "FAIL", wake="fail", once="pass"))
    code, why = bisect.judge(out, ["w"], "wake")
    assert code == bisect.BAD and why.startswith("w: wake:")
    assert bisect.judge(_out(_t("w", "FAIL", wake="pass", once="fail")), [], "wake")[0] == 0
    assert bisect.judge(_out(_t("w", "PASS", once="pass")), [], "wake")[0] == bisect.SKIP


def test_bisect_needs_a_git_tree_and_known_commits(tmp_path):
    with pytest.raises(HarnessError, match="git work tree"):
        bisect.run(bisect.BisectSpec(str(tmp_path), "a", "b"), base=tmp_path / "r")
