"""Layer 0 on the shapes the suite's tests give QEMU's trace: busy puts, two vCPUs
in one VM, a VM whose counter offset user space set (save/restore)."""

from __future__ import annotations

from harness.traces import qemu_trace

# QEMU 7.2's formats, as in a real trace
LOAD = "arm_gt_cntvoff_write gt_cntvoff_write: value {:#x}"
CVAL = "arm_gt_cval_write gt_cval_write: timer {} value {:#x}"
CTL = "arm_gt_ctl_write gt_ctl_write: timer {} value {:#x}"
RECALC = "arm_gt_recalc gt recalc: timer {} irqstate {} next tick 0xffffffffffffffff"
OFF = "arm_gt_recalc_disabled gt recalc: timer 1 irqstate 0 timer disabled"


def load(off: int, cval: int = 0, ctl: int = 0) -> list[str]:
    """KVM loads a vCPU: the VM's offset, then the vCPU's saved CVAL and CTL."""
    return [LOAD.format(off), OFF, CVAL.format(1, cval), OFF, CTL.format(1, ctl)]


def put(busy: bool = False) -> list[str]:
    """KVM puts a vCPU: CTL = 0, (the other timers saved), offset 0."""
    others = [CVAL.format(0, 0), CTL.format(0, 0), RECALC.format(2, 1)] * 3 if busy else []
    return [CTL.format(1, 0), OFF, *others, LOAD.format(0), OFF]


def timelines(lines: list[str]) -> list[qemu_trace.VmTimeline]:
    return qemu_trace.timelines(qemu_trace.parse(lines))


def test_a_put_that_saves_other_timers_first_is_no_edge():
    lines = [
        *load(0x100),
        CVAL.format(1, 0x50),
        CTL.format(1, 1),
        RECALC.format(1, 0),
        RECALC.format(1, 1),  # fires while loaded
        *put(busy=True),  # nine other-timer events between CTL = 0 and the offset write
        *load(0x100, 0x50, 5),
        RECALC.format(1, 1),  # still high: no change
    ]
    (vm,) = timelines(lines)
    assert [(c.level, c.while_out) for c in vm.changes] == [(1, False)]
    assert vm.loads == 2


def test_two_vcpus_of_one_vm_keep_their_own_levels():
    lines = [
        *load(0x100),  # vCPU 0, first load
        CVAL.format(1, 0x50),
        CTL.format(1, 1),
        RECALC.format(1, 0),
        RECALC.format(1, 1),  # vCPU 0 fires
        *put(),
        *load(0x100),  # vCPU 1, first load: its reset state, its own level 0
        RECALC.format(1, 0),
        CVAL.format(1, 0x90),
        CTL.format(1, 1),
        RECALC.format(1, 0),
        *put(),
        *load(0x100, 0x50, 5),  # vCPU 0 again: still high, no change
        RECALC.format(1, 1),
        CTL.format(1, 3),  # its handler masks: a fall
        RECALC.format(1, 0),
        *put(),
        *load(0x100, 0x90, 1),  # vCPU 1 again: fired while out
        RECALC.format(1, 1),
    ]
    (vm,) = timelines(lines)
    assert [(c.level, c.while_out) for c in vm.changes] == [(1, False), (0, False), (1, True)]
    assert vm.edges() == 2


def test_an_offset_set_by_a_restore_stays_with_its_vm():
    lines = [
        *load(0x100),
        CVAL.format(1, 0x50),
        CTL.format(1, 1),
        RECALC.format(1, 0),
        RECALC.format(1, 1),
        *put(),
        *load(0x180, 0x50, 5),  # KVM_SET_ONE_REG(CNT) moved the offset; same timer state
        RECALC.format(1, 1),
        CTL.format(1, 3),
        RECALC.format(1, 0),
        *put(),
        *load(0x300),  # the next test's VM: reset state
        RECALC.format(1, 0),
        *put(),
    ]
    first, second = timelines(lines)
    assert first.offsets == [0x100, 0x180] and first.cntvoff == 0x100
    assert [c.level for c in first.changes] == [1, 0]
    assert second.offsets == [0x300] and second.changes == []
