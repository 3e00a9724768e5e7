"""Layer 0: QEMU's arm_gt_* trace, split per VM, against the VMM's records."""

from __future__ import annotations

from conftest import DATA, console, recorded_vms

from harness.inputs import guest_spec, revision
from harness.judge.model import Model
from harness.judge.verdict import PASSED, evaluate
from harness.traces import qemu_trace, records

TESTS = ("mmio_spin", "oneshot_wfi", "rearm_n", "ptimer_oneshot", "both_timers")


def _vms():
    return [recorded_vms("upstream-every-exit")[t] for t in TESTS]


def test_one_timeline_per_test_vm_with_the_hardware_edges():
    with open(DATA / "upstream-every-exit.qemu-trace.log") as f:
        assert len(qemu_trace.timelines(qemu_trace.parse(f))) == 6  # the ABI probe's VM first
    vms = _vms()
    assert [vm.edges() for vm in vms] == [1, 1, 5, 0, 2]
    assert [vm.pedges() for vm in vms] == [0, 0, 0, 1, 2]  # the guest's direct ptimer (VHE)
    assert len({vm.cntvoff for vm in vms}) == 5
    for vm in vms:  # every rise is followed by its fall (the handler masks or re-arms)
        assert [c.level for c in vm.changes] == [1, 0] * vm.edges()
        assert [c.level for c in vm.pchanges] == [1, 0] * vm.prises
    # the ptimer's first rise, the counter's, at its CVAL (no offset); both_timers'
    # second comes from the guest clearing IMASK (a write: no tick)
    assert [c.tick is not None for c in vms[4].pchanges] == [True, False, False, False]
    with open(DATA / "upstream-every-exit.qemu-trace.log") as f:
        p_cvals = {int(line.split()[-1], 16) for line in f if "cval_write: timer 0 " in line}
    assert vms[3].pchanges[0].tick in p_cvals


def test_rise_in_wfi_is_seen_at_the_next_load():
    oneshot = _vms()[1]
    assert oneshot.changes[0].while_out  # fired while the vCPU was blocked in WFI


def test_ptimer_not_followed_on_an_nvhe_host():
    """Without a hyp timer in the trace the host kernel runs at EL1 (nVHE): timer 0 is
    the host's own tick and KVM emulates the guest's ptimer, so it is not followed."""
    with open(DATA / "upstream-every-exit.qemu-trace.log") as f:
        lines = [line for line in f if "timer 2 " not in line and "timer 4 " not in line]
    vms = qemu_trace.timelines(qemu_trace.parse(lines))
    assert all(vm.pedges() is None and "nVHE" in (vm.ptimer_why or "") for vm in vms)
    assert [vm.edges() for vm in vms[1:]] == [1, 1, 5, 0, 2]  # the vtimer as before


def test_newer_qemu_update_irq_format_and_timestamps():
    lines = [
        "1234@1700000000.000100:arm_gt_cntvoff_write gt_cntvoff_write: value 0x100",
        "1234@1700000000.000101:arm_gt_cval_write gt_cval_write: timer 1 value 0x50",
        "1234@1700000000.000102:arm_gt_ctl_write gt_ctl_write: timer 1 value 0x1",
        "1234@1700000000.000103:arm_gt_recalc gt recalc: timer 1 next tick 0x150",
        "1234@1700000000.000104:arm_gt_update_irq gt_update_irq: timer 1 irqstate 0",
        "1234@1700000000.000200:arm_gt_update_irq gt_update_irq: timer 1 irqstate 1",
    ]
    events = qemu_trace.parse(lines)
    assert events[0].host_ts == 1700000000.0001
    (vm,) = qemu_trace.timelines(events)
    assert vm.edges() == 1 and not vm.changes[0].while_out


def test_hardware_layer_agrees_with_the_abi_on_upstream():
    parsed = records.parse(console("upstream-every-exit.console.log"))
    model = Model.of(revision.load("upstream"))
    specs = guest_spec.load_all()
    for vm, name in zip(_vms(), TESTS, strict=True):
        recs = [r for r in parsed.records if r.test == name]
        res = evaluate(specs[name], recs, [], model, vm)
        assert res.status == PASSED, res.reasons
        assert res.metrics["hw_vtimer_edges"] == res.metrics["vtimer_edges"]
        truthful = next(p for p in res.properties if p.prop == "truthful")
        assert "in QEMU's trace" in truthful.detail


def test_a_hardware_edge_the_abi_never_showed_fails_truthful():
    parsed = records.parse(console("upstream-every-exit.console.log"))
    vm = _vms()[2]
    vm.add_change(qemu_trace.HwChange(1, 10**6, None, False))  # one rise more than shown
    recs = [r for r in parsed.records if r.test == "rearm_n"]
    res = evaluate(
        guest_spec.load_all()["rearm_n"], recs, [], Model.of(revision.load("upstream")), vm
    )
    truthful = next(p for p in res.properties if p.prop == "truthful")
    assert truthful.status == "fail" and truthful.expected.startswith("6")


def _ev(i: int, cpu: int, event: str, timer=None, irq=None, value=None, tick=None, ts=0.0):
    return qemu_trace.GtEvent(i, event, timer, irq, value, tick, 100.0 + ts, cpu)


def _held_after_put(tick_cpu: int, cpus: int) -> list[qemu_trace.HostTick]:
    """A vCPU loaded and put on CPU 0, then the host's tick on tick_cpu taken 5 ms
    after it rose: the VM's held ticks (cpus: the L1 CPUs the trace shows)."""
    evs = [_ev(0, c, "arm_gt_recalc", 2, 0, None, 0x100) for c in range(cpus)]
    evs += [
        _ev(1, 0, "arm_gt_cntvoff_write", value=0x1000, ts=0.001),  # load: offset, CVAL, CTL
        _ev(2, 0, "arm_gt_cval_write", 1, value=0, ts=0.001),
        _ev(3, 0, "arm_gt_ctl_write", 1, value=0, ts=0.001),
        _ev(4, 0, "arm_gt_ctl_write", 1, value=0, ts=0.002),  # put: CTL = 0, CNTVOFF = 0
        _ev(5, 0, "arm_gt_cntvoff_write", value=0, ts=0.002),
        _ev(6, tick_cpu, "arm_gt_recalc", 2, 0, None, 0x5000, ts=0.003),
        _ev(7, tick_cpu, "arm_gt_recalc", 2, 1, None, (1 << 64) - 1, ts=0.004),  # the tick
        _ev(8, tick_cpu, "arm_gt_ctl_write", 2, value=7, ts=0.009),  # its handler, 5 ms on
    ]
    (vm,) = qemu_trace.timelines(evs)
    return vm.host_ticks


def test_a_host_tick_is_kept_for_the_vm_in_use():
    """One L1 CPU: the VM in use (out between runs) keeps it; two: only a tick of the
    CPU its vCPU is loaded on says its vCPU stood still."""
    assert _held_after_put(tick_cpu=0, cpus=1) == [(0x5000, 100.004, 100.009)]
    assert _held_after_put(tick_cpu=1, cpus=2) == []
