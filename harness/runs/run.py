"""boot-test: build the kernel, boot it nested, run the suite, judge, report.

A Run is the loop every VMM shares (harness/runs/vmms/ours.py has what differs): the
kernel, the VMM's preparations and initrd, one boot whose console feeds a judge
session (harness/judge/session.py), and the run's files (harness/outputs/run_files.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from harness.boot.channels import TraceFile
from harness.boot.qemu_runner import BootResult
from harness.boot.suite import Hooks, SuiteBoot, suite_bound
from harness.build import kernel
from harness.build.artifacts import build_artifacts
from harness.core import repo, resultsfile, signals
from harness.core.errors import BuildError, HarnessError, InputError
from harness.core.status import BootStatus
from harness.inputs import machine
from harness.inputs import revision as revmod
from harness.inputs.options import POLICIES, RunOptions
from harness.judge.result import TestResult
from harness.runs import prefetch
from harness.runs import vmms as vmm_registry
from harness.runs.vmms.ours import Suite, Vmm

if TYPE_CHECKING:  # imported once QEMU runs: its start does not wait for the judge
    from harness.judge.session import Session
    from harness.outputs.run_files import RunFiles


@dataclass
class RunOutcome:
    run_dir: Path
    results: list[TestResult]
    boot: BootResult | None
    exit_code: int
    by_model: dict[str, list[TestResult]] = field(default_factory=dict)
    interrupted: str | None = None  # the signal that stopped the run (SIGINT, SIGTERM)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def identity(
    rev: revmod.Revision, mach: machine.Machine, policy: str, vmm: str, source: str
) -> dict:
    """What results.json says the run was, before anything is built: the patches
    are the series for the kernel source built (none where it has none)."""
    try:
        rev = rev.for_source(source)
    except InputError:
        rev = dataclasses.replace(rev, patches=())
    return {
        "revision": rev.name,
        "provenance": rev.provenance,
        "model": rev.model,
        "patches": rev.patch_hashes(),
        "machine": asdict(mach)
        | {"kernel_fragments": [repo.rel(f) for f in mach.kernel_fragments]},
        "policy": policy,
        "vmm": vmm,
        "harness": prefetch.take("git", repo.git_describe),
    }


@dataclass
class RunSetup:
    """What a run is before it runs: its revision, machine, VMM hooks, tests and
    results directory; its judge session and files are made when first used (a
    live run: once QEMU has started, so the judge's imports and set-up overlap
    QEMU's own). A live run and an offline judging (harness/runs/offline.py)
    start from the same."""

    opts: RunOptions
    rev: revmod.Revision
    machine: machine.Machine
    vmm: Vmm
    suite: Suite
    models: list[revmod.Revision]  # --model: judged by these too
    run_dir: Path
    identity: dict
    say: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, opts: RunOptions, say: Callable[[str], None]) -> RunSetup:
        rev = revmod.load(opts.revision)
        mach = machine.load(opts.machine)
        if opts.policy not in POLICIES:
            raise HarnessError(
                None, f"unknown policy '{opts.policy}' (valid: {', '.join(POLICIES)})"
            )
        vmm = vmm_registry.make(opts, rev, say)
        suite = vmm.suite()
        models = [revmod.load(m) for m in opts.models]
        run_dir = resultsfile.new_run_dir(
            f"{rev.name}-{mach.name}-{opts.policy}{vmm.run_suffix}", opts.results_base
        )
        ident = identity(rev, mach, opts.policy, opts.vmm, opts.kernel_source)
        if opts.test_timeout_s is not None:  # every test's watchdog, not its own
            ident["test_timeout_s"] = opts.test_timeout_s
        return cls(opts, rev, mach, vmm, suite, models, run_dir, ident, say)

    @cached_property
    def session(self) -> Session:
        from harness.judge.model import Model
        from harness.judge.session import Session

        suite = self.suite
        session = Session(
            self.rev, Model.of(self.rev), suite.specs, suite.runnable, suite.skipped,
            [Model.of(m) for m in self.models], judge=self.vmm.judge, say=self.say,
        )  # fmt: skip
        if not self.opts.trace_events:
            session.hw.off = "QEMU's trace is off (--trace none)"
        session.on_result = lambda r: self.files.saved_test(r)
        return session

    @cached_property
    def files(self) -> RunFiles:
        from harness.outputs.run_files import RunFiles

        return RunFiles(
            self.run_dir, self.identity, self.session, extra=self.vmm.extra_results,
            started=self.started,
        )  # fmt: skip

    def outcome(
        self, say: Callable[[str], None], finished: tuple[list[TestResult], int] | None = None
    ) -> RunOutcome:
        """The run's last files (unless finished: written already), and what it came to."""
        results, code = finished or self.files.finish(self.rev.name, say)
        by_model = {m: list(rs.values()) for m, rs in self.session.by_model.items()}
        return RunOutcome(self.files.run_dir, results, self.files.boot, code, by_model)


class Run:
    """One boot-test run; results.json is written after every test."""

    def __init__(self, opts: RunOptions, say: Callable[[str], None]) -> None:
        self.opts = opts
        self.say = say
        setup = self.setup = RunSetup.of(opts, say)
        self.rev, self.machine, self.vmm = setup.rev, setup.machine, setup.vmm
        self.runnable = setup.suite.runnable
        self.run_dir, self.identity = setup.run_dir, setup.identity
        self._finished: tuple[list[TestResult], int] | None = None  # _on_done's files
        self._booting = False  # the boot began: KTAP says every test from then on

    @property
    def session(self) -> Session:
        return self.setup.session

    @property
    def files(self) -> RunFiles:
        return self.setup.files

    def execute(self) -> RunOutcome:
        try:
            with contextlib.ExitStack() as holds:  # what the VMM holds until the run ends
                return self._execute(holds)
        except KeyboardInterrupt as e:  # signals.Interrupted: SIGINT or SIGTERM
            with signals.deferred():  # QEMU has ended; the results are written whole
                return self._interrupted(signals.of(e))
        except InputError as e:  # an input only QEMU could judge (--trace): exit 2
            self.identity["error"] = str(e)
            self.files.save(complete=False)
            raise

    def _interrupted(self, sig: signals.Interrupted) -> RunOutcome:
        """QEMU has ended (QemuRun's exit): keep what ran, the rest ERROR/MISS."""
        self.say(f"# {sig.reason}: QEMU ended, partial results kept")
        if self._booting:
            self._spawned()  # a stop before QEMU ran: KTAP still lists every test
        self.session.close(BootStatus.INTERRUPTED, sig.reason)
        self.files.save(complete=False)
        return replace(self._outcome(), exit_code=sig.exit_code, interrupted=sig.name)

    def _execute(self, holds: contextlib.ExitStack) -> RunOutcome:
        prefetch.take("artifacts", build_artifacts)
        self.identity["vmm_sha256"] = _sha256(repo.VMM_BIN)
        self.identity["guest_images"] = {s.name: _sha256(s.image) for s in self.runnable}
        try:
            self.vmm.prepare(holds)
            image = self._kernel()
        except (BuildError, HarnessError) as e:
            if isinstance(e, InputError):
                raise
            return self._harness_failure(e)
        self.identity |= self.vmm.identity
        initrd = self.vmm.initrd(self.runnable, self.run_dir / "initramfs.cpio.gz", holds)
        self.identity |= self.vmm.identity
        self._booting = True
        status, reason = self._boot(image, initrd)
        self._spawned()  # a QEMU that never ran: KTAP still lists every test
        if status != BootStatus.COMPLETED:
            self.say(f"# boot: {status}: {reason}")
        if self._finished is None:
            self._close(status, reason)
        self.files.save(complete=status == BootStatus.COMPLETED)
        return self.setup.outcome(self.say, self._finished)

    def _close(self, status: BootStatus, reason: str) -> None:
        self.session.close(status, reason)
        if self.session.suite_errors:
            self.identity["suite_errors"] = self.session.suite_errors

    def _on_done(self, boot: BootResult) -> None:
        """The suite is done: its verdicts and files while QEMU powers off (the boot
        as it is now; results.json gets QEMU's exit after it)."""
        self.files.boot = boot
        self._close(BootStatus.COMPLETED, "suite finished")
        data = self.files.data(complete=True)  # the report's run; saved once QEMU is gone
        self._finished = self.files.finish(self.rev.name, self.say, data)

    def _kernel(self) -> Path:
        if self.opts.kernel_image:
            ident = {"image": str(self.opts.kernel_image), "prebuilt": True}
            self.identity["kernel"] = ident | (self.opts.kernel_info or {})
            return self.opts.kernel_image
        if self.opts.developer_kernel():
            k = developer_kernel(self.opts, self.rev, self.machine, self.say, self.identity)
        else:
            k = kernel.build(
                self.rev,
                self.machine,
                jobs=self.opts.jobs,
                say=lambda m: self.say(f"# {m}"),
                source_package=self.opts.kernel_source,
            )
        how = "cached" if k.cached else f"built in {k.build_seconds} s"
        self.say(f"# kernel: {k.release} ({how}, {k.build_dir})")
        self.identity["kernel"] = k.identity()
        return k.image

    def _spawned(self) -> None:
        """QEMU has started: the judge session, KTAP's header and a first results.json,
        while QEMU sets itself up (the judge is imported and built meanwhile). Once:
        a boot that ended before QEMU ran calls it too."""
        from harness.outputs import ktap

        if self.files.ktap is not None:
            return
        self.session.line_of = self.vmm.plan.line_of() if self.vmm.plan else {}
        header = [
            f"vtimer-harness rev={self.rev.name} machine={self.machine.name} "
            f"policy={self.opts.policy}",
            f"results: {repo.rel(self.run_dir)}",
        ]
        self.files.ktap = ktap.KtapWriter(self.say, header, len(self.session.specs))
        self.session.emit = self.files.ktap.emit
        self.session.start()
        self.files.save(complete=False)

    def _boot(self, image: Path, initrd: Path) -> tuple[BootStatus, str]:
        timeouts = replace(self.opts.timeouts)
        if timeouts.suite_s is None:
            timeouts.suite_s = suite_bound(self.runnable)
        boot = SuiteBoot(self.machine, self.run_dir, self.opts.trace_events, timeouts, self.say)
        hooks = Hooks(  # the session is made once QEMU has started (_spawned)
            self._layer0,
            lambda line: self.session.feed(line),
            lambda: self.session.suite_done,
            lambda: self.session.doing(),
            self._armed,
            lambda line: self.session.feed_port(line),
            self._on_done,
            self._spawned,
        )
        try:
            boot.run(image, initrd, hooks, self.opts.fault)
        finally:
            self.files.boot, self.files.cpu_threads = boot.result, boot.cpu_threads
        return boot.result.status, boot.result.reason

    def _layer0(self, trace: TraceFile | None, cpu_threads: dict[int, int]) -> None:
        """QEMU's trace, as it is written, as the session's layer 0."""
        if trace is not None:
            self.session.hw.open(trace.path, cpu_threads, self.machine.smp, trace)

    def _armed(self) -> str | None:
        """The test whose timer arming the last record reported (the faults' moment)."""
        recs = self.session.stream.parsed.records
        if recs and recs[-1].kind == "exit" and recs[-1].get("port") == "ARM":
            return recs[-1].test
        return None

    def _harness_failure(self, e: HarnessError) -> RunOutcome:
        self.say(f"error: {e}")
        if isinstance(e, BuildError) and e.log_tail:
            self.say(e.log_tail)
        self.identity["error"] = str(e)
        self.session.fail_all(str(e))
        self.files.save(complete=False)
        return self._outcome()

    def _outcome(self) -> RunOutcome:
        return self.setup.outcome(self.say)


def developer_kernel(
    o: RunOptions,
    rev: revmod.Revision,
    mach: machine.MachineConfig,
    say: Callable[[str], None],
    identity: dict,
) -> kernel.Kernel:
    """--tree and/or --series: built out of tree; the revision only judges it (its
    own series applied too with rev_series). identity gets where it came from."""
    from harness.build import series

    series_path = o.series or (rev.directory if o.rev_series else None)
    if o.tree and o.series and o.rev_series:
        raise InputError(None, "--series and --rev-series: give one series")
    k = series.build(
        rev,
        mach,
        tree_path=o.tree,
        series_path=series_path,
        jobs=o.jobs,
        say=lambda m: say(f"# {m}"),
        source_package=o.kernel_source,
    )
    identity["patches"] = k.patches
    identity["source"] = {
        "tree": str(o.tree.resolve()) if o.tree else None,
        "series": str(series_path) if series_path else None,
        "judged_as": rev.name,
    }
    return k


def boot_test(opts: RunOptions, say: Callable[[str], None] | None = None) -> RunOutcome:
    def out(line: str) -> None:
        print(line, flush=True)

    return Run(opts, say or out).execute()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(boot_test(RunOptions()).exit_code)
