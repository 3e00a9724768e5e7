"""The VMMs by name (options.VMMS): each a class of harness/runs/vmms/ours.py's hooks."""

from __future__ import annotations

from collections.abc import Callable

from harness.core.errors import HarnessError
from harness.inputs import revision as revmod
from harness.inputs.options import VMMS, RunOptions
from harness.runs.vmms.ours import Vmm
from harness.runs.vmms.qemu_vmm import QemuVmm

REGISTRY: dict[str, type[Vmm]] = {"ours": Vmm, "qemu": QemuVmm}
assert tuple(REGISTRY) == VMMS


def make(opts: RunOptions, rev: revmod.Revision, say: Callable[[str], None]) -> Vmm:
    """opts.vmm's hooks for one run."""
    if opts.vmm not in REGISTRY:
        raise HarnessError(None, f"unknown VMM '{opts.vmm}' (valid: {', '.join(VMMS)})")
    return REGISTRY[opts.vmm](opts, rev, say)
