"""truthful at every exit: the level shown against the architectural timer output
that layer 0 gives at the exit's counter (harness/judge/oracle.py), on the recorded runs
(one L1 CPU: upstream-every-exit; two: upstream-smp2)."""

from __future__ import annotations

import dataclasses
import re
import zlib

import pytest
from conftest import console, recorded_vms

from harness.inputs import guest_spec, revision
from harness.judge import oracle
from harness.judge.model import FAIL, NOT_JUDGED, PASS, Model
from harness.traces import qemu_trace, records
from harness.traces.test_trace import TestTrace

RUNS = {
    "upstream-every-exit": ("mmio_spin", "oneshot_wfi", "rearm_n", "ptimer_oneshot", "both_timers"),
    "upstream-smp2": ("two_vcpus", "oneshot_wfi"),
}


def _vms(run: str) -> list[qemu_trace.VmTimeline]:
    """The tests' VMs in RUNS order (the ABI probe's skipped)."""
    vms = recorded_vms(run)
    return [vms[t] for t in RUNS[run]]


def _trace(run: str, test: str, lines: list[str] | None = None) -> TestTrace:
    parsed = records.parse(lines if lines is not None else console(f"{run}.console.log"))
    tr = TestTrace.from_records(test, [r for r in parsed.records if r.test == test])
    tr.hw = recorded_vms(run)[test]
    return tr


def _exits(run: str, test: str) -> list:
    return _trace(run, test).exits


def _truthful(tr: TestTrace):
    return Model.of(revision.load("upstream")).judge("truthful", tr)


def _falsify(run: str, seq: int, lvl: str, cnt: int | None = None) -> list[str]:
    """The recorded console with exit record seq showing lvl (and read at cnt), its
    CRC recomputed (as tests/test_robustness.py's _record writes one)."""
    lines = console(f"{run}.console.log")
    for i, line in enumerate(lines):
        if line.startswith(f"@VT1 {seq} ") and " exit " in line:
            body = re.sub(r" lvl=\w+", f" lvl={lvl}", line.rsplit(" *", 1)[0])
            if cnt is not None:
                body = re.sub(r" cnt=\w+", f" cnt={cnt:x}", body)
            lines[i] = f"{body} *{zlib.crc32(body.encode()):08x}"
            return lines
    raise AssertionError(f"no exit record {seq}")


@pytest.mark.parametrize("run,test", [(r, t) for r, ts in RUNS.items() for t in ts])
def test_healthy_recordings_are_right_at_every_exit(run, test):
    tr = _trace(run, test)
    verdict = oracle.judge(tr, tr.hw)
    assert verdict.mismatch is None and not verdict.why_not, verdict
    assert verdict.judged == sum(e.level is not None for e in tr.exits)
    res = _truthful(tr)
    assert res.status == PASS, res.line()
    assert f"right at all {verdict.judged} exits" in res.detail


def test_the_clock_is_the_least_late_anchors():
    """Every anchor is the true offset less QEMU's latency: none lies far above the
    estimate (the held events' replay once paired stale ticks, 4 ms above), and a
    stray one above the rest does not move it."""
    for run in RUNS:
        for vm in _vms(run):
            clock = oracle.host_clock(vm)
            assert clock is not None and clock.spread <= oracle.MAX_SPREAD
            top = max(t - us * clock.freq // 1_000_000 for t, us in vm.anchors)
            assert top - clock.offset < 100 * clock.freq // 1_000_000  # < 100 us
    vm = _vms("upstream-every-exit")[2]
    before = oracle.host_clock(vm)
    tick, us = vm.anchors[-1]
    vm.anchors.append((tick + 4000 * 62_500 // 1000, us))  # a rise logged 4 ms before its tick
    after = oracle.host_clock(vm)
    assert abs(after.offset - before.offset) < 62 and after.step == before.step  # < 1 us


def test_a_falsified_rise_fails_naming_its_record():
    # mmio_spin's exit seq 6 (a heartbeat, long before the timer fired) made to show 1
    e = next(e for e in _exits("upstream-every-exit", "mmio_spin") if e.seq == 6)
    assert e.level == 0 and e.cnt is not None
    tr = _trace("upstream-every-exit", "mmio_spin", _falsify("upstream-every-exit", 6, "1"))
    res = _truthful(tr)
    assert res.status == FAIL and res.seq == 6, res.line()
    assert res.expected.startswith("vtimer 0") and res.observed.startswith("vtimer 1")
    assert f"exit {e.n} on vcpu 0" in res.detail and f"cnt {e.cnt:x}" in res.detail
    assert "reset state" in res.detail


def test_a_falsified_fall_fails_naming_its_record():
    """both_timers' INTR exit that shows both timers high (lvl 3), the vtimer made to show
    low: the vtimer had been high for milliseconds (its rise is settled), so the fall
    shown is a mismatch naming the rise. (A notice exit itself may show either level: it
    comes within IRQ_LAG or OUT_LAG of its rise.)"""
    run = "upstream-every-exit"
    e = next(e for e in _exits(run, "both_timers") if e.level == 3 and e.reason == "INTR")
    rises = [c for c in recorded_vms(run)["both_timers"].changes if c.level == 1]
    tr = _trace(run, "both_timers", _falsify(run, e.seq, "2"))
    res = _truthful(tr)
    assert res.status == FAIL and res.seq == e.seq, res.line()
    assert res.expected.startswith("vtimer 1") and res.observed == "vtimer 0 (lvl=2)"
    assert any(f"the rise at QEMU trace line {c.index} (by " in res.detail for c in rises)


def test_a_falsified_ptimer_fails_naming_its_record():
    """both_timers' MMIO exit after that notice (lvl 3) made to show the ptimer low, and a
    ptimer_oneshot heartbeat long before its rise made to show it high: truthful fails
    at that record, naming the ptimer, its counter value and QEMU's timer-0 change."""
    run = "upstream-every-exit"
    e = next(e for e in _exits(run, "both_timers") if e.level == 3 and e.reason == "MMIO")
    prises = [c for c in recorded_vms(run)["both_timers"].pchanges if c.level == 1]
    res = _truthful(_trace(run, "both_timers", _falsify(run, e.seq, "1")))
    assert res.status == FAIL and res.seq == e.seq, res.line()
    assert res.expected == "ptimer 1 (QEMU arm_gt_*)" and res.observed == "ptimer 0 (lvl=1)"
    assert f"exit {e.n} on vcpu 0 (MMIO, cnt {e.cnt:x}) showed ptimer 0" in res.detail
    assert any(f"the ptimer rise at QEMU trace line {c.index} (by " in res.detail for c in prises)
    exits = _exits(run, "ptimer_oneshot")
    rise = recorded_vms(run)["ptimer_oneshot"].pchanges[0]
    assert rise.level == 1 and rise.tick is not None  # the counter's, at CVAL
    early = next(x for x in exits if x.level == 0 and (x.cnt or 0) < rise.tick - 62_500)
    res = _truthful(_trace(run, "ptimer_oneshot", _falsify(run, early.seq, "2")))
    assert res.status == FAIL and res.seq == early.seq and "showed ptimer 1" in res.detail
    assert res.expected.startswith("ptimer 0") and "reset state" in res.detail
    # the vtimer bit alone (lvl 1 where the ptimer is low) is the vtimer's mismatch
    res = _truthful(_trace(run, "ptimer_oneshot", _falsify(run, early.seq, "1")))
    assert res.status == FAIL and res.expected.startswith("vtimer 0"), res.line()


def test_ptimer_not_judged_on_an_nvhe_host():
    """On nVHE KVM emulates the guest's ptimer (an hrtimer), which layer 0 cannot see:
    the ptimer's changes the ABI showed leave truthful not judged, with that reason."""
    tr = _trace("upstream-every-exit", "ptimer_oneshot")
    tr.hw.ptimer_why = "the host runs at EL1 (nVHE) ..."
    res = _truthful(tr)
    assert res.status == NOT_JUDGED and "ptimer the ABI reported is not judged" in res.detail
    assert "nVHE" in res.detail and "vtimer right at all 4 exits" in res.detail


def test_nvhe_recording_leaves_the_ptimer_not_judged():
    """A real nVHE boot (virt-gicv3-nvhe) of ptimer_oneshot: the vtimer is judged at every
    exit, the ptimer bit is not, with the reason."""
    tr = _trace("upstream-nvhe", "ptimer_oneshot")
    assert tr.hw.ptimer_why is not None and "nVHE" in tr.hw.ptimer_why
    assert oracle.judge(tr, tr.hw).why_not == ""
    res = _truthful(tr)
    assert res.status == NOT_JUDGED and "hrtimer" in res.detail, res.line()


def test_a_falsified_level_on_the_second_vcpu_of_two_cpus():
    # two_vcpus: vCPU 1's first WAKE exit, its line low, made to show 1
    e = next(e for e in _exits("upstream-smp2", "two_vcpus") if e.vcpu == 1 and e.port == "WAKE")
    assert e.level == 0
    tr = _trace("upstream-smp2", "two_vcpus", _falsify("upstream-smp2", e.seq, "1"))
    res = _truthful(tr)
    assert res.status == FAIL and res.seq == e.seq and "on vcpu 1" in res.detail, res.line()


def test_an_exit_at_its_own_change_may_go_either_way():
    """An exit 120 us after a rise the counter caused while the vCPU ran may still show
    the old level (KVM learns it from the timer's interrupt: IRQ_LAG): rearm_n's first
    INTR exit, read 120 us after its rise's tick, made to show 0, is no mismatch; read
    when it was (2 ms after), it is."""
    run = "upstream-every-exit"
    e = next(e for e in _exits(run, "rearm_n") if e.reason == "INTR" and e.level == 1)
    rise = recorded_vms(run)["rearm_n"].changes[0]
    assert rise.level == 1 and rise.tick is not None and not rise.while_out
    soon = rise.tick + 120 * 62_500 // 1000
    tr = _trace(run, "rearm_n", _falsify(run, e.seq, "0", cnt=soon))
    verdict = oracle.judge(tr, tr.hw)
    assert verdict.mismatch is None and not verdict.why_not


def test_not_judged_without_layer_0():
    tr = _trace("upstream-every-exit", "rearm_n")
    tr.hw, tr.hw_missing = None, "the machine's QEMU runs without MTTCG"
    res = _truthful(tr)
    assert res.status == NOT_JUDGED and "without MTTCG" in res.detail


def test_not_judged_when_layer_0_dropped_changes():
    tr = _trace("upstream-every-exit", "rearm_n")
    tr.hw.dropped = 3
    res = _truthful(tr)
    assert res.status == NOT_JUDGED and "dropped 3" in res.detail


def test_ptimer_not_judged_when_layer_0_dropped_its_changes():
    tr = _trace("upstream-every-exit", "ptimer_oneshot")
    tr.hw.pdropped = 3
    res = _truthful(tr)
    assert res.status == NOT_JUDGED and "dropped 3 of the VM's ptimer changes" in res.detail


def test_not_judged_without_a_clock_anchor():
    tr = _trace("upstream-every-exit", "rearm_n")
    tr.hw.anchors.clear()
    res = _truthful(tr)
    assert res.status == NOT_JUDGED and "no clock anchor" in res.detail


def test_not_judged_when_the_clock_stepped():
    """A VM stopped for 200 ms (QMP stop/cont): the counter falls behind host time,
    every later anchor is 200 ms lower. One offset would misplace half the changes."""
    tr = _trace("upstream-every-exit", "rearm_n")
    half = len(tr.hw.anchors) // 2
    pause = 200 * 62_500
    tr.hw.anchors[half:] = [(t - pause, us) for t, us in tr.hw.anchors[half:]]
    res = _truthful(tr)
    assert res.status == NOT_JUDGED and "stepped by" in res.detail, res.line()


def test_not_judged_when_the_trace_ends_with_a_vcpu_loaded():
    tr = _trace("upstream-every-exit", "rearm_n")
    last = tr.exits[-1]
    tr.hw.parked.clear()  # no put seen: the vCPU still loaded where the trace ends
    tr.hw.trace = qemu_trace.Progress(tr.hw.changes[-1].host_ts)
    assert last.cnt is not None
    res = _truthful(tr)
    assert res.status == NOT_JUDGED and "trace read so far ends" in res.detail, res.line()


def test_the_vcpus_are_matched_by_their_puts():
    tr = _trace("upstream-smp2", "two_vcpus")
    clock = oracle.host_clock(tr.hw)
    mapping = oracle._vcpu_map(tr, tr.hw, clock)
    assert isinstance(mapping, dict) and sorted(mapping.values()) == [0, 1]
    swapped = dataclasses.replace(tr.hw, puts=tr.hw.puts[::-1])
    assert oracle._vcpu_map(tr, swapped, clock) == {j: 1 - v for j, v in mapping.items()}


def test_evaluate_reports_the_mismatch_as_the_test_failure():
    from harness.judge.verdict import FAILED, evaluate

    e = next(e for e in _exits("upstream-every-exit", "mmio_spin") if e.seq == 6)
    lines = _falsify("upstream-every-exit", 6, "1")
    recs = [r for r in records.parse(lines).records if r.test == "mmio_spin"]
    res = evaluate(
        guest_spec.load_all()["mmio_spin"],
        recs,
        [],
        Model.of(revision.load("upstream")),
        _vms("upstream-every-exit")[0],
    )
    assert res.status == FAILED
    assert (
        res.reasons[0].startswith(f"truthful: exit {e.n} on vcpu 0") and "seq 6" in res.reasons[0]
    )
