"""Verdicts that name the broken promise from the kernel layer: visible (a guest
entry with a change unreported), progress (an in-kernel exit storm), on recorded
real runs (a healthy suite, the upstream-nointr control) and edits of them."""

from __future__ import annotations

import gzip

import pytest
from conftest import DATA, console

from harness.inputs import guest_spec, revision
from harness.judge import oracle
from harness.judge.model import FAIL, NOT_JUDGED, PASS, Model
from harness.judge.properties.held import HeldTicks
from harness.judge.verdict import FAILED, PASSED, evaluate
from harness.traces import qemu_trace, records
from harness.traces.records import Record
from harness.traces.test_trace import TestTrace

UPSTREAM = Model.of(revision.load("upstream"))


@pytest.fixture(scope="module")
def suite() -> records.Parsed:
    return records.parse(console("upstream-suite.console.log"))


@pytest.fixture(scope="module")
def nointr() -> records.Parsed:
    with gzip.open(DATA / "upstream-nointr.console.log.gz", "rt", errors="replace") as f:
        return records.parse(f.read().splitlines())


def _judge(test: str, recs: list[Record]):
    return evaluate(guest_spec.load_all()[test], recs, [], UPSTREAM)


def _prop(res, name: str):
    return next(p for p in res.properties if p.prop == name)


def test_healthy_suite_passes_visible_from_the_kernel_layer(suite):
    one_vcpu = [s for s in guest_spec.select(guest_spec.load_all(), []) if s.vcpus == 1]
    for spec in one_vcpu:
        res = _judge(spec.name, suite.of(spec.name))
        assert res.status == PASSED, (spec.name, res.reasons)
        assert _prop(res, "visible").status == PASS, spec.name
        assert "no guest entry with a change unreported" in _prop(res, "visible").detail


@pytest.mark.parametrize("test", ["oneshot_tval", "sigalrm", "late_inject"])
def test_no_forced_exit_fails_visible_first(nointr, test):
    res = _judge(test, nointr.of(test))
    assert res.status == FAILED
    assert res.reasons[0].startswith("visible: the guest was entered with a vtimer change")
    v = _prop(res, "visible")
    assert v.status == FAIL and v.seq is not None and "kvm_entry" in v.observed


def test_the_vmms_own_signal_exits_are_no_notices(suite):
    tr = TestTrace.from_records("sigalrm", suite.of("sigalrm"))
    signals = [e for e in tr.exits if e.sig]
    assert signals and not any(e.notice for e in signals)
    assert any(e.notice for e in tr.exits)  # the kernel's own notices are there


def test_without_kernel_events_visible_and_progress_are_not_judged(suite):
    recs = [r for r in suite.of("masked_progress") if r.kind not in ("kt", "ktsum")]
    res = _judge("masked_progress", recs)
    assert _prop(res, "visible").status == NOT_JUDGED
    assert _prop(res, "progress").status == NOT_JUDGED
    assert "in-kernel exits are unknown" in _prop(res, "progress").detail


def _kt(after: Record, n: int) -> list[Record]:
    """n kvm_exit IRQ events 10 us apart, from the time of record after."""
    out = []
    for k in range(n):
        t = after.t_ns + 10_000 * (k + 1)
        ts = f"{t // 10**9}.{t % 10**9 // 1000:06d}"
        out.append(
            Record(after.seq, after.test, t, "kt",
                   {"ts": ts, "ev": "kvm_exit", "msg": "IRQ: HSR_EC: 0x0000 (UNKNOWN), PC: 0x0"},
                   after.line_no)
        )  # fmt: skip
    return out


def test_an_in_kernel_exit_storm_while_high_fails_progress(suite):
    recs = list(suite.of("masked_progress"))
    assert _prop(_judge("masked_progress", recs), "progress").status == PASS
    rise = next(r for r in recs if r.kind == "exit" and r.get("lvl") == "1")
    kernel = sorted([r for r in recs if r.kind == "kt"] + _kt(rise, 5000), key=lambda r: r.t_ns)
    res = _judge("masked_progress", [r for r in recs if r.kind != "kt"] + kernel)
    p = _prop(res, "progress")
    assert p.status == FAIL and "in-kernel exit storm" in p.detail, p
    assert res.reasons[0].startswith("progress: in-kernel exit storm")


def test_an_in_kernel_storm_past_the_vmm_bound_is_counted(suite):
    recs = [r for r in suite.of("masked_progress") if r.kind not in ("kt", "ktsum")]
    end = next(r for r in recs if r.kind == "end")
    extra = [
        Record(end.seq, end.test, end.t_ns, "ktdrop", {"n": "90000", "kept": "4000"}, 0),
        Record(end.seq, end.test, end.t_ns, "ktsum", {"ev": "kvm_exit_irq", "n": "90000"}, 0),
    ]
    p = _prop(_judge("masked_progress", recs[:-1] + extra + recs[-1:]), "progress")
    assert p.status == FAIL and "counted" in p.detail


# -- prompt ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def late() -> records.Parsed:
    with gzip.open(DATA / "upstream-late.console.log.gz", "rt", errors="replace") as f:
        return records.parse(f.read().splitlines())


def test_healthy_rises_end_the_guest_run_by_their_own_interrupt(suite):
    judged = 0
    for spec in guest_spec.select(guest_spec.load_all(), []):
        p = _prop(_judge(spec.name, suite.of(spec.name)), "prompt")
        if spec.vcpus > 1:
            assert p.status == NOT_JUDGED
            continue
        assert p.status in (PASS, "skip"), (spec.name, p.detail)
        judged += p.status == PASS
    assert judged >= 10


@pytest.mark.parametrize("test", ["imask_toggle", "sigalrm"])
def test_a_rise_that_waits_for_another_exit_fails_prompt(late, test):
    res = _judge(test, late.of(test))
    p = _prop(res, "prompt")
    assert p.status == FAIL and "its own interrupt never came" in p.detail
    assert res.reasons[0].startswith("prompt:")
    assert _prop(res, "visible").status == PASS  # every change still reached user space


def _stretched(recs: list[Record], ms: int) -> list[Record]:
    """recs with every guest run ms longer: each kvm_entry ms earlier, as when the host
    stalls QEMU with no host tick coming in the run."""
    out = []
    for r in recs:
        if r.kind == "kt" and r.get("ev") == "kvm_entry":
            sec, frac = r.get("ts").split(".")
            t_us = int(sec) * 1_000_000 + int(frac) - ms * 1000
            ts = f"{t_us // 1_000_000}.{t_us % 1_000_000:06d}"
            r = Record(r.seq, r.test, r.t_ns, r.kind, r.fields | {"ts": ts}, r.line_no)
        out.append(r)
    return out


def test_a_late_rise_after_a_host_stall_is_not_judged(late):
    """upstream-late's sigalrm with its guest runs 30 ms longer: a run that long had no
    host tick in it, so the machine stood still and lateness says nothing; 20 ms is
    within what the host's tick (4 ms) explains, and still fails."""
    recs = late.of("sigalrm")
    p = _prop(_judge("sigalrm", _stretched(recs, 30)), "prompt")
    assert p.status == NOT_JUDGED and "the host stalled QEMU" in p.detail
    assert _prop(_judge("sigalrm", _stretched(recs, 20)), "prompt").status == FAIL


def test_a_vcpu_woken_from_wfi_by_its_timer_is_prompt_there_too(late):
    assert _prop(_judge("oneshot_wfi", late.of("oneshot_wfi")), "prompt").status == PASS


def test_prompt_is_not_judged_without_the_timers_interrupts_traced(suite):
    recs = [r for r in suite.of("rearm_n") if r.get("ev") != "irq_handler_entry"]
    p = _prop(_judge("rearm_n", recs), "prompt")
    assert p.status == NOT_JUDGED and "not traced" in p.detail


def _raced() -> tuple[list[Record], object]:
    """Healthy upstream never_inject, recorded in a loaded run: the guest's run
    ended by another host interrupt 0.4 ms after its timer fired, before the
    timer's own interrupt came (its console cut to the test, its trace to its VM)."""
    recs = records.parse(console("upstream-raced.console.log")).of("never_inject")
    with open(DATA / "upstream-raced.qemu-trace.log") as f:
        vms = qemu_trace.timelines(qemu_trace.parse(f, None))
    begin = next(r for r in recs if r.kind == "begin")
    vm = min(vms, key=lambda v: abs(v.cntvoff - int(begin.get("cntvoff"), 16)))
    return recs, vm


def test_a_rise_whose_run_ended_otherwise_as_it_fired_is_prompt():
    recs, vm = _raced()
    spec = guest_spec.load_all()["never_inject"]
    p = _prop(evaluate(spec, recs, [], UPSTREAM, vm, ""), "prompt")
    assert p.status == PASS and "1 came with another exit within 1 ms of the fire" in p.detail
    # without layer 0 the race cannot be told from a held notice: not judged, not FAIL
    p = _prop(evaluate(spec, recs, [], UPSTREAM), "prompt")
    assert p.status == NOT_JUDGED and "cannot be ruled out" in p.detail, p.detail


# healthy v5 never_inject in a loaded run (two busy loops on the host's two CPUs; its
# records, its trace cut to its VM): the guest's run ended by a host interrupt 0.3 ms
# before the timer fired, then the host held the vCPU thread 2.8 ms before KVM took
# the level (1, by then) and the VMM read cnt 3.1 ms after the fire
HELD = "v5-loaded-never_inject"


def _held(exit_after_rise_us: int | None = None) -> object:
    recs = records.parse(console(f"{HELD}.console.log")).of("never_inject")
    with open(DATA / f"{HELD}.qemu-trace.log") as f:
        (vm,) = qemu_trace.timelines(qemu_trace.parse(f, None))
    if exit_after_rise_us is not None:  # the run's end moved: the guest ran on after the fire
        at = next(i for i, r in enumerate(recs) if r.get("ts") == "1.947328")
        ts = f"{1.947328 + (280 + exit_after_rise_us) / 1e6:.6f}"
        recs[at] = Record(recs[at].seq, "never_inject", 0, "kt", recs[at].fields | {"ts": ts}, 0)
    return _prop(evaluate(guest_spec.load_all()["never_inject"], recs, [], V5, vm, ""), "prompt")


def test_a_rise_after_the_runs_end_that_the_host_held_is_prompt():
    """The VMM's cnt came 3.1 ms after the fire (over COINCIDENT), but the kernel's
    kvm_exit that ended the run came before it: the guest never ran with the line
    high, so no interrupt of its own was owed (it FAILed prompt before)."""
    p = _held()
    assert p.status == PASS and "1 came with another exit within 1 ms of the fire, or before" in (
        p.detail
    ), p.detail


def test_a_run_that_went_on_past_the_fire_still_fails_prompt():
    """The same records with that kvm_exit 2 ms after the fire: the guest ran on with
    the line high and its own interrupt never came."""
    p = _held(exit_after_rise_us=2000)
    assert p.status == FAIL and "its own interrupt never came" in p.detail, p.detail


# healthy upstream late_inject in a 4-slots-on-2-CPUs nightly (its records, its trace
# cut to its VM): QEMU's main thread raised the host's tick, then the L1 CPU did not
# run for 6.5 ms (its vCPU thread wrote nothing; the tick's handler came last); the
# guest's timer fired in that time, and the tick, pending first, ended the run
HELD_TICK = "upstream-held-late_inject"


def _held_tick(untaken: bool = True):
    recs = records.parse(console(f"{HELD_TICK}.console.log")).of("late_inject")
    with open(DATA / f"{HELD_TICK}.qemu-trace.log") as f:
        (vm,) = qemu_trace.timelines(qemu_trace.parse(f, None))
    if not untaken:
        vm.host_ticks.clear()
    return _prop(
        evaluate(guest_spec.load_all()["late_inject"], recs, [], UPSTREAM, vm, ""), "prompt"
    )


def test_layer0_keeps_the_host_ticks_the_l1_cpu_left_untaken():
    with open(DATA / f"{HELD_TICK}.qemu-trace.log") as f:
        (vm,) = qemu_trace.timelines(qemu_trace.parse(f, None))
    tick = next(t for t in vm.host_ticks if t.rose == 1796152116.576582)  # QEMU's rise line
    assert tick.taken == 1796152116.583102  # the L1 tick handler's first write, 6.5 ms on
    tr = TestTrace.from_records("late_inject", [])
    tr.hw = vm
    clock = oracle.host_clock(vm)
    assert HeldTicks(tr).at(clock.tick(1796152116.58)) == pytest.approx(
        6.88, abs=0.01
    )  # from its due tick


def test_a_rise_while_the_host_tick_waited_untaken_is_not_judged():
    """The run ended by the tick, not the timer's own interrupt: but the L1 CPU was
    not running when the timer fired, so prompt cannot tell (it FAILed before)."""
    p = _held_tick()
    assert p.status == NOT_JUDGED, p.detail
    assert "with the host's tick left untaken 6.9 ms when it fired" in p.detail


def test_the_same_rise_with_the_tick_taken_in_time_fails_prompt():
    """Without the held tick (as on a running L1 CPU) the same records are the
    upstream-late negative control's: the rise waited for another exit."""
    p = _held_tick(untaken=False)
    assert p.status == FAIL and "its own interrupt never came" in p.detail, p.detail


def _recorded(name: str, test: str, model: Model = UPSTREAM, clear_held: bool = False):
    """A recorded test (its records, its trace cut to its VM) judged whole."""
    recs = records.parse(console(f"{name}.console.log")).of(test)
    with open(DATA / f"{name}.qemu-trace.log") as f:
        (vm,) = qemu_trace.timelines(qemu_trace.parse(f, None))
    if clear_held:
        vm.host_ticks.clear()
    return evaluate(guest_spec.load_all()[test], recs, [], model, vm, "")


def test_a_wfi_the_timer_beat_while_the_host_held_the_cpu_is_not_judged():
    """Debian 6.1.0-50 oneshot_wfi at 4 slots on 2 CPUs: the L1 CPU stood still
    11.9 ms (the host's tick untaken) and the timer fired in it; the guest's WFI
    then found the interrupt pending, QEMU did not trap it, and KVM never blocked
    the vCPU: wake cannot tell (it FAILed). The same records, the tick taken in
    time, still fail: a WFI that did not trap with the L1 CPU running."""
    res = _recorded("deb-held-oneshot_wfi", "oneshot_wfi")
    wake = _prop(res, "wake")
    assert wake.status == NOT_JUDGED and "waited untaken 11.9 ms" in wake.detail, wake.detail
    assert res.status == PASSED, res.reasons
    wake = _prop(_recorded("deb-held-oneshot_wfi", "oneshot_wfi", clear_held=True), "wake")
    assert wake.status == FAIL and "KVM never blocked the vCPU" in wake.detail, wake.detail


def test_on_nvhe_the_physical_timer_is_the_hosts_tick():
    """nVHE late_inject at 4 slots: the host's tick is the physical timer there; it
    waited untaken 4.7 ms when the guest's timer fired, so prompt does not judge."""
    with open(DATA / "nvhe-held-late_inject.qemu-trace.log") as f:
        text = f.read()
    assert "timer 2 " not in text and "timer 0 irqstate 1" in text  # no hyp timer: nVHE
    p = _prop(_recorded("nvhe-held-late_inject", "late_inject"), "prompt")
    assert p.status == NOT_JUDGED and "tick left untaken 4.7 ms" in p.detail, p.detail
    p = _prop(_recorded("nvhe-held-late_inject", "late_inject", clear_held=True), "prompt")
    assert p.status == FAIL, p.detail


# a nightly's v5 late_inject (records.log, the test's records): with two QEMUs on two
# CPUs, the host stalled this one 36 ms while the line was held high, so the guest beat
# twice where it beats every 5 ms; layer 1 shows the guest run with no host tick in it
STALLED = "v5-stalled-late_inject.records.log"
V5 = Model.of(revision.load("v5"))


def _stalled(edit=lambda recs: recs):
    recs = [r for r in records.parse(console(STALLED)).records if r.test == "late_inject"]
    return evaluate(guest_spec.load_all()["late_inject"], edit(recs), [], V5)


def test_too_few_heartbeats_in_a_host_stall_are_not_judged():
    res = _stalled()
    progress = _prop(res, "progress")
    assert progress.status == NOT_JUDGED and res.status == PASSED
    assert "one guest run in it lasted 36 ms with no host tick" in progress.detail


def _ticks(recs: list[Record]) -> list[Record]:
    """Host ticks inside the stalled run: the guest ran, and still beat twice."""
    at = next(i for i, r in enumerate(recs) if r.get("ts") == "1.145500")
    tick = [
        Record(recs[at].seq, "late_inject", 0, "kt", recs[at].fields | {"ts": ts, "ev": ev}, 0)
        for t in ("1.118000", "1.130000")
        for ts, ev in ((t, "kvm_exit"), (t, "kvm_entry"))
    ]
    return recs[:at] + tick + recs[at:]


@pytest.mark.parametrize(
    "edit",
    [_ticks, lambda recs: [r for r in recs if r.kind != "kt"]],
    ids=["host-ticks-in-the-run", "no-layer-1"],
)
def test_too_few_heartbeats_fail_when_the_machine_ran(edit):
    res = _stalled(edit)
    progress = _prop(res, "progress")
    assert progress.status == FAIL and res.status == FAILED
    assert progress.detail == "the line never stayed high across the guest's heartbeats"


# a 4-slots-on-2-CPUs nightly's v5 6.12 late_inject (records.log, the test's records):
# the VMM's vCPU thread, between the notice exit and its next KVM_RUN, did not run for
# 35 ms of the 40 the line was held high; the guest ran 5.3 ms of it and beat twice
STARVED = "v5-starved-late_inject.records.log"


def _starved(run_ms: float | None = None):
    recs = [r for r in records.parse(console(STARVED)).records if r.test == "late_inject"]
    if run_ms is not None:  # exit 3's KVM_RUN made as long: the guest ran in the gap
        at = next(i for i, r in enumerate(recs) if r.kind == "exit" and r.get("n") == "3")
        dt = {"dt": str(int(run_ms * 1e6))}
        recs[at] = Record(recs[at].seq, "late_inject", 0, "exit", recs[at].fields | dt, 0)
    return _prop(evaluate(guest_spec.load_all()["late_inject"], recs, [], V5), "progress")


def test_too_few_heartbeats_when_the_guest_barely_ran_are_not_judged():
    p = _starved()
    assert p.status == NOT_JUDGED, p.detail
    assert "the line was high 40 ms on vcpu 0, but the guest ran 5.3 ms of it at most" in p.detail


def test_too_few_heartbeats_in_time_the_guest_ran_fail():
    p = _starved(run_ms=30)
    assert (
        p.status == FAIL and p.detail == "the line never stayed high across the guest's heartbeats"
    )


def test_a_tick_qemu_logged_late_is_held_from_when_it_was_due():
    """v4 6.12 late_inject, eintr-only, at 4 slots on 2 CPUs: QEMU itself did not run
    for 20 ms (the host's tick due at +49.5 ms was logged at +69.3 and taken at once),
    so the guest's run of 22 ms made one heartbeat: the tick counts as held from when
    it was due, the guest ran 11 ms of the 44 the line was high, and progress cannot
    tell (it FAILed: from the logged rise the tick looked taken in 0.2 ms)."""
    res = _recorded("v4-stalled-late_inject", "late_inject", Model.of(revision.load("v4")))
    p = _prop(res, "progress")
    assert p.status == NOT_JUDGED and "but the guest ran 11.3 ms of it at most" in p.detail, (
        p.detail
    )
    res = _recorded("v4-stalled-late_inject", "late_inject", Model.of(revision.load("v4")), True)
    p = _prop(res, "progress")
    assert (
        p.status == FAIL and p.detail == "the line never stayed high across the guest's heartbeats"
    )


# -- once ------------------------------------------------------------------------------
# a 4-slots-on-2-CPUs nightly's upstream 6.12 rearm_n (records.log, the test's records;
# the guest then moved CVAL before it masked the timer): the host stalled the vCPU
# between the two writes past the new deadline, twice, so the timer made two more true
# edges that the guest masked before it could take them; the VMM lowered each again
STALLED_REARM = "upstream-6.12-stalled-rearm_n.records.log"


def _rearm(edit=lambda recs: recs):
    recs = [r for r in records.parse(console(STALLED_REARM)).records if r.test == "rearm_n"]
    return evaluate(guest_spec.load_all()["rearm_n"], edit(recs), [], UPSTREAM)


def test_a_true_rise_lowered_before_the_guest_took_it_is_owed_no_irq():
    once = _prop(_rearm(), "once")
    assert once.status == PASS, once.detail
    assert once.detail.startswith("5 edges, 5 IRQs; 2 more rise(s) lowered again")


def test_the_spec_counts_the_edges_the_guest_made_not_a_stalls_extra():
    """rearm_n's spec expects 5 edges: the 2 masked ones are the host stall's, so the
    test passes whole (its once passed, its edge count had failed it)."""
    res = _rearm()
    assert res.status == PASSED and res.reasons == [], res.reasons


def test_without_the_kernels_edges_the_same_trace_fails_once():
    res = _rearm(lambda recs: [r for r in recs if r.kind != "kt"])
    once = _prop(res, "once")
    assert once.status == FAIL and once.expected == "7 IRQs" and once.observed == "5"
    assert res.status == FAILED and "edges.vtimer: expected 5, observed 7" in res.reasons
