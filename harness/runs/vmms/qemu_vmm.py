"""QEMU as a second VMM under test (boot-test --vmm qemu): its registry hooks.

QEMU is the production consumer of the upstream ABI: with `-accel kvm -M
virt,gic-version=2,kernel-irqchip=off` its kvm_arch_post_run() copies
run->s.regs.device_irq_level into the timer outputs wired to its emulated
GICv2, which raises the vCPU's IRQ with KVM_IRQ_LINE. Debian's arm64
qemu-system-aarch64 (build/rootfs.py) goes into the L1 initramfs
(build/qemu_initrd.py); /init runs it for a manifest "qemu" line
(vmm/qemu_vmm.c) and writes its output as records. The tests are
guest_tests/qemu/ (inputs/qemu_tests.py), judged by judge/qemu_verdict.py and
compared with their peers' verdicts under our VMM in the same boot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.build import initramfs, rootfs
from harness.build.qemu_initrd import build_initrd
from harness.core import repo
from harness.core.errors import InputError
from harness.inputs import guest_spec
from harness.inputs.options import RunOptions
from harness.inputs.qemu_tests import MACHINE, QEMU_PROGRAM, QemuTest, load_all
from harness.inputs.revision import Revision
from harness.judge.result import TestResult
from harness.judge.result import skipped as skipped_result
from harness.runs.vmms.ours import Suite, Vmm

if TYPE_CHECKING:  # the judge is imported once QEMU runs (harness/runs/run.py)
    from harness.judge.session import Session


class QemuVmm(Vmm):
    """--vmm qemu: the QEMU tests, and their peers under our VMM in the same boot."""

    name = "qemu"

    def __init__(self, opts: RunOptions, rev: Revision, say: Callable[[str], None]) -> None:
        super().__init__(opts, rev, say)
        self.qemu_tests: list[QemuTest] = []
        self.comparison: list[dict] = []
        self.rootfs: rootfs.Rootfs | None = None

    def suite(self) -> Suite:
        tests = list(load_all().values())
        if self.opts.tests:
            names = {t.name: t for t in tests}
            unknown = [n for n in self.opts.tests if n not in names]
            if unknown:
                raise InputError(
                    None, f"unknown QEMU test '{unknown[0]}' (valid: {', '.join(sorted(names))})"
                )
            tests = [names[n] for n in self.opts.tests]
        abi = self.rev.abi.name
        # one watchdog for every test (--test-timeout, a cell's timeout_s), QEMU's run too
        tests = guest_spec.with_timeout(tests, self.opts.test_timeout_s)
        self.qemu_tests = [t for t in tests if abi in t.abis]
        guests = guest_spec.load_all()
        peers = [guests[p] for p in dict.fromkeys(p for t in self.qemu_tests for p in t.peers)]
        peers = guest_spec.with_timeout(peers, self.opts.test_timeout_s)
        specs = [*peers, *tests]
        runnable = [*(p for p in peers if abi in p.abis), *self.qemu_tests]
        skipped = {
            s.name: skipped_result(
                s,
                f"QEMU does not speak the {abi} ABI"
                if isinstance(s, QemuTest)
                else f"the {abi} ABI cannot express it",
            )
            for s in specs
            if s not in runnable
        }
        return Suite(specs, runnable, skipped)

    def prepare(self, holds: contextlib.ExitStack) -> None:
        """The L1 rootfs with Debian's QEMU, held (no other run prunes it) until the run ends."""
        if not self.qemu_tests:
            return
        fs = self.rootfs = rootfs.build(say=lambda m: self.say(f"# {m}"), hold=holds)
        how = "cached" if fs.cached else f"built in {fs.build_seconds} s"
        self.say(
            f"# rootfs: qemu-system-aarch64 {fs.qemu_version} from Debian {rootfs.ARCH}, "
            f"{len(fs.files)} files, {fs.cpio.stat().st_size >> 20} MiB ({how}, "
            f"{repo.rel(fs.cpio)})"
        )
        self.identity["qemu_vmm"] = {
            "program": QEMU_PROGRAM,
            "machine": MACHINE,
            "qemu_package": f"{rootfs.TOP_PACKAGE}:{rootfs.ARCH} {fs.qemu_version}",
            "rootfs": fs.identity(),
        }

    def initrd(self, runnable: list, out: Path, holds: contextlib.ExitStack) -> Path:
        peers = [s for s in runnable if not isinstance(s, QemuTest)]
        if self.rootfs is None:  # nothing for QEMU to run
            return super().initrd(peers, out, holds)
        self.plan = initramfs.SuitePlan(
            self.rev.abi.name, self.opts.policy, tuple(peers), live=bool(self.opts.fault)
        )
        combined = build_initrd(self.plan, self.qemu_tests, self.rootfs, out, holds)
        self.identity["qemu_vmm"]["initrd"] = repo.rel(combined)
        return combined

    def judge(self, session: Session, spec: object) -> tuple[TestResult, list[str]] | None:
        from harness.judge.qemu_verdict import compare, compare_line, evaluate

        if not isinstance(spec, QemuTest):
            return None
        parsed = session.stream.parsed
        recs = [r for r in parsed.records if r.test == spec.name]
        res = session.abi_gate.apply(evaluate(spec, recs, parsed.problems_for(spec.name)), parsed)
        results = {r.name: r for r in session.results()}
        cmp = compare(spec, res, results)
        self.comparison.append(cmp)
        return res, [compare_line(cmp)]

    def extra_results(self) -> dict:
        return {"vmm_comparison": self.comparison}
