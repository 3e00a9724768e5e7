"""truthful at every exit: the level shown against the architectural timer output
that layer 0 gives at the exit's counter (harness/judge/oracle.py), on the recorded runs
(one L1 CPU: upstream-every-exit; two: upstream-smp2)."""

from __future__ import annotations

import dataclasses
import json
import re
import zlib

import pytest
from conftest import DATA, console

from harness.inputs import guest_spec, revision
from harness.judge import oracle
from harness.judge.model import FAIL, NOT_JUDGED, PASS, Model
from harness.traces import qemu_trace, records
from harness.traces.test_trace import TestTrace

RUNS = {
    "upstream-every-exit": ("mmio_spin", "oneshot_wfi", "rearm_n"),
    "upstream-smp2": ("two_vcpus", "oneshot_wfi"),
}


def _threads(run: str) -> dict[int, int] | None:
    path = DATA / f"{run}.cpu-threads.json"
    if not path.exists():
        return None
    return {int(t): c for t, c in json.loads(path.read_text()).items()}


def _vms(run: str) -> list[qemu_trace.VmTimeline]:
    with open(DATA / f"{run}.qemu-trace.log") as f:
        return qemu_trace.timelines(qemu_trace.parse(f, _threads(run)))


def _trace(run: str, test: str, lines: list[str] | None = None) -> TestTrace:
    parsed = records.parse(lines if lines is not None else console(f"{run}.console.log"))
    tr = TestTrace.from_records(test, [r for r in parsed.records if r.test == test])
    tr.hw = _vms(run)[RUNS[run].index(test)]
    return tr


def _truthful(tr: TestTrace):
    return Model.of(revision.load("upstream")).truthful(tr)


def _falsify(run: str, seq: int, lvl: str) -> list[str]:
    """The recorded console with exit record seq showing lvl, its CRC recomputed
    (as tests/test_robustness.py's _record writes one)."""
    lines = console(f"{run}.console.log")
    for i, line in enumerate(lines):
        if line.startswith(f"@VT1 {seq} ") and " exit " in line:
            body = re.sub(r" lvl=\w+", f" lvl={lvl}", line.rsplit(" *", 1)[0])
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
    tr = _trace("upstream-every-exit", "mmio_spin", _falsify("upstream-every-exit", 6, "1"))
    res = _truthful(tr)
    assert res.status == FAIL and res.seq == 6, res.line()
    assert res.expected.startswith("vtimer 0") and res.observed.startswith("vtimer 1")
    assert "exit 5 on vcpu 0" in res.detail and "cnt 1d8f9ed" in res.detail
    assert "reset state" in res.detail


def test_a_falsified_fall_fails_naming_its_record():
    # oneshot_wfi's INTR exit (seq 195) came 4 ms after the rise (at its exact tick, while
    # the vCPU slept) and 0.45 ms before the guest masked it: made to show 0
    tr = _trace("upstream-every-exit", "oneshot_wfi", _falsify("upstream-every-exit", 195, "0"))
    res = _truthful(tr)
    assert res.status == FAIL and res.seq == 195, res.line()
    assert res.expected.startswith("vtimer 1") and res.observed.startswith("vtimer 0")
    assert "the rise at QEMU trace line 1468 (by the counter, while the vCPU was out" in (
        res.detail
    )


def test_a_falsified_level_on_the_second_vcpu_of_two_cpus():
    # two_vcpus: vCPU 1's WAKE exit (seq 12), its line low, made to show 1
    tr = _trace("upstream-smp2", "two_vcpus", _falsify("upstream-smp2", 12, "1"))
    res = _truthful(tr)
    assert res.status == FAIL and res.seq == 12 and "on vcpu 1" in res.detail, res.line()


def test_an_exit_at_its_own_change_may_go_either_way():
    """rearm_n's INTR exits show a rise 120 us old: the one before (a heartbeat of the
    same instant would be) is not a mismatch, being within the rise's IRQ_LAG."""
    tr = _trace("upstream-every-exit", "rearm_n", _falsify("upstream-every-exit", 266, "0"))
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
    assert res.reasons[0].startswith("truthful: exit 5 on vcpu 0") and "seq 6" in res.reasons[0]
