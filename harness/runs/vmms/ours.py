"""The VMMs a run can drive its tests with, as a registry of hooks.

A run (harness/runs/run.py) is the same loop whatever the VMM: build, boot, feed the
console to a judge session, write the outputs. What differs is a VMM's hooks:
which tests it runs (suite), what it needs built before the boot (prepare),
the suite's initrd, a judge for tests of its own (None: the model's verdict),
and what it adds to results.json (extra_results). `ours` is vmm/ (vtvmm);
`qemu` (harness/runs/vmms/qemu_vmm.py) is QEMU itself with kernel-irqchip=off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.build import initramfs
from harness.core import repo
from harness.inputs import guest_spec
from harness.inputs import revision as revmod
from harness.judge.result import TestResult, skipped

if TYPE_CHECKING:
    from harness.inputs.options import RunOptions
    from harness.judge.session import Session


@dataclass
class Suite:
    """A run's tests: every selected one in order, those the VMM runs, and the
    others' SKIP verdicts (known before the boot)."""

    specs: list
    runnable: list
    skipped: dict[str, TestResult] = field(default_factory=dict)


class Vmm:
    """Our VMM (vmm/): the guest tests of guest_tests/, one VM each."""

    name = "ours"

    def __init__(self, opts: RunOptions, rev: revmod.Revision, say: Callable[[str], None]) -> None:
        self.opts = opts
        self.rev = rev
        self.say = say
        self.identity: dict = {}  # what the run's identity adds for this VMM
        self.plan: initramfs.SuitePlan | None = None

    @property
    def run_suffix(self) -> str:
        """The run directory's name ends in it."""
        return "" if self.name == "ours" else f"-{self.name}"

    def suite(self) -> Suite:
        specs = guest_spec.select(guest_spec.load_all(), self.opts.tests)
        specs = guest_spec.with_timeout(specs, self.opts.test_timeout_s)
        runnable = [s for s in specs if self.rev.abi.name in s.abis]
        why = f"the {self.rev.abi.name} ABI cannot express it"
        return Suite(specs, runnable, {s.name: skipped(s, why) for s in specs if s not in runnable})

    def prepare(self, holds: contextlib.ExitStack) -> None:
        """What the boot needs besides the kernel and our VMM (HarnessError if it
        cannot be had); what it holds stays held in holds until the run ends."""

    def initrd(self, runnable: list, out: Path, holds: contextlib.ExitStack) -> Path:
        """The suite's initramfs at out (or one it points to)."""
        info = self.opts.kernel_info or {}
        self.plan = initramfs.SuitePlan(
            self.rev.abi.name,
            self.opts.policy,
            tuple(runnable),
            live=bool(self.opts.fault),
            modules=tuple(repo.ROOT / m for m in info.get("modules") or ()),
        )
        return initramfs.build(self.plan, repo.VMM_BIN, out, cache=repo.BUILD / "initramfs")

    def judge(self, session: Session, spec: object) -> tuple[TestResult, list[str]] | None:
        """A verdict of the VMM's own for spec, with diagnostics; None: the model's."""
        return None

    def extra_results(self) -> dict:
        """Keys results.json adds for this VMM."""
        return {}
