"""A judge session: a console stream in, verdicts out, test by test.

feed(line) takes the console as it comes (a live boot's serial, a LAVA job's
log, a saved console.log); each test is judged the moment its end record
arrives. close(boot_status, reason) gives every test left a verdict: the one
the boot died in gets the boot's status, those /init rejected or never ran
are ERROR or MISS with the suite's own words. results() is the verdicts in the
suite's order. The same class serves boot-test, lava-ingest and parse, so a
saved console is judged exactly as the live run judged it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.core.status import BootStatus
from harness.inputs import revision as revmod
from harness.judge import abicheck, closing
from harness.judge.layer0 import Hardware
from harness.judge.model import Model
from harness.judge.verdict import ERROR, FAILED, TestResult, evaluate, trace_for
from harness.traces import qemu_trace, records
from harness.traces.test_trace import TestTrace

# a judge for the tests a VMM runs itself (its registry hook): the result and
# any diagnostic lines to show after it, or None to judge the usual way
Judge = Callable[["Session", object], "tuple[TestResult, list[str]] | None"]


@dataclass
class Session:
    """Verdicts of one suite's tests from its console stream (see the module doc)."""

    rev: revmod.Revision
    model: Model
    specs: Sequence  # every selected test, in the suite's order
    runnable: Sequence  # the ones the suite runs; the others are skipped already
    skipped: dict[str, TestResult]
    extra_models: Sequence[Model] = ()
    # each verdict as it is made, with diagnostics to show after it (a KTAP writer's)
    emit: Callable[[TestResult, Sequence[str]], None] = lambda r, diags: None
    judge: Judge | None = None
    on_result: Callable[[TestResult], None] = lambda r: None
    say: Callable[[str], None] = lambda s: None
    line_of: dict[int, str] = field(default_factory=dict)  # manifest line -> test
    hw: Hardware = field(default_factory=Hardware)
    stream: records.Stream = field(default_factory=records.Stream)
    suite_done: bool = False
    suite_errors: list[str] = field(default_factory=list)
    # judge at close, with the whole stream in (offline: a finished QEMU trace holds
    # every test's VM, which a test judged at its end would not yet know of)
    defer: bool = False

    def __post_init__(self) -> None:
        self._results: dict[str, TestResult] = dict(self.skipped)
        self.by_model: dict[str, dict[str, TestResult]] = {m.name: {} for m in self.extra_models}
        self._specs = {s.name: s for s in self.runnable}
        self._ended: list = []  # deferred: the tests that ended, in order
        # each judged test's trace as it was judged, and how many records it had then
        self._traces: dict[str, tuple[int, TestTrace]] = {}
        self.abi_gate = abicheck.Gate(self.rev)

    # -- the stream ----------------------------------------------------------
    def start(self) -> None:
        """The skipped tests' verdicts are known before the boot: KTAP says them first."""
        for r in self._results.values():
            self._emit(r)

    def feed(self, line: str, source: str = records.CONSOLE) -> list[records.Record]:
        """One line of the console or the records port; judges a test whose end
        record it completes."""
        recs = self.stream.feed(line, source)
        for rec in recs:
            if rec.kind == "end" and rec.test in self._specs:
                if self.defer:
                    self._ended.append(self._specs[rec.test])
                else:
                    self.finish(self._specs[rec.test])
            elif rec.kind == "done":
                self.suite_done = True
        return recs

    def feed_port(self, line: str) -> list[records.Record]:
        """One line of the records port (a live boot's virtio-serial port)."""
        return self.feed(line, records.PORT)

    def finish(self, spec) -> None:
        """Judge spec from its records (again, if it was already)."""
        own = self.judge(self, spec) if self.judge else None
        if own is not None:
            res, diags = own
            self._set(res, diags)
            return
        parsed = self.stream.parsed
        recs, probs = parsed.of(spec.name), parsed.problems_for(spec.name)
        hw, why = self.hardware(spec.name)
        dropped = parsed.problems_dropped.get(spec.name, 0)
        gate = self.abi_gate.apply
        tr = trace_for(spec.name, recs, hw, why)
        self._traces[spec.name] = (len(recs), tr)
        res = gate(evaluate(spec, recs, probs, self.model, problems_dropped=dropped, tr=tr), parsed)
        for m in self.extra_models:
            self.by_model[m.name][spec.name] = gate(
                evaluate(spec, recs, probs, m, hw, why, dropped), parsed
            )
        self._set(res)

    def close(self, boot_status: str, reason: str) -> None:
        """The stream has ended: every test left gets a verdict.

        A boot that did not complete ends the test it was in with FAIL (a panic)
        or ERROR; "interrupted" keeps the signal's reason as it is."""
        self.stream.close()
        for spec in self._ended:
            self.finish(spec)
        self._ended.clear()
        if boot_status == BootStatus.INTERRUPTED:
            self._close_unfinished(ERROR, reason)
            return
        if boot_status != BootStatus.COMPLETED:
            status = FAILED if boot_status == BootStatus.PANIC else ERROR
            self._close_unfinished(status, f"boot {boot_status}: {reason}")
        self._close_unreported()

    def results(self) -> list[TestResult]:
        """The verdicts so far, runnable tests first, in the suite's order."""
        order = [*self.runnable, *(s for s in self.specs if s not in self.runnable)]
        return [self._results[s.name] for s in order if s.name in self._results]

    def result(self, name: str) -> TestResult | None:
        return self._results.get(name)

    # -- what the layers say ----------------------------------------------------
    def hardware(self, test: str) -> tuple[qemu_trace.VmTimeline | None, str]:
        """Layer 0 for test (judge/layer0.py), or why there is none to trust."""
        return self.hw.for_test(self.stream.parsed, test)

    def traces(self) -> dict[str, TestTrace]:
        """Each test's trace with its layer 0, for the report."""
        return {name: self.trace(name) for name in self.stream.parsed.by_test()}

    def trace(self, name: str) -> TestTrace:
        """name's trace with its layer 0: the one it was judged on (its kernel events
        parsed already, its layer 0 the verdict's) while no record came since, else
        made from its records now, with the layer 0 QEMU's trace shows now (not
        waited for: the report draws what there is)."""
        recs = self.stream.parsed.of(name)
        n, tr = self._traces.get(name, (-1, None))
        if tr is None or n != len(recs):
            tr = TestTrace.from_records(name, recs)
            tr.hw = self.hw.for_test(self.stream.parsed, name, wait=False)[0]
            self._traces[name] = (len(recs), tr)
        return tr

    def doing(self) -> str:
        """What the suite is doing, for a hang's reason: the test it is in."""
        running = next((s for s in self.runnable if s.name not in self._results), None)
        if running is None:
            return "every test ended; /init had not said done"
        done = sum(s.name in self._results for s in self.runnable)
        return (
            f"in test {running.name} (watchdog {running.timeout_s:g} s), "
            f"{done} of {len(self.runnable)} tests done"
        )

    def fail_all(self, why: str) -> None:
        """The harness could not run the suite (a build failed): every runnable test ERROR."""
        for s in self.runnable:
            self._results[s.name] = TestResult(s.name, ERROR, [why])

    # -- closing ---------------------------------------------------------------
    def _set(self, res: TestResult, diags: Sequence[str] = ()) -> None:
        self._results[res.name] = res
        self._emit(res, diags)
        self.on_result(res)

    def _emit(self, res: TestResult, diags: Sequence[str] = ()) -> None:
        self.emit(res, diags)

    def _close_unfinished(self, status: str, why: str) -> None:
        """The test the boot died in gets status; the ones never started are MISS."""
        left = [s.name for s in self.runnable if s.name not in self._results]
        for res in closing.unfinished(self.stream.parsed, left, status, why):
            self._close(res)

    def _close_unreported(self) -> None:
        """Every runnable test gets a verdict: one that began but has no end record
        is judged (evaluate() says what is missing), the rest ERROR or MISS with
        /init's words (closing.py)."""
        parsed = self.stream.parsed
        said = closing.SuiteSaid.of(parsed, self.line_of)
        self.suite_errors += said.errors
        for e in said.errors:
            self.say(f"# /init: {e}")
        for name, spec in self._specs.items():
            if name in self._results:
                continue
            if parsed.of(name):
                self.finish(spec)
            else:
                self._close(said.never_ran(name))

    def _close(self, res: TestResult) -> None:
        self._results[res.name] = self.abi_gate.apply(res, self.stream.parsed, ended=False)
        self._emit(self._results[res.name])
