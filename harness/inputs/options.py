"""What a run is asked to do: RunOptions, and the names its options take."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.core import repo
from harness.inputs.revision import DEFAULT_SOURCE

POLICIES = ("every-exit", "eintr-only")
# which VMM runs the tests: ours (vmm/), or QEMU itself for the tests in
# guest_tests/qemu/, next to their peers under ours (harness/runs/vmms/ours.py's registry)
VMMS = ("ours", "qemu")
# faults injected during a run at each test's first timer arming:
# stop-cont pauses the whole machine over QMP for 200 ms; host-load burns the
# host's CPUs for 500 ms. Either way each timer must still fire exactly once.
FAULTS = ("stop-cont", "host-load")


@dataclass
class Timeouts:
    """Every wait of a boot has a deadline (harness/boot/qemu_runner.py)."""

    qmp_connect_s: float = 10.0
    boot_s: float = 120.0  # QEMU start to /init
    suite_s: float | None = None  # /init to the end of the suite (None: from the suite)
    silence_s: float = 60.0  # no console or records output at all
    shutdown_s: float = 15.0
    qmp_s: float = 10.0  # one QMP command's answer


@dataclass
class RunOptions:
    revision: str = "upstream"
    machine: str = "virt-gicv3"
    policy: str = "every-exit"
    tests: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # extra models to judge the same traces by
    kernel_image: Path | None = None  # a prebuilt Image instead of building
    kernel_info: dict | None = None  # what that prebuilt Image is (package, version, ...)
    kernel_source: str = DEFAULT_SOURCE  # the source package a built kernel comes from
    trace_events: tuple[str, ...] = ("arm_gt_*",)
    timeouts: Timeouts = field(default_factory=Timeouts)
    results_base: Path = repo.RESULTS
    jobs: int | None = None
    fault: str | None = None  # one of FAULTS
    vmm: str = "ours"  # one of VMMS
    # every test's watchdog, instead of its spec's timeout_s (None: the tests' own);
    # guest_spec.timeout_problem says what /init takes
    test_timeout_s: float | None = None
    # a developer's kernel (harness/build/tree.py, series.py): a source tree built out
    # of tree, and/or a series applied onto it (or onto kernel_source). Then revision
    # only names the profile that judges it (its ABI and model): its series is not
    # applied unless rev_series
    tree: Path | None = None
    series: Path | None = None
    rev_series: bool = False

    def developer_kernel(self) -> bool:
        return self.tree is not None or self.series is not None


TREE_PREFIX = "tree:"  # a matrix cell's source: tree:PATH


def tree_source(source: str) -> Path | None:
    """The tree a kernel source names (tree:PATH, ~ expanded), else None."""
    if source.startswith(TREE_PREFIX):
        return Path(source.removeprefix(TREE_PREFIX)).expanduser()
    return None
