"""The nightly guest-test suite, judged from a recorded real boot (upstream, every-exit)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from conftest import console

from harness.build.initramfs import SuitePlan
from harness.core import repo
from harness.inputs import guest_spec, revision
from harness.judge.model import Model
from harness.judge.verdict import FAILED, PASSED, SKIPPED, evaluate
from harness.runs.run import Run, RunOptions
from harness.traces import records
from harness.traces.test_trace import TestTrace

LOG = "upstream-suite.console.log"


@pytest.fixture(scope="module")
def parsed() -> records.Parsed:
    return records.parse(console(LOG))


def _recs(parsed: records.Parsed, test: str) -> list[records.Record]:
    return [r for r in parsed.records if r.test == test]


def _judge(parsed, test: str, spec=None, recs=None):
    spec = spec or guest_spec.load_all()[test]
    recs = recs if recs is not None else _recs(parsed, test)
    return evaluate(spec, recs, parsed.problems_for(test), Model.of(revision.load("upstream")))


def _trace(parsed, test: str) -> TestTrace:
    return TestTrace.from_records(test, _recs(parsed, test))


def _prop(res, name: str):
    return next(p for p in res.properties if p.prop == name)


def test_every_suite_test_ran_and_passes(parsed):
    assert parsed.problems == []
    specs = {t.name: t for t in guest_spec.select(guest_spec.load_all(), [])}
    ran = {r.test for r in parsed.records if r.kind == "begin"}
    assert ran == set(specs)
    for name in specs:
        res = _judge(parsed, name)
        assert res.status == PASSED, (name, res.reasons)


def test_spec_counts_hold_exactly(parsed):
    for spec in guest_spec.select(guest_spec.load_all(), []):
        name = spec.name
        tr = _trace(parsed, name)
        assert len(tr.ports("IRQ")) == spec.expect.irqs, name
        for timer, n in spec.expect.edges.items():
            assert tr.edges(timer) == n, (name, timer)


def test_a_wrong_expectation_in_a_spec_file_fails_the_test(parsed, tmp_path: Path):
    for name in ("never_inject", "two_vcpus"):
        shutil.copy(repo.GUEST_TESTS / f"{name}.c", tmp_path)
        shutil.copy(repo.GUEST_TESTS / f"{name}.yaml", tmp_path)
    path = tmp_path / "never_inject.yaml"
    path.write_text(path.read_text().replace("irqs: 0", "irqs: 1"))
    res = _judge(parsed, "never_inject", spec=guest_spec.load(path))
    assert res.status == FAILED
    assert "irqs: expected 1, observed 0" in res.reasons

    path = tmp_path / "two_vcpus.yaml"
    path.write_text(path.read_text().replace("edges: {vtimer: 5}", "edges: {vtimer: 4}"))
    res = _judge(parsed, "two_vcpus", spec=guest_spec.load(path))
    assert res.status == FAILED
    assert res.reasons == ["edges.vtimer: expected 4, observed 5"]


def test_cval_in_the_far_future_never_shows_the_line_high(parsed):
    tr = _trace(parsed, "cval_future")
    assert tr.exits and all(e.level == 0 for e in tr.exits)
    assert len(tr.ports("HBEAT")) >= 3  # exits whose level user space did read
    assert tr.injections == []


def test_the_line_follows_imask_one_edge_per_toggle(parsed):
    tr = _trace(parsed, "imask_toggle")
    rises = [c for c in tr.changes("vtimer") if c.level == 1]
    marks = tr.ports("MARK")
    assert [m.value for m in marks] == [0, 1, 2, 3]
    # each rise comes after its toggle's mark and before the next one
    for rise, mark, nxt in zip(rises, marks, [*marks[1:], None], strict=True):
        assert rise.first.seq > mark.seq
        assert nxt is None or rise.first.seq < nxt.seq
    levels = [r.get("level") for r in tr.injections]
    assert levels == ["1", "0"] * 4


def test_enable_cleared_while_pending_drops_the_line_before_the_guest_unmasks(parsed):
    tr = _trace(parsed, "enable_clear")
    high, low = tr.ports("MARK")
    assert (high.value, high.level, low.value, low.level) == (1, 1, 2, 0)
    drop = next(r for r in tr.injections if r.get("level") == "0")
    assert high.seq < drop.seq < tr.ports("EXIT")[0].seq
    assert tr.ports("IRQ") == [] and tr.ports("SPURIOUS") == []


def test_both_timers_report_their_own_bits(parsed):
    tr = _trace(parsed, "both_timers")
    assert tr.edges("vtimer") == 2 and tr.edges("ptimer") == 2
    assert [(e.value or 0) & 0xF for e in tr.ports("IRQ")] == [1, 2, 3]
    assert any(e.level == 3 for e in tr.exits)  # both high at once
    rises = [r for r in tr.injections if r.get("level") == "1"]
    assert len(rises) == 3  # one line: both high at once is one rise


def test_ptimer_test_shows_only_the_ptimer_bit(parsed):
    tr = _trace(parsed, "ptimer_oneshot")
    assert {e.level for e in tr.exits} == {0, 2}
    assert tr.edges("ptimer") == 1 and tr.edges("vtimer") == 0


def test_ptimer_tests_are_skipped_where_the_abi_has_no_ptimer(tmp_path):
    run = Run(RunOptions(revision="v5", results_base=tmp_path), say=lambda _: None)
    skipped = {r.name for r in run.session.results() if r.status == SKIPPED}
    assert skipped == {"ptimer_oneshot", "both_timers"}
    assert "ptimer_oneshot" not in {s.name for s in run.runnable}


def test_late_injection_is_held_for_the_spec_delay_while_the_guest_runs(parsed):
    tr = _trace(parsed, "late_inject")
    spec = guest_spec.load_all()["late_inject"]
    hold = next(r for r in tr.records if r.kind == "hold")
    inject = next(r for r in tr.injections if r.get("level") == "1")
    assert hold.get("why") == "late" and hold.int("delay_ms") == spec.vmm.inject_delay_ms
    assert inject.int("held_us") >= spec.vmm.inject_delay_ms * 1000
    held = [e for e in tr.exits if hold.seq < e.seq < inject.seq]
    assert all(e.level == 1 for e in held)
    assert len([e for e in held if e.port == "HBEAT"]) >= 3  # the guest ran on
    progress = _prop(_judge(parsed, "late_inject"), "progress")
    assert progress.status == "pass"


def test_never_injected_the_guest_times_out_by_itself(parsed):
    tr = _trace(parsed, "never_inject")
    assert [r.get("level") for r in tr.records if r.kind == "hold"] == ["1", "0"]
    assert tr.injections == [] and tr.ports("IRQ") == []
    assert tr.status == "ok" and tr.guest_exit_code == 0
    assert tr.edges("vtimer") == 1  # read, not injected


def test_masked_guest_makes_progress_with_a_bounded_exit_rate(parsed):
    res = _judge(parsed, "masked_progress")
    progress = _prop(res, "progress")
    assert progress.status == "pass"
    assert "0 exits not caused by the guest" in progress.detail
    tr = _trace(parsed, "masked_progress")
    beats = [e.value for e in tr.ports("HBEAT")]
    assert len(beats) >= 10 and beats == sorted(set(beats))


def _with_storm(recs: list[records.Record], n: int) -> list[records.Record]:
    """recs with n notice exits that show the high line unchanged after its first heartbeat."""
    beat = next(r for r in recs if r.kind == "exit" and r.get("port") == "HBEAT")
    storm = []
    for k in range(n):
        fields = {key: v for key, v in beat.fields.items() if key not in ("port", "val")} | {
            "r": "INTR",
            "err": "4",
            "ntc": "1",
            "n": str(beat.int("n") * 1000 + k),
        }
        storm.append(dataclasses.replace(beat, fields=fields))
    i = recs.index(beat) + 1
    return recs[:i] + storm + recs[i:]


def test_an_exit_storm_while_the_line_is_high_fails_progress(parsed):
    recs = _recs(parsed, "masked_progress")
    ok = _prop(_judge(parsed, "masked_progress", recs=_with_storm(recs, 2)), "progress")
    assert ok.status == "pass"  # a couple is tolerated
    res = _judge(parsed, "masked_progress", recs=_with_storm(recs, 50))
    progress = _prop(res, "progress")
    assert res.status == FAILED and progress.status == "fail"
    assert "exit storm" in progress.detail and progress.observed == "50"


def test_a_stuck_guest_fails_progress(parsed):
    recs = [
        dataclasses.replace(r, fields=r.fields | {"val": "0x7"})
        if r.kind == "exit" and r.get("port") == "HBEAT"
        else r
        for r in _recs(parsed, "masked_progress")
    ]
    progress = _prop(_judge(parsed, "masked_progress", recs=recs), "progress")
    assert progress.status == "fail" and "did not advance" in progress.detail


def test_save_restore_keeps_the_level_and_hides_the_downtime(parsed):
    tr = _trace(parsed, "save_restore")
    saves = [r for r in tr.records if r.kind == "save"]
    restores = [r for r in tr.records if r.kind == "restore"]
    assert len(saves) == len(restores) == 2
    for s, r in zip(saves, restores, strict=True):
        assert r.get("ctl") == s.get("ctl") and r.get("cval") == s.get("cval")
        ticks = int(r.get("cnt"), 16) - int(s.get("cnt"), 16)
        assert 0 <= ticks < 62_500 * 30  # well under the 30 ms downtime at 62.5 MHz
        assert r.t_ns - s.t_ns >= 30_000_000
    # phase 1: pending across the save (CTL shows ISTATUS), the level stays 1
    assert int(saves[0].get("ctl"), 16) == 0x5 and saves[0].get("line") == "1"
    around = [e for e in tr.exits if e.port in ("MARK", "SAVE")][:3]
    assert [e.level for e in around] == [1, 1, 1]
    assert tr.edges("vtimer") == 2


def test_signal_exits_are_told_apart_from_timer_exits(parsed):
    tr = _trace(parsed, "sigalrm")
    assert guest_spec.load_all()["sigalrm"].vmm.alarm_us == 2000
    signals = [e for e in tr.exits if e.sig]
    assert len(signals) >= 3
    assert all(e.reason == "INTR" and e.errno == 4 and e.signal for e in signals)
    for e in signals:  # a pure signal exit shows the level as the exit before it did
        prev = next(x for x in reversed(tr.exits) if x.n == e.n - 1)
        changed = [c for c in tr.changes("vtimer") if c.first is e]
        assert e.level == prev.level or changed
    assert tr.edges("vtimer") == 4 and len(tr.ports("IRQ")) == 4
    # no other test's VMM sent any signal
    assert not any(e.sig for e in _trace(parsed, "rearm_n").exits)


def test_two_vcpus_keep_their_lines_apart(parsed):
    tr = _trace(parsed, "two_vcpus")
    assert tr.vcpus() == [0, 1]
    per_vcpu = {v: [c for c in tr.changes("vtimer") if c.vcpu == v and c.level] for v in (0, 1)}
    assert {v: len(c) for v, c in per_vcpu.items()} == {0: 3, 1: 2}
    for v in (0, 1):
        rises = [r for r in tr.injections if r.int("vcpu") == v and r.get("level") == "1"]
        assert len(rises) == len(tr.ports("IRQ", vcpu=v)) == (3, 2)[v]
    # each vCPU reported its own index and count
    assert sorted(e.value for e in tr.ports("VALUE")) == [0x003, 0x102]
    assert _prop(_judge(parsed, "two_vcpus"), "wake").status == "pass"
    # without the kernel layer, who woke the vCPUs is not shown: not judged, never pass
    no_kernel = [r for r in _recs(parsed, "two_vcpus") if r.kind not in ("kt", "ktsum")]
    wake = _prop(_judge(parsed, "two_vcpus", recs=no_kernel), "wake")
    assert wake.status == "not-judged" and "no kernel events" in wake.detail


def test_manifest_carries_the_vmm_options():
    specs = guest_spec.load_all()
    manifest = SuitePlan("upstream", "every-exit", tuple(specs.values())).manifest()
    lines = {line.split()[1]: line for line in manifest.splitlines() if line.startswith("test ")}
    assert lines["late_inject"].endswith("inject=late inject_delay_ms=40")
    assert lines["never_inject"].endswith("inject=never")
    assert lines["sigalrm"].endswith("alarm_us=2000")
    assert lines["save_restore"].endswith("save_restore=1 downtime_ms=30")
    assert "vcpus=2 " in lines["two_vcpus"]
    assert lines["rearm_n"].endswith("timeout_ms=30000")  # defaults are left out
