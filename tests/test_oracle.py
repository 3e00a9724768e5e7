"""truthful at every exit: the level shown against the architectural timer output
that layer 0 gives at the exit's counter (harness/judge/oracle.py), on the recorded runs
(one L1 CPU: upstream-every-exit; two: upstream-smp2)."""

from __future__ import annotations

import dataclasses
import re
import zlib

import pytest
from conftest import DATA, console, recorded_vms

from harness.inputs import guest_spec, revision
from harness.judge import abicheck, oracle
from harness.judge.model import FAIL, NOT_JUDGED, PASS, Model
from harness.traces import qemu_trace, records
from harness.traces.qemu_trace import HwChange
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


# rearm_n on upstream-every-exit, the guest's first arm and what follows it in QEMU's
# trace (vCPU thread 4744, main thread 4741): CTL=1 at .998036 (next tick 0x6d651d3),
# exit 1's put at .998124 and the next load at .998674, the main thread's rise at
# 118.004160, then a put at 118.004870 (with no exit of its own), a load at .004958
# and exit 2's put at .005028
_ARM_CVAL, _ARM_TICK = 0xBE17E, 0x6D651D3
_OUT = (("117.998124:", "117.998700:"), ("118.004958:", "118.005029:"))  # taken out
_RISE, _LATER_PUT = "118.004160:", "118.004870:"
_EARLY = 4_500 * 62_500 // 1000  # the deadline moved 4.5 ms earlier: ~0.5 ms after the arm


def _stalled_put(guest_line_before_the_put: bool) -> tuple[TestTrace, HwChange]:
    """rearm_n with its first exit's put stalled: exit 1 (the guest's MMIO ARM report,
    level 0) right after the arm, its put held back past the timer's rise. In QEMU's
    trace in memory: exit 1's put and the next load are taken out (the vCPU stays
    loaded, the put at 118.004870 becomes exit 1's; the load and put after it, 150 us
    later, are taken out too, exit 2 shares that put), the deadline moved 4.5 ms
    earlier, to ~0.5 ms after the arm, and its rise's line to 60 us after it: the
    put comes ~6.3 ms after the rise, with no vCPU-thread line between the arm and
    it. With guest_line_before_the_put, the guest writes CTL (unchanged) 0.3 ms before
    the put: the vCPU ran after the rise. Exit 1's cnt is read 60 us after its put."""
    run = "upstream-every-exit"
    lines = (DATA / f"{run}.qemu-trace.log").read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if _OUT[0][0] in x)
    for first, last in _OUT:  # the vCPU's lines there (the host's timer 2 stays)
        a = next(i for i, x in enumerate(lines) if first in x)
        b = next(i for i, x in enumerate(lines) if last in x)
        lines[a : b + 1] = [x for x in lines[a : b + 1] if "timer 2 " in x]
    cval, tick = _ARM_CVAL - _EARLY, _ARM_TICK - _EARLY
    lines = [
        x.replace(f"timer 1 value {_ARM_CVAL:#x}", f"timer 1 value {cval:#x}").replace(
            f"next tick {_ARM_TICK:#x}", f"next tick {tick:#x}"
        )
        for x in lines
    ]
    rise = next(i for i, x in enumerate(lines) if _RISE in x)
    later = lines.pop(rise)
    clock = oracle.host_clock(recorded_vms(run)["rearm_n"])
    assert clock is not None
    rise_ts = round(_ts(lines[start - 1]) + 0.0005 + 0.00006, 6)
    later = later.replace(later.split(":", 1)[0], f"4741@{rise_ts:.6f}")
    at = next(i for i, x in enumerate(lines) if i >= start and _ts(x) > rise_ts)
    lines.insert(at, later)
    put = next(i for i, x in enumerate(lines) if _LATER_PUT in x)
    if guest_line_before_the_put:
        ts = _ts(lines[put]) - 0.0003
        lines.insert(put, f"4744@{ts:.6f}:arm_gt_ctl_write gt_ctl_write: timer 1 value 0x1")
        put += 1
    parsed = records.parse(console(f"{run}.console.log"))
    vms = qemu_trace.timelines(qemu_trace.parse(lines))
    vm = vms[abicheck.probe_vms(parsed) :][RUNS[run].index("rearm_n")]
    e1 = next(e for e in _exits(run, "rearm_n") if e.n == 1)
    assert e1.level == 0 and e1.port == "ARM"
    cnt = clock.tick(_ts(lines[put]) + 0.00006)
    parsed = records.parse(_falsify(run, e1.seq, "0", cnt=cnt))
    tr = TestTrace.from_records("rearm_n", [r for r in parsed.records if r.test == "rearm_n"])
    tr.hw = vm
    first = vm.changes[0]
    assert first.level == 1 and first.tick == tick and first.host_ts == rise_ts
    return tr, first


def _ts(line: str) -> float:
    return float(line.split("@", 1)[1].split(":", 1)[0])


def test_a_rise_before_a_stalled_put_may_go_either_way():
    """The host deschedules QEMU's vCPU thread between the guest's exit (KVM takes the
    level, 0) and the put, while QEMU's main thread fires the timer: the rise lies
    before the put but after the vCPU thread's last line (the guest's arm), so KVM may
    have taken the level before it (a loaded make test: v6 rearm_n failed so)."""
    tr, rise = _stalled_put(guest_line_before_the_put=False)
    clock = oracle.host_clock(tr.hw)
    puts = tr.hw.puts[0]
    put = next(p for p in puts if p.at > rise.host_ts)
    assert clock.tick(put.at) - clock.tick(rise.host_ts) > 6 * 62_500  # 6 ms after the rise
    assert put.ran < rise.host_ts - 0.0005  # the vCPU thread's last line: the arm
    res = _truthful(tr)
    assert res.status == PASS, res.line()


def test_a_rise_before_the_vcpu_ran_on_is_certain_at_the_next_put():
    """The same rise, but the vCPU thread wrote the timer after it (0.3 ms before the
    put): KVM took the level after that, so an exit showing the old level fails,
    naming the rise."""
    tr, rise = _stalled_put(guest_line_before_the_put=True)
    res = _truthful(tr)
    assert res.status == FAIL and res.expected.startswith("vtimer 1"), res.line()
    assert f"the rise at QEMU trace line {rise.index} (by the counter, while loaded" in res.detail


LOADED = "upstream-loaded-two_vcpus"  # a healthy upstream boot, both host CPUs kept busy


def test_a_put_of_the_vcpus_next_run_is_not_taken_for_the_exits_own():
    """Recorded under load: vCPU 0's exit 1 (its ARM report) was put 1.7 ms before the
    VMM read cnt; the timer rose by the counter before that put. The VMM re-entered
    KVM_RUN at once, and that run's load and put (an immediate notice exit, exit 2)
    came 160 us after exit 1's cnt: within the clock's error (AFTER), so it was taken
    for exit 1's, with its load's line after the rise, and exit 1's level 0 failed
    truthful on a healthy kernel. That put lies in exit 2's KVM_RUN: exit 1's window
    spans back to its own put, and the rise may go either way."""
    tr = _trace(LOADED, "two_vcpus")
    clock = oracle.host_clock(tr.hw)
    e1, e2 = sorted((e for e in tr.exits if e.vcpu == 0 and e.n in (1, 2)), key=lambda e: e.n)
    assert (e1.reason, e1.level, e2.reason, e2.level) == ("MMIO", 0, "INTR", 1)
    start2 = e2.cnt - e2.in_run_ns * 62_500_000 // 10**9
    after = [clock.tick(p.at) for p in tr.hw.puts[0] if e1.cnt < clock.tick(p.at)]
    assert e1.cnt < start2 < after[0] <= e1.cnt + oracle.AFTER < e2.cnt
    res = _truthful(tr)
    assert res.status == PASS, res.line()


def test_the_next_runs_own_exit_still_fails_with_the_old_level():
    """The same recording, exit 2 (whose put that is) showing the level before the
    rise: its load's line after the rise makes it certain, and truthful fails."""
    tr = _trace(LOADED, "two_vcpus")
    e2 = next(e for e in tr.exits if e.vcpu == 0 and e.n == 2)
    res = _truthful(_trace(LOADED, "two_vcpus", _falsify(LOADED, e2.seq, "0")))
    assert res.status == FAIL and "exit 2 on vcpu 0" in res.detail, res.line()


LOADED_OUT = "v5-loaded-two_vcpus"  # a 4-slots-on-2-CPUs nightly's healthy v5 6.12 boot


def test_a_rise_seen_at_the_next_runs_load_is_not_the_exits():
    """vCPU 0's exit 1 was put 6.6 ms before the VMM read cnt; its timer rose while
    it was out, and the next run's load (a vCPU-thread line, 160 us after cnt) saw
    it. That load's put may be exit 1's by the clock's error, but under it the rise
    is certain: exit 1 may show what either put's window allows, so level 0 (its
    own put's) is right. A window spanning both puts made the rise certain there."""
    tr = _trace(LOADED_OUT, "two_vcpus")
    e1 = next(e for e in tr.exits if e.vcpu == 0 and e.n == 1)
    rise = next(c for c in tr.hw.changes if c.vcpu == 0 and c.level == 1)
    assert e1.level == 0 and rise.while_out and not rise.by_main
    res = _truthful(tr)
    assert res.status == PASS, res.line()
    e2 = next(e for e in tr.exits if e.vcpu == 0 and e.n == 2)
    res = _truthful(_trace(LOADED_OUT, "two_vcpus", _falsify(LOADED_OUT, e2.seq, "0")))
    assert res.status == FAIL and "exit 2 on vcpu 0" in res.detail, res.line()
