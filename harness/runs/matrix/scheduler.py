"""Running a matrix: its kernels prepared, its cells booted, matrix.json kept.

Kernels are prepared one at a time in one thread (built, or fetched; a cached
one is instant), boots run in parallel, `slots` CPU tokens at a time: a boot
takes one token per L1 CPU of its machine, a kernel build one (it runs with
-j<cpus> anyway). Each cell runs with results_base=<matrix dir>/<cell>/, so its
run directory is <matrix dir>/<cell>/<run-id>/; matrix.json sums it up after
every cell. A cell whose QEMU died before the kernel ran is an infrastructure
failure and runs once more (RETRIES).

The boot threads take the pending cell whose kernel is prepared that comes first
in the order of harness/runs/matrix/history.py (the longest expected first, by
earlier runs of the matrix); the kernel thread prepares in that order too.
matrix.json's "utilisation" (harness/runs/matrix/utilisation.py) says how busy the
tokens were, and the last line its ratio.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.boot import qemu_runner
from harness.build import debkernel, kernel, tree
from harness.core import repo, resultsfile, signals
from harness.core.errors import BuildError, HarnessError
from harness.core.status import BootStatus, Outcome
from harness.inputs import machine as machmod
from harness.inputs import revision
from harness.inputs.options import RunOptions
from harness.runs.matrix import history, outcome, spec
from harness.runs.matrix.display import Display
from harness.runs.matrix.outcome import CellResult
from harness.runs.matrix.utilisation import Meter
from harness.runs.run import boot_test

FORMAT = "vtimer-harness-matrix/1"
# a cell whose QEMU died before the kernel ran (an infrastructure failure, e.g. QMP
# not yet listening) runs once more; matrix.json keeps the attempt's run dir
RETRIES = 1
# after SIGINT/SIGTERM: how long the running cells have, all together, to end their QEMU
# and write their results (each QEMU's end is bounded by its Timeouts)
INTERRUPT_GRACE_S = 60.0


def _infrastructure(boot: dict | None) -> bool:
    return bool(boot) and boot["status"] == BootStatus.QEMU_DIED and boot.get("init_s") is None


@dataclass
class _Prepared:
    """A cell's kernel, ready to boot (or failed to prepare)."""

    image: Path | None = None
    info: dict | None = None  # identity of a prebuilt kernel
    error: str | None = None
    build_error: bool = False
    seconds: float = 0.0
    how: str = ""


class Tokens:
    """Counting CPU tokens: a boot takes one per L1 CPU, a kernel build one. First come,
    first served: a two-CPU boot is not overtaken by one-CPU boots while it waits.
    on_change(n) hears of every take (n) and give (-n)."""

    def __init__(self, total: int, on_change: Callable[[int], None] | None = None) -> None:
        self.total = max(1, total)
        self.free = self.total
        self.cond = threading.Condition()
        self.queue: collections.deque[object] = collections.deque()
        self.on_change = on_change or (lambda n: None)

    def take(self, n: int) -> int:
        n = max(1, min(n, self.total))
        me = object()
        with self.cond:
            self.queue.append(me)
            self.cond.wait_for(lambda: self.queue[0] is me and self.free >= n)
            self.queue.popleft()
            self.free -= n
            self.on_change(n)
            self.cond.notify_all()
        return n

    def give(self, n: int) -> None:
        with self.cond:
            self.free += n
            self.on_change(-n)
            self.cond.notify_all()


class _Threads:
    """Daemon threads, counted as they finish (under a runner's condition)."""

    def __init__(self, changed: threading.Condition) -> None:
        self.changed = changed
        self.started = 0
        self.done = 0  # under self.changed

    def start(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            finally:
                with self.changed:
                    self.done += 1
                    self.changed.notify_all()

        self.started += 1
        threading.Thread(target=run, name=name, daemon=True).start()

    def wait(self, deadline: float | None = None) -> bool:
        """Until every thread started has finished (or the deadline): whether they have.
        Not Thread.join(): a signal's exception inside it can mark a running thread
        stopped, and join() then returns at once (CPython before 3.13)."""
        with self.changed:
            while self.done < self.started:
                left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True


class Runner:
    """Runs a matrix: one kernel-preparing thread, `slots` tokens of boots."""

    def __init__(
        self,
        matrix: spec.Matrix,
        results_base: Path = repo.RESULTS,
        slots: int | None = None,
        build_jobs: int | None = None,
        out: Callable[[str], None] = print,
        boot: Callable = boot_test,
    ) -> None:
        self.matrix = matrix
        self.slots = slots or os.cpu_count() or 2
        self.build_jobs = build_jobs
        self.out = out
        self._boot = boot
        self.started = time.monotonic()
        self.meter = Meter(self.started)
        self.tokens = Tokens(self.slots, self.meter.tokens)
        self.lock = threading.Lock()
        self.build_lock = threading.Lock()  # one kernel build at a time
        self.changed = threading.Condition(self.lock)
        self.stop = threading.Event()
        walls = history.expected_walls(results_base, matrix.name)  # before our own dir
        self.timed = sum(history.base_name(c.name) in walls for c in matrix.cells)
        self.order = history.order(matrix.cells, walls)  # the cells, longest expected first
        self.dir = resultsfile.new_run_dir(f"matrix-{matrix.name}", results_base)
        self.results = [CellResult(c) for c in matrix.cells]
        self.keys = [c.kernel_key() for c in matrix.cells]  # cells with one key share a kernel
        self.prepared: dict[tuple[str, ...], _Prepared] = {}
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.interrupted: signals.Interrupted | None = None
        self.threads = _Threads(self.changed)  # those of run()
        # a live block on a terminal (print to one), plain lines anywhere else
        self.display = Display(sys.stdout, self.results, self.tag, None if out is print else out)

    # -- display -------------------------------------------------------------
    def say(self, text: str) -> None:
        self.display.line(text)

    def tag(self, i: int) -> str:
        n = len(self.results)
        return f"[{i + 1:>{len(str(n))}}/{n}]"

    def table(self) -> list[str]:
        return outcome.results_table(self.results)

    # -- the run -------------------------------------------------------------
    def run(self) -> int:
        m = self.matrix
        self.say(
            f"# matrix {m.name}: {len(m.cells)} cells, {self.slots} CPU tokens for boots; "
            f"results: {repo.rel(self.dir)}; longest first, {self.timed} of {len(m.cells)} "
            "cells timed by earlier runs"
        )
        self.save()
        self.display.start()
        boots = _Boots(self)
        self.threads.start("kernels", _Kernels(self).prepare_all)
        for i in range(self.slots):
            self.threads.start(f"boot{i}", boots.work)
        try:
            self.threads.wait()
        except KeyboardInterrupt as e:  # signals.Interrupted: SIGINT or SIGTERM
            with signals.deferred():
                return self._interrupt(signals.of(e))
        finally:
            self.display.stop()
        return self._finish()

    def _finish(self) -> int:
        """matrix.json, the table and the verdict, once every thread has finished."""
        m = self.matrix
        saved = self.save()
        for line in self.table():
            self.say(line)
        if m.repeat > 1:
            for line in outcome.unstable_lines(self.results, m.repeat):
                self.say(line)
        ok = all(r.as_expected for r in self.results)
        bad = sum(not r.as_expected for r in self.results)
        verdict = "all cells as expected" if ok else f"{bad} cell(s) NOT as expected"
        ratio = saved["utilisation"]["ratio"] or 0.0  # the figures matrix.json holds
        self.say(
            f"# matrix {m.name}: {verdict}; {saved['wall_s']:.0f} s, "
            f"utilisation {ratio:.0%}; {repo.rel(self.dir)}/matrix.json"
        )
        return 0 if ok else 1

    def _interrupt(self, sig: signals.Interrupted) -> int:
        """No new cell starts; the running ones end their QEMU and keep their results
        (each Run sees the signal through signals.check()); matrix.json says so."""
        self.interrupted = sig
        signals.request(sig.signum)  # a plain KeyboardInterrupt reaches the threads too
        self.stop.set()
        with self.changed:
            self.changed.notify_all()
        self.say(f"# {sig.reason}: no new cells start; the running ones end their QEMU")
        self.threads.wait(time.monotonic() + INTERRUPT_GRACE_S)
        if n := qemu_runner.end_all():
            self.say(f"# {n} QEMU still running after {INTERRUPT_GRACE_S:.0f} s: killed")
        for r in self.results:
            if r.outcome == Outcome.RUNNING:  # its thread did not finish in time
                r.outcome, r.reason = Outcome.INTERRUPTED, sig.reason
        self.save()
        for line in self.table():
            self.say(line)
        ran = sum(r.outcome not in (Outcome.PENDING, Outcome.INTERRUPTED) for r in self.results)
        self.say(
            f"# matrix {self.matrix.name}: {sig.reason}; {ran} of {len(self.results)} cells "
            f"finished; {repo.rel(self.dir)}/matrix.json"
        )
        return sig.exit_code

    # -- outputs -------------------------------------------------------------
    def save(self) -> dict:
        """matrix.json as of now (and what it holds)."""
        with self.lock:
            done = [r for r in self.results if r.finished]
            data = {
                "format": FORMAT,
                "matrix_id": self.dir.name,
                "name": self.matrix.name,
                "description": self.matrix.description,
                "file": repo.rel(self.matrix.path),
                "file_sha256": hashlib.sha256(self.matrix.path.read_bytes()).hexdigest(),
                "started": self.started_at,
                "wall_s": round(time.monotonic() - self.started, 1),
                "slots": self.slots,
                "utilisation": self.meter.to_json(self.slots),
                "complete": not self.interrupted and len(done) == len(self.results),
                "interrupted": self.interrupted.name if self.interrupted else None,
                "ok": len(done) == len(self.results) and all(r.as_expected for r in done),
                "cells": [r.to_json(self.dir) for r in self.results],
                "repeat": self.matrix.repeat,
                "unstable": outcome.unstable([r for r in done if r.outcome != Outcome.INTERRUPTED]),
            }
            resultsfile.write_json(self.dir / "matrix.json", data)
        return data


class _Kernels:
    """The kernel-preparing thread: kernels one at a time, in the boots' order (the
    longest expected cell's first); two cells with one kernel share it."""

    def __init__(self, runner: Runner) -> None:
        self.m = runner

    def prepare_all(self) -> None:
        try:
            self._prepare_each()
        except KeyboardInterrupt:  # signals.Interrupted: the build was ended (kernel._make)
            pass
        with self.m.changed:
            self.m.changed.notify_all()

    def _prepare_each(self) -> None:
        m = self.m
        for i in m.order:
            if m.stop.is_set():
                break
            key = m.keys[i]
            if key not in m.prepared:
                with m.meter.preparing():
                    p = self._prepare(i, m.results[i].cell)
                with m.changed:
                    m.prepared[key] = p
                    m.changed.notify_all()

    def _prepare(self, i: int, cell: spec.Cell) -> _Prepared:
        start = time.monotonic()
        label = f"{cell.revision} on {cell.source}"
        p = _Prepared()
        try:
            if cell.prebuilt:
                k = debkernel.fetch(cell.source, say=lambda m: None)
                p.image, p.info = k.image, k.identity()
                p.how = "cached" if k.cached else "fetched"
            else:
                k = self._build(cell)
                p.how = "cached" if k.cached else f"built in {k.build_seconds:.0f} s"
        except BuildError as e:
            p.error, p.build_error = str(e), True
            p.how = f"failed: {e}"
        except HarnessError as e:
            p.error, p.how = str(e), f"failed: {e}"
        except Exception as e:  # a bug must not leave the cells waiting for this kernel
            p.error, p.how = f"harness exception: {e!r}", f"failed: {e!r}"
        p.seconds = time.monotonic() - start
        if p.how != "cached":
            self.m.say(f"{self.m.tag(i)} kernel {label}: {p.how}")
        return p

    def _build(self, cell: spec.Cell):
        """The cell's kernel, built (or cached) under one CPU token and the build lock;
        a kernel in the cache is taken at once, without waiting for a token."""
        if cell.tree is None:
            with contextlib.suppress(HarnessError):
                rev, mach = revision.load(cell.revision), machmod.load(cell.machine)
                if (k := kernel.cached(rev, mach, cell.source)) is not None:
                    return k
        n = self.m.tokens.take(1)
        try:
            with self.m.build_lock:
                if cell.tree is not None:
                    return tree.build(
                        cell.tree,
                        revision.load(cell.revision),
                        machmod.load(cell.machine),
                        jobs=self.m.build_jobs,
                        say=lambda _: None,
                    )
                return kernel.build(
                    revision.load(cell.revision),
                    machmod.load(cell.machine),
                    jobs=self.m.build_jobs,
                    say=lambda _: None,
                    source_package=cell.source,
                )
        finally:
            self.m.tokens.give(n)


class _Boots:
    """The boot threads' work: the next cell whose kernel is ready (in the runner's
    order), run, until none is left."""

    def __init__(self, runner: Runner) -> None:
        self.m = runner

    def next(self) -> int | None:
        """The first pending cell in the runner's order whose kernel is ready (waits);
        None when none is left."""
        m = self.m
        with m.changed:
            while True:
                if m.stop.is_set():
                    return None
                pending = [i for i in m.order if m.results[i].outcome == Outcome.PENDING]
                if not pending:
                    return None
                for i in pending:
                    if m.keys[i] in m.prepared:
                        m.results[i].outcome = Outcome.RUNNING
                        m.display.started(i)
                        return i
                m.changed.wait(0.5)

    def work(self) -> None:
        m = self.m
        while (i := self.next()) is not None:
            try:
                _CellRun(m, i).run()
            except KeyboardInterrupt as e:  # signals.Interrupted outside a Run
                r = m.results[i]
                r.outcome, r.reason = Outcome.INTERRUPTED, signals.of(e).reason
            except Exception as e:  # a bug must not hang the matrix: the cell errors
                r = m.results[i]
                r.outcome, r.reason = Outcome.ERROR, f"harness exception: {e!r}"
                r.all_reasons = traceback.format_exc()
                m.say(f"{m.tag(i)} end   {r.cell.name}: error: {r.reason}")
            m.save()


class _CellRun:
    """One cell, booted on its prepared kernel under its CPU tokens; its output.log."""

    def __init__(self, runner: Runner, i: int) -> None:
        self.m = runner
        self.i = i
        self.r = runner.results[i]
        self.p = runner.prepared[runner.keys[i]]

    def run(self) -> None:
        m, r, cell, p = self.m, self.r, self.r.cell, self.p
        r.kernel = {"source": cell.source, "how": p.how, "prepare_s": round(p.seconds, 1)}
        base = m.dir / cell.name
        base.mkdir(parents=True, exist_ok=True)
        if p.error and not p.build_error:  # e.g. the prebuilt kernel could not be fetched
            r.outcome, r.reason, r.all_reasons = Outcome.ERROR, p.error, p.error
            self._report_end()
            return
        mach = machmod.load(cell.machine)
        opts = self._options(base)
        n = m.tokens.take(mach.smp)
        if m.stop.is_set():  # interrupted while it waited for CPU tokens: never ran
            m.tokens.give(n)
            r.outcome = Outcome.PENDING
            return
        start = time.monotonic()
        m.say(f"{m.tag(self.i)} start {cell.name} (kernel {p.how.split(':')[0]})")
        # a kernel that failed to build fails again inside the run, which records it;
        # that retry is a build too, so it waits for the build lock
        serial = m.build_lock if p.build_error else contextlib.nullcontext()
        m.meter.boot(1)
        try:
            with serial, open(base / "output.log", "w") as log:

                def say(line: str) -> None:
                    log.write(line + "\n")
                    log.flush()

                _attempts(m._boot, opts, r, say, self._retry)
        finally:
            m.meter.boot(-1)
            m.tokens.give(n)
        r.wall_s = round(time.monotonic() - start, 1)
        self._report_end()

    def _options(self, base: Path) -> RunOptions:
        cell, p = self.r.cell, self.p
        return RunOptions(
            revision=cell.revision,
            machine=cell.machine,
            policy=cell.policy,
            tests=list(cell.tests),
            kernel_image=p.image if cell.prebuilt else None,
            kernel_info=p.info,
            kernel_source=kernel.DEFAULT_SOURCE if cell.prebuilt or cell.tree else cell.source,
            tree=cell.tree,
            results_base=base,
            jobs=self.m.build_jobs,
            test_timeout_s=cell.timeout_s,
        )

    def _retry(self, run_dir: Path) -> None:
        self.r.retried.append(str(run_dir.relative_to(self.m.dir)))
        self.m.say(
            f"{self.m.tag(self.i)} retry {self.r.cell.name}: QEMU died before the kernel "
            f"ran ({self.r.reason[:120]})"
        )

    def _report_end(self) -> None:
        self.m.display.ended(self.i)
        self.m.say(f"{self.m.tag(self.i)} {outcome.end_line(self.r)}")


def _attempts(
    boot: Callable,
    opts: RunOptions,
    r: CellResult,
    say: Callable[[str], None],
    retry: Callable[[Path], None],
) -> None:
    """A cell's run, into r; once more (RETRIES) when its QEMU died before the kernel
    ran, after retry(the attempt's run dir)."""
    for attempt in range(1 + RETRIES):
        try:
            result = boot(opts, say)
        except HarnessError as e:
            say(f"error: {e}")
            r.outcome, r.reason, r.all_reasons = Outcome.ERROR, str(e), str(e)
            return
        r.collect(result.run_dir)
        if result.interrupted:
            r.outcome, r.reason = Outcome.INTERRUPTED, f"interrupted ({result.interrupted})"
            return
        if attempt == RETRIES or not _infrastructure(r.boot):
            return
        retry(result.run_dir)


def run(
    path: Path,
    results_base: Path = repo.RESULTS,
    slots: int | None = None,
    build_jobs: int | None = None,
    cells: list[str] | None = None,
    out: Callable[[str], None] = print,
    repeat: int = 1,
) -> tuple[int, Path]:
    m = spec.load(path).select(cells or []).repeated(repeat)
    runner = Runner(m, results_base, slots, build_jobs, out)
    return runner.run(), runner.dir
