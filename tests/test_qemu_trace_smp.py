"""Layer 0 on two L1 CPUs: QEMU's trace split per CPU (qemu_trace.CpuOf), on a
recorded real run of two_vcpus and oneshot_wfi (virt-gicv3-smp2; the trace
trimmed to the suite's part and the timer PPIs' redistributor lines; the ABI
probe's VM comes first)."""

from __future__ import annotations

import json

from conftest import DATA, console

from harness.judge import abicheck
from harness.traces import correlate, qemu_trace, records
from harness.traces.test_trace import TestTrace

TESTS = ("two_vcpus", "oneshot_wfi")


def _threads() -> dict[int, int]:
    raw = json.loads((DATA / "upstream-smp2.cpu-threads.json").read_text())
    return {int(t): c for t, c in raw.items()}


def _vms(threads: dict[int, int] | None) -> list[qemu_trace.VmTimeline]:
    """The tests' VMs (the ABI probe's skipped)."""
    skip = abicheck.probe_vms(records.parse(console("upstream-smp2.console.log")))
    with open(DATA / "upstream-smp2.qemu-trace.log") as f:
        return qemu_trace.timelines(qemu_trace.parse(f, threads))[skip:]


def test_split_per_cpu_counts_the_edges_the_vmm_saw():
    parsed = records.parse(console("upstream-smp2.console.log"))
    vms = _vms(_threads())
    assert len(vms) == len(TESTS)
    for name, vm in zip(TESTS, vms, strict=True):
        tr = TestTrace.from_records(name, [r for r in parsed.records if r.test == name])
        tr.hw = vm
        rises = [c for c in vm.changes if c.level == 1]
        assert len(rises) == len(vm.changes) - len(rises), name  # every rise fell again
        assert vm.edges() == tr.edges("vtimer") == correlate.metrics(tr)["kt_vtimer_edges"]
    assert vms[0].edges() == 5  # 3 on vCPU 0, 2 on vCPU 1


def test_both_cpus_loaded_two_vcpus_vm():
    with open(DATA / "upstream-smp2.qemu-trace.log") as f:
        events = qemu_trace.parse(f, _threads())
    offset = _vms(_threads())[0].cntvoff
    loads = {e.cpu for e in events if e.event == "arm_gt_cntvoff_write" and e.value == offset}
    assert loads == {0, 1}


def test_unsplit_trace_loses_track_of_the_line():
    """Read as if one CPU, the two CPUs' timer 1 interleave: a fall goes missing, or
    (in this recording) a load is taken for a third vCPU."""
    vm = _vms(None)[0]
    rises = sum(c.level == 1 for c in vm.changes)
    assert rises != len(vm.changes) - rises or vm.vcpus != 2
    assert _vms(_threads())[0].vcpus == 2


def test_main_thread_line_takes_the_cpu_of_the_redistributor_line_before_it():
    lines = [
        "10@1.000001:gicv3_redist_set_irq GICv3 redistributor 0x1 interrupt 27 level changed to 1",
        "10@1.000002:arm_gt_recalc gt recalc: timer 1 irqstate 1 next tick 0xffffffffffffffff",
        "10@1.000003:arm_gt_recalc gt recalc: timer 1 irqstate 1 next tick 0xffffffffffffffff",
        "11@1.000004:arm_gt_ctl_write gt_ctl_write: timer 1 value 0x1",
        "10@1.000005:gicv3_redist_set_irq GICv3 redistributor 0x1 interrupt 23 level changed to 1",
        "10@1.000006:arm_gt_recalc gt recalc: timer 1 irqstate 0 next tick 0x10",
    ]
    events = qemu_trace.parse(lines, {11: 0, 12: 1})
    # the second main-thread line changed nothing and names no CPU: dropped; so is
    # one after a PPI that is not a timer's (23, the PMU)
    assert [(e.index, e.cpu) for e in events] == [(2, 1), (4, 0)]


def test_gicv2_lines_name_the_cpu_by_their_cpu_mask():
    lines = [
        "10@1.000001:gic_set_irq irq 27 level 1 cpumask 0x2 target 0x2",
        "10@1.000002:arm_gt_recalc gt recalc: timer 1 irqstate 1 next tick 0xffffffffffffffff",
        "10@1.000003:gic_set_irq irq 27 level 1 cpumask 0x1 target 0x1",
        "10@1.000004:arm_gt_recalc gt recalc: timer 1 irqstate 1 next tick 0xffffffffffffffff",
    ]
    events = qemu_trace.parse(lines, {11: 0, 12: 1})
    assert [(e.index, e.cpu) for e in events] == [(2, 1), (4, 0)]
