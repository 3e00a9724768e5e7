"""boot-test: build the kernel, boot it nested, run the suite, judge, report."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness import (
    abicheck,
    guest_spec,
    initramfs,
    junit,
    kernel,
    ktap,
    machine,
    qemu_trace,
    records,
    repo,
    report,
    resultsfile,
    signals,
)
from harness import revision as revmod
from harness.artifacts import build_artifacts  # lava imports it from here too
from harness.errors import BuildError, HarnessError, InputError
from harness.model import Model
from harness.qemu_runner import BootResult, QemuRun, QmpTimeout, Timeouts
from harness.trace import TestTrace
from harness.verdict import ERROR, FAILED, MISSED, PASSED, SKIPPED, TestResult, evaluate, skipped

POLICIES = ("every-exit", "eintr-only")
# which VMM runs the tests: ours (vmm/), or QEMU itself for the tests in
# guest_tests/qemu/, next to their peers under ours (harness/qemu_vmm.py)
VMMS = ("ours", "qemu")
# faults injected during a run at each test's first timer arming:
# stop-cont pauses the whole machine over QMP for 200 ms; host-load burns the
# host's CPUs for 500 ms. Either way each timer must still fire exactly once.
FAULTS = ("stop-cont", "host-load")


def _burn_cpu(seconds: float) -> None:
    """Load every host CPU for a while (processes, so the GIL does not serialize)."""
    import multiprocessing

    def spin(until: float) -> None:
        while time.monotonic() < until:
            pass

    until = time.monotonic() + seconds
    procs = [
        multiprocessing.Process(target=spin, args=(until,)) for _ in range(os.cpu_count() or 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


@dataclass
class RunOptions:
    revision: str = "upstream"
    machine: str = "virt-gicv3"
    policy: str = "every-exit"
    tests: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # extra models to judge the same traces by
    kernel_image: Path | None = None  # a prebuilt Image instead of building
    kernel_info: dict | None = None  # what that prebuilt Image is (package, version, ...)
    kernel_source: str = kernel.DEFAULT_SOURCE  # the source package a built kernel comes from
    trace_events: tuple[str, ...] = ("arm_gt_*",)
    timeouts: Timeouts = field(default_factory=Timeouts)
    results_base: Path = repo.RESULTS
    jobs: int | None = None
    fault: str | None = None  # one of FAULTS
    vmm: str = "ours"  # one of VMMS


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


def _git_rev() -> str:
    out = subprocess.run(
        ["git", "-C", str(repo.ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


# /init's grace after a watchdog (STOP_GRACE_MS in vmm/init.c), and the time to write
# a test's records and kernel events after it ended
_STOP_GRACE_S, _RECORDS_S, _SUITE_MARGIN_S = 5.0, 5.0, 30.0


def suite_bound(tests: list[guest_spec.GuestTest]) -> float:
    """How long /init may take for tests, whatever the kernel does: each test's
    watchdog, the grace after it, its records, and a margin."""
    return sum(t.timeout_s + _STOP_GRACE_S + _RECORDS_S for t in tests) + _SUITE_MARGIN_S


class Run:
    """State of one boot-test run; results are written after every test."""

    def __init__(self, opts: RunOptions, say: Callable[[str], None]) -> None:
        self.opts = opts
        self.say = say
        self.rev = revmod.load(opts.revision)
        self.machine = machine.load(opts.machine)
        if opts.policy not in POLICIES:
            raise HarnessError(
                None, f"unknown policy '{opts.policy}' (valid: {', '.join(POLICIES)})"
            )
        all_tests = guest_spec.load_all()
        self.specs = guest_spec.select(all_tests, opts.tests)
        self.model = Model.of(self.rev)
        self.extra_models = [Model.of(revmod.load(m)) for m in opts.models]
        self.runnable = [s for s in self.specs if self.rev.abi.name in s.abis]
        self.results: dict[str, TestResult] = {
            s.name: skipped(s, f"the {self.rev.abi.name} ABI cannot express it")
            for s in self.specs
            if s not in self.runnable
        }
        self.by_model: dict[str, dict[str, TestResult]] = {m.name: {} for m in self.extra_models}
        self.run_dir = resultsfile.new_run_dir(
            f"{self.rev.name}-{self.machine.name}-{opts.policy}"
            + ("" if opts.vmm == "ours" else f"-{opts.vmm}"),
            opts.results_base,
        )
        self.identity: dict = {
            "revision": self.rev.name,
            "provenance": self.rev.provenance,
            "model": self.rev.model,
            "patches": self.rev.patch_hashes(),
            "machine": asdict(self.machine)
            | {"kernel_fragments": [repo.rel(f) for f in self.machine.kernel_fragments]},
            "policy": opts.policy,
            "vmm": opts.vmm,
            "harness": _git_rev(),
        }
        self.boot: BootResult | None = None
        self.hw_reader: qemu_trace.Reader | None = None
        self.hw_off = "QEMU's trace is off (--trace none)" if not opts.trace_events else ""
        self.cpu_threads: dict[int, int] = {}
        self.started = time.monotonic()
        self.stream = records.Stream()
        self.ktap: ktap.KtapWriter | None = None
        self.plan: initramfs.SuitePlan | None = None
        self.abi_gate = abicheck.Gate(self.rev)

    # -- results -----------------------------------------------------------
    def ordered(self) -> list[TestResult]:
        return [
            self.results[s.name]
            for s in self.runnable + [s for s in self.specs if s not in self.runnable]
            if s.name in self.results
        ]

    def save(self, complete: bool) -> None:
        results = self.ordered()
        counts = {
            s: sum(r.status == s for r in results) for s in (PASSED, FAILED, ERROR, SKIPPED, MISSED)
        }
        data = {
            "format": resultsfile.FORMAT,
            "run_id": self.run_dir.name,
            "complete": complete,
            "identity": self.identity,
            "boot": None
            if self.boot is None
            else {
                "status": self.boot.status,
                "reason": self.boot.reason,
                "wall_s": round(self.boot.wall_s, 3),
                "init_s": None if self.boot.init_s is None else round(self.boot.init_s, 3),
                "qemu_exit": self.boot.qemu_exit,
                "qemu_version": self.boot.qemu_version,
                "trace_events": self.boot.traces_enabled,
                # vCPU thread id -> L1 CPU, to split qemu-trace.log per CPU again
                "cpu_threads": {str(t): c for t, c in self.cpu_threads.items()},
            },
            "abi_check": self.abi_gate.last.to_json(),
            "tests": [r.to_json() for r in results],
            "models": {m: [r.to_json() for r in rs.values()] for m, rs in self.by_model.items()},
            "summary": counts,
            "logs": sorted(p.name for p in self.run_dir.iterdir() if not p.name.startswith(".")),
        }
        resultsfile.write_json(self.run_dir / "results.json", data)

    def hardware(self, test: str) -> tuple[qemu_trace.VmTimeline | None, str]:
        """Layer 0 for test: the n-th VM in QEMU's trace is the n-th test that began;
        None with the reason when there is none to trust."""
        if self.hw_reader is None:
            return None, self.hw_off
        began = self.stream.parsed.began
        if test not in began:
            return None, "the test never began"
        # the ABI probe's VM, if it ran, is the first in QEMU's trace
        vms = self.hw_reader.timelines()[abicheck.probe_vms(self.stream.parsed) :]
        n = began.index(test)
        # the next test's VM may have started already; more VMs than that means a
        # test changed its offset (e.g. a restored CNTVCT) and the order is unreliable
        if n >= len(vms):
            return None, f"QEMU's trace shows {len(vms)} VMs, this test ran the {n + 1}th"
        if len(vms) > len(began) + 1:
            return None, (
                f"QEMU's trace shows {len(vms)} VMs for {len(began)} tests: "
                "which VM is which test's is not known"
            )
        return vms[n], ""

    def finish_test(self, spec: guest_spec.GuestTest) -> None:
        parsed = self.stream.parsed
        recs = parsed.of(spec.name)
        probs = parsed.problems_for(spec.name)
        hw, why = self.hardware(spec.name)
        dropped = parsed.problems_dropped.get(spec.name, 0)
        gate = self.abi_gate.apply
        res = gate(evaluate(spec, recs, probs, self.model, hw, why, dropped), parsed)
        self.results[spec.name] = res
        for m in self.extra_models:
            judged = evaluate(spec, recs, probs, m, hw, why, dropped)
            self.by_model[m.name][spec.name] = gate(judged, parsed)
        if self.ktap:
            self.ktap.result(res)
        self.save(complete=False)

    # -- the run -----------------------------------------------------------
    def execute(self) -> RunOutcome:
        try:
            return self._execute()
        except KeyboardInterrupt as e:  # signals.Interrupted: SIGINT or SIGTERM
            with signals.deferred():  # QEMU has ended; the results are written whole
                return self._interrupted(signals.of(e))
        except InputError as e:  # an input only QEMU could judge (--trace): exit 2
            self.identity["error"] = str(e)
            self.save(complete=False)
            raise

    def _interrupted(self, sig: signals.Interrupted) -> RunOutcome:
        """QEMU has ended (QemuRun's exit): keep what ran, the rest ERROR/MISS."""
        self.say(f"# {sig.reason}: QEMU ended, partial results kept")
        self._close_unfinished(ERROR, sig.reason)
        self.save(complete=False)
        out = self._write_outputs()
        return replace(out, exit_code=sig.exit_code, interrupted=sig.name)

    def _execute(self) -> RunOutcome:
        say = self.say
        build_artifacts()
        self.identity["vmm_sha256"] = _sha256(repo.VMM_BIN)
        self.identity["guest_images"] = {s.name: _sha256(s.image) for s in self.runnable}
        if self.opts.kernel_image:
            kern_identity = {"image": str(self.opts.kernel_image), "prebuilt": True}
            kern_identity |= self.opts.kernel_info or {}
            image = self.opts.kernel_image
        else:
            try:
                k = kernel.build(
                    self.rev,
                    self.machine,
                    jobs=self.opts.jobs,
                    say=lambda m: say(f"# {m}"),
                    source_package=self.opts.kernel_source,
                )
            except BuildError as e:
                return self._harness_failure(e)
            kern_identity = k.identity()
            image = k.image
            how = "cached" if k.cached else f"built in {k.build_seconds} s"
            say(f"# kernel: {k.release} ({how}, {k.build_dir})")
        self.identity["kernel"] = kern_identity
        initrd = self._initrd()
        self.ktap = ktap.KtapWriter(
            say,
            [
                f"vtimer-harness rev={self.rev.name} machine={self.machine.name} "
                f"policy={self.opts.policy}",
                f"results: {repo.rel(self.run_dir)}",
            ],
            len(self.specs),
        )
        for r in self.results.values():  # skipped ones first: their verdict is known
            self.ktap.result(r)
        self.save(complete=False)
        specs = {s.name: s for s in self.runnable}
        done = {"suite": False}

        def on_line(line: str) -> None:
            for rec in self.stream.feed(line):
                if rec.kind == "end" and rec.test in specs:
                    self.finish_test(specs[rec.test])
                elif rec.kind == "done":
                    done["suite"] = True

        self.boot = self._boot(image, initrd, on_line, lambda: done["suite"])
        status, reason = self.boot.status, self.boot.reason
        if status != "completed":
            say(f"# boot: {status}: {reason}")
            self._close_unfinished(
                FAILED if status == "panic" else ERROR, f"boot {status}: {reason}"
            )
        self._close_unreported(specs)
        self.save(complete=status == "completed")
        return self._write_outputs()

    def _initrd(self) -> Path:
        self.plan = initramfs.SuitePlan(
            self.rev.abi.name, self.opts.policy, tuple(self.runnable), live=bool(self.opts.fault)
        )
        return initramfs.build(self.plan, repo.VMM_BIN, self.run_dir / "initramfs.cpio.gz")

    def _close_unreported(self, specs: dict[str, guest_spec.GuestTest]) -> None:
        """Every runnable test gets a verdict: one that began but has no end record
        is ERROR, one /init rejected is ERROR with /init's words, one never run is
        MISS with the suite's errors as the reason."""
        parsed = self.stream.parsed
        line_of = self.plan.line_of() if self.plan else {}
        rejected: dict[str, str] = {}
        suite_errors = []
        for r in parsed.of(records.SUITE):
            if r.kind != "error":
                continue
            test = line_of.get(r.int("line", -1))
            if test is not None:
                rejected[test] = f"/init rejected its manifest line {r.get('line')}: {r.get('msg')}"
            else:
                suite_errors.append(r.get("msg", "?"))
        if suite_errors:
            self.identity["suite_errors"] = suite_errors
            for e in suite_errors:
                self.say(f"# /init: {e}")
        for name, spec in specs.items():
            if name in self.results:
                continue
            if parsed.of(name):
                self.finish_test(spec)  # evaluate() says what is missing (no end record)
                continue
            if name in rejected:
                res = TestResult(name, ERROR, [rejected[name]])
            else:
                why = "; ".join(suite_errors) or "/init did not run it and said nothing"
                res = TestResult(name, MISSED, [f"never ran: {why}"])
            res = self.abi_gate.apply(res, parsed, ended=False)
            self.results[name] = res
            if self.ktap:
                self.ktap.result(res)

    def _boot(
        self,
        image: Path,
        initrd: Path,
        on_line: Callable[[str], None],
        done: Callable[[], bool],
    ) -> BootResult:
        """One QEMU run of the suite; QEMU's failures end as a classified boot status."""
        signals.check()  # a stop asked for in another thread (a matrix's) before the boot
        start = time.monotonic()
        timeouts = dataclasses.replace(self.opts.timeouts)
        if timeouts.suite_s is None:
            timeouts.suite_s = suite_bound(self.runnable)
        events = self.opts.trace_events
        if self.machine.smp > 1 and any(p.startswith("arm_gt") for p in events):
            events += qemu_trace.TRACE_EVENTS_SMP[self.machine.gic_version]
        q = QemuRun(self.machine, image, initrd, self.run_dir, events, timeouts)
        self.hw_reader = None
        version, enabled, diag, exit_status = "", [], None, None

        def result(status: str, reason: str) -> BootResult:
            return BootResult(
                status, reason, q.console_log, q.qemu_stderr, q.trace_log,
                time.monotonic() - start, exit_status, version, enabled, diag, q.init_s,
            )  # fmt: skip

        try:
            with q:
                self.say(f"# qemu: {machine.shell_line(q.argv)}")
                version, enabled = q.start()
                self.cpu_threads = q.cpu_threads
                # several CPUs need a thread each (MTTCG) to be told apart
                threads = q.cpu_threads if self.machine.smp > 1 else None
                split = threads is None or len(threads) == self.machine.smp
                if q.trace_log and split:
                    self.hw_reader = qemu_trace.Reader(q.trace_log, threads)
                elif q.trace_log:
                    self.hw_off = "several L1 CPUs share one QEMU thread: layer 0 is not split"
                if self.opts.fault:
                    on_line = self._inject(q, on_line)
                status, reason = q.follow(on_line, done, self._doing)
                diag = q.save_diagnostics() if status == "hang" else None
                if q.qmp_wedged:
                    reason += f"; {q.qmp_wedged}"
                exit_status = q.wait_exit() if status == "completed" else q.stop()
        except InputError:
            raise
        except KeyboardInterrupt as e:  # SIGINT/SIGTERM: QEMU was ended by `with q`
            exit_status = q.exit_status
            self.boot = result("interrupted", signals.of(e).reason)
            raise
        except QmpTimeout as e:  # wedged: killed on the way out of `with q`
            status, reason = "hang", str(e)
            diag = q.save_diagnostics()
            exit_status = q.exit_status
        except HarnessError as e:
            status, reason = "qemu-died", str(e)
            exit_status = q.exit_status
        if status == "qemu-died":
            exit_status = q.exit_status
            tail = q.stderr_tail()
            reason += f" (exit status {exit_status}{'; stderr: ' + tail if tail else ''})"
        return result(status, reason)

    def _doing(self) -> str:
        """What the suite is doing, for a hang's reason: the test it is in."""
        running = next((s for s in self.runnable if s.name not in self.results), None)
        if running is None:
            return "every test ended; /init had not said done"
        done = len(self.results) - (len(self.specs) - len(self.runnable))
        return (
            f"in test {running.name} (watchdog {running.timeout_s:g} s), "
            f"{done} of {len(self.runnable)} tests done"
        )

    def _inject(self, q: QemuRun, on_line: Callable[[str], None]) -> Callable[[str], None]:
        """Fault injection over QMP at each test's first timer arming (see FAULTS)."""
        armed: set[str] = set()
        fault = self.opts.fault

        def wrapped(line: str) -> None:
            on_line(line)
            recs = self.stream.parsed.records
            if not recs or recs[-1].kind != "exit" or recs[-1].get("port") != "ARM":
                return
            test = recs[-1].test
            if test in armed:
                return
            armed.add(test)
            if fault == "stop-cont":
                q.qmp("stop")
                time.sleep(0.2)
                q.qmp("cont")
            elif fault == "host-load":
                _burn_cpu(0.5)
            self.say(f"# fault {fault} injected in {test}")

        return wrapped

    def _close_unfinished(self, status: str, why: str) -> None:
        """The test the boot died in gets status; the ones never started are MISS.

        Tests run one after the other and a test's own records arrive when it
        ends, so once /init is up the first unfinished test is the running one.
        """
        recs = self.stream.parsed.records
        started = {r.test for r in recs}
        if any(r.kind == "boot" for r in recs):
            running = next((s.name for s in self.runnable if s.name not in self.results), None)
            started.add(running)
        for s in self.runnable:
            if s.name in self.results:
                continue
            if s.name in started:
                res = TestResult(s.name, status, [why])
            else:
                res = TestResult(s.name, MISSED, [f"never ran: {why}"])
            self.results[s.name] = self.abi_gate.apply(res, self.stream.parsed, ended=False)
            if self.ktap:
                self.ktap.result(self.results[s.name])

    def _harness_failure(self, e: HarnessError) -> RunOutcome:
        self.say(f"error: {e}")
        if isinstance(e, BuildError) and e.log_tail:
            self.say(e.log_tail)
        self.identity["error"] = str(e)
        for s in self.runnable:
            self.results[s.name] = TestResult(s.name, ERROR, [str(e)])
        self.save(complete=False)
        return self._write_outputs()

    def _write_outputs(self) -> RunOutcome:
        results = self.ordered()
        wall = time.monotonic() - self.started
        resultsfile.write_atomic(
            self.run_dir / "junit.xml", junit.render("vtimer-harness", results, wall)
        )
        if self.ktap:
            resultsfile.write_atomic(self.run_dir / "ktap.txt", self.ktap.text())
        traces = {}
        for name, recs in self.stream.parsed.by_test().items():
            traces[name] = TestTrace.from_records(name, recs)
            traces[name].hw = self.hardware(name)[0]
        by_model = {m: list(rs.values()) for m, rs in self.by_model.items()}
        report.render(self.run_dir, results, traces, {self.rev.name: results} | by_model)
        self.say(ktap.summary(results))
        ok = all(r.status in (PASSED, SKIPPED) for r in results)
        self.say(f"# results: {repo.rel(self.run_dir)}/results.json")
        return RunOutcome(self.run_dir, results, self.boot, 0 if ok else 1, by_model)


def boot_test(opts: RunOptions, say: Callable[[str], None] | None = None) -> RunOutcome:
    def out(line: str) -> None:
        print(line, flush=True)

    if opts.vmm not in VMMS:
        raise HarnessError(None, f"unknown VMM '{opts.vmm}' (valid: {', '.join(VMMS)})")
    if opts.vmm == "qemu":
        from harness.qemu_vmm import QemuVmmRun

        return QemuVmmRun(opts, say or out).execute()
    return Run(opts, say or out).execute()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(boot_test(RunOptions()).exit_code)
