"""The VMMs by name (options.VMMS): each a class of harness/runs/vmms/ours.py's hooks,
imported when a run asks for it (QEMU's brings the rootfs and initrd builders)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from harness.core.errors import HarnessError
from harness.inputs import revision as revmod
from harness.inputs.options import VMMS, RunOptions
from harness.runs.vmms.ours import Vmm

# name -> (module, class)
REGISTRY: dict[str, tuple[str, str]] = {
    "ours": ("harness.runs.vmms.ours", "Vmm"),
    "qemu": ("harness.runs.vmms.qemu_vmm", "QemuVmm"),
}
assert tuple(REGISTRY) == VMMS


def vmm_class(name: str) -> type[Vmm]:
    """The hooks class of the VMM called name (HarnessError if there is none)."""
    if name not in REGISTRY:
        raise HarnessError(None, f"unknown VMM '{name}' (valid: {', '.join(VMMS)})")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def make(opts: RunOptions, rev: revmod.Revision, say: Callable[[str], None]) -> Vmm:
    """opts.vmm's hooks for one run."""
    return vmm_class(opts.vmm)(opts, rev, say)
