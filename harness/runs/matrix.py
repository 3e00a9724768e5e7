"""A matrix of runs: revision x kernel source x machine x VMM policy, from a YAML file.

    name: nightly
    description: what it covers
    defaults: {source: linux-source-6.1, machine: virt-gicv3, policy: every-exit}  # + tests
    cells:
      - revision: [upstream, v4, v5, v6]      # a list expands (cross product)
      - {revision: v6, policy: eintr-only, expect: fail}
      - {revision: v5, source: linux-source-6.12, expect: error, expect_reason: does not apply}
      - {revision: upstream, source: linux-image-6.1.0-56-arm64, machine: virt-gicv3-debian}

A cell's keys: revision, source, machine, policy (each a value or a list),
tests (a list of guest tests; default the whole suite), expect (pass, fail or
error; default pass), expect_reason (a text the cell's reasons must contain),
name (only for a cell that does not expand). Kernel sources: a Debian
linux-source-X package (built with the revision's series, see kernel.py) or a
prebuilt linux-image-X-arm64 package (debkernel.py; revision upstream only).

A cell's outcome is error if any test ended ERROR (a patch that does not
apply, a kernel that did not build, a harness failure) or QEMU itself died,
else fail if any test ended FAIL or MISS (a panic, a hang), else pass. The
matrix passes when every cell's outcome is the one it expects. A cell whose
QEMU died before the kernel ran is an infrastructure failure and runs once
more (RETRIES).

Running: kernels are prepared one at a time in one thread (built, or
fetched; a cached one is instant), boots run in parallel, `slots` CPU tokens
at a time: a boot takes one token per L1 CPU of its machine, a kernel build
one (it runs with -j<cpus> anyway). Each cell runs with
results_base=<matrix dir>/<cell>/, so its run directory is
<matrix dir>/<cell>/<run-id>/; matrix.json sums it up after every cell.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.boot import qemu_runner
from harness.build import debkernel, kernel
from harness.core import repo, resultsfile, signals, yamlfile
from harness.core.errors import BuildError, HarnessError, InputError
from harness.inputs import guest_spec, revision
from harness.inputs import machine as machmod
from harness.inputs.options import POLICIES, RunOptions
from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED, SKIPPED
from harness.runs.run import boot_test

FORMAT = "vtimer-harness-matrix/1"
EXPECTS = ("pass", "fail", "error")
AXES = ("revision", "source", "machine", "policy")
CELL_KEYS = {*AXES, "tests", "expect", "expect_reason", "name"}
DEFAULT_KEYS = {"source", "machine", "policy", "tests"}
STATUSES = (PASSED, FAILED, ERROR, SKIPPED, MISSED)
# a cell whose QEMU died before the kernel ran (an infrastructure failure, e.g. QMP
# not yet listening) runs once more; matrix.json keeps the attempt's run dir
RETRIES = 1
# after SIGINT/SIGTERM: how long the running cells have, all together, to end their QEMU
# and write their results (each QEMU's end is bounded by its Timeouts)
INTERRUPT_GRACE_S = 60.0
INTERRUPTED = "interrupted"  # the outcome of a cell a signal stopped


def _infrastructure(boot: dict | None) -> bool:
    return bool(boot) and boot["status"] == "qemu-died" and boot.get("init_s") is None


@dataclass(frozen=True)
class Cell:
    name: str
    revision: str
    source: str
    machine: str  # a name under qemu_configs/ or a path to a machine file
    policy: str
    tests: tuple[str, ...] = ()
    expect: str = "pass"
    expect_reason: str | None = None
    line: int | None = None  # in the matrix file

    @property
    def prebuilt(self) -> bool:
        return debkernel.is_package(self.source)

    def kernel_key(self) -> tuple[str, ...]:
        """Cells with the same key boot the same kernel (prepared once)."""
        if self.prebuilt:
            return ("prebuilt", self.source)
        fragments = machmod.load(self.machine).kernel_fragments
        return ("build", self.source, self.revision, *map(str, fragments))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "revision": self.revision,
            "source": self.source,
            "machine": self.machine,
            "policy": self.policy,
            "tests": list(self.tests),
            "expect": self.expect,
            "expect_reason": self.expect_reason,
        }


@dataclass(frozen=True)
class Matrix:
    name: str
    description: str
    path: Path
    cells: tuple[Cell, ...]
    repeat: int = 1  # runs of each cell (repeated())

    def repeated(self, n: int) -> Matrix:
        """Each cell n times, named <cell>#<k>: round k runs every cell once, so a
        cell's runs have different neighbours. Kernels are prepared once."""
        if n <= 1:
            return self
        cells = tuple(replace(c, name=f"{c.name}#{k}") for k in range(1, n + 1) for c in self.cells)
        return replace(self, cells=cells, repeat=n)

    def select(self, names: list[str]) -> Matrix:
        """Only the named cells (in file order); an unknown name lists the valid ones."""
        if not names:
            return self
        known = {c.name for c in self.cells}
        for n in names:
            if n not in known:
                raise InputError(
                    self.path, f"no cell '{n}' (cells: {', '.join(c.name for c in self.cells)})"
                )
        return replace(self, cells=tuple(c for c in self.cells if c.name in names))


def short_source(source: str) -> str:
    """linux-source-6.12 -> 6.12; linux-image-6.1.0-56-arm64 -> deb6.1.0-56."""
    if m := debkernel.PACKAGE.match(source):
        return f"deb{m[1]}"
    return source.removeprefix("linux-source-")


def _machine_name(value: str) -> str:
    return Path(value).stem if value.endswith(".yaml") else value


def cell_name(rev: str, source: str, machine: str, policy: str) -> str:
    return f"{rev}-{short_source(source)}-{_machine_name(machine)}-{policy}"


def _values(path: Path, data: yamlfile.LineDict, key: str) -> list[str]:
    """A key's value as a list of strings (a scalar is a list of one)."""
    value = data[key]
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise InputError(
            path,
            f"key '{key}' must be a name or a non-empty list of names, not {value!r}",
            line=data.lines.get(key),
        )
    return items


def _tests(path: Path, data: yamlfile.LineDict, known: dict) -> tuple[str, ...]:
    value = data["tests"]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(path, "key 'tests' must be a list of test names", line=data.lines["tests"])
    for t in value:
        if t not in known:
            raise InputError(
                path,
                f"key 'tests': unknown test '{t}' (valid: {', '.join(sorted(known))})",
                line=data.lines["tests"],
            )
    return tuple(value)


def _check_axis(path: Path, key: str, value: str, line: int | None, base: Path) -> str:
    """A valid value of one axis (machine paths resolved against the matrix file)."""

    def bad(msg: str) -> InputError:
        return InputError(path, f"key '{key}': {msg}", line=line)

    if key == "revision":
        if value not in revision.available():
            valid = ", ".join(revision.available())
            raise bad(f"unknown revision '{value}' (valid: {valid})")
    elif key == "policy":
        if value not in POLICIES:
            raise bad(f"unknown policy '{value}' (valid: {', '.join(POLICIES)})")
    elif key == "source":
        if value not in kernel.SOURCES and not debkernel.is_package(value):
            raise bad(
                f"unknown kernel source '{value}' (valid: {', '.join(kernel.SOURCES)}, "
                "or a prebuilt linux-image-X.Y.Z-N-arm64)"
            )
    elif key == "machine":
        if value.endswith(".yaml"):
            p = Path(value) if Path(value).is_absolute() else base / value
            if not p.is_file():
                raise bad(f"machine file '{value}' not found")
            value = str(p)
        elif value not in machmod.available():
            raise bad(f"unknown machine '{value}' (valid: {', '.join(machmod.available())})")
        try:
            machmod.load(value)
        except InputError as e:
            raise bad(f"machine '{value}' is invalid: {e}") from None
    return value


def load(path: Path) -> Matrix:
    """Load and validate a matrix file; every error is one line naming file, line and key."""
    data = yamlfile.load(path)
    yamlfile.check_keys(path, data, {"name", "cells"}, {"description", "defaults"})
    yamlfile.expect_name(path, data, "name")  # results/<time>-matrix-<name>-<id>/
    if "description" in data:
        yamlfile.expect_type(path, data, "description", str)
    known_tests = guest_spec.load_all()
    defaults: dict = {"source": kernel.DEFAULT_SOURCE, "machine": "virt-gicv3"}
    defaults |= {"policy": "every-exit", "tests": ()}
    base = path.parent
    if "defaults" in data:
        d = data["defaults"]
        if not isinstance(d, yamlfile.LineDict):
            raise InputError(path, "key 'defaults' must be a mapping", line=data.lines["defaults"])
        yamlfile.check_keys(path, d, set(), DEFAULT_KEYS)
        for key in d:
            if key == "tests":
                defaults["tests"] = _tests(path, d, known_tests)
            else:
                yamlfile.expect_type(path, d, key, str)
                defaults[key] = _check_axis(path, key, d[key], d.lines.get(key), base)
    cells_data = data["cells"]
    if not isinstance(cells_data, list) or not cells_data:
        raise InputError(path, "key 'cells' must be a non-empty list", line=data.lines["cells"])
    cells: list[Cell] = []
    seen: dict[str, int | None] = {}
    for item in cells_data:
        if not isinstance(item, yamlfile.LineDict):
            raise InputError(path, "each cell must be a mapping", line=data.lines["cells"])
        yamlfile.check_keys(path, item, {"revision"}, CELL_KEYS - {"revision"})
        axes: dict[str, list[str]] = {}
        for key in AXES:
            if key in item:
                vals = _values(path, item, key)
                axes[key] = [_check_axis(path, key, v, item.lines.get(key), base) for v in vals]
            else:
                axes[key] = [defaults[key]]
        tests = _tests(path, item, known_tests) if "tests" in item else defaults["tests"]
        expect = "pass"
        if "expect" in item:
            expect = yamlfile.expect_choice(path, item, "expect", EXPECTS)
        reason = None
        if "expect_reason" in item:
            reason = yamlfile.expect_type(path, item, "expect_reason", str)
            if expect == "pass":
                raise InputError(
                    path,
                    "key 'expect_reason' needs expect: fail or error",
                    line=item.lines["expect_reason"],
                )
        combos = list(itertools.product(*(axes[k] for k in AXES)))
        if "name" in item:
            # <matrix dir>/<name>/; '#' separates the round of a repeated cell
            yamlfile.expect_name(path, item, "name", forbidden="/#")
            if len(combos) > 1:
                raise InputError(
                    path,
                    f"key 'name': the cell expands to {len(combos)} cells, a name fits only one",
                    line=item.lines["name"],
                )
        for rev, source, mach, policy in combos:
            where = item.lines.get("source", item.line)
            if debkernel.is_package(source) and rev != "upstream":
                raise InputError(
                    path,
                    f"key 'source': the prebuilt kernel {source} carries no patches: "
                    f"only revision upstream runs on it, not {rev}",
                    line=where,
                )
            if not debkernel.is_package(source) and not machmod.load(mach).kernel_fragments:
                raise InputError(
                    path,
                    f"key 'machine': {_machine_name(mach)} has no kernel fragments "
                    f"(it is for prebuilt kernels), so {source} cannot be built for it",
                    line=item.lines.get("machine", item.line),
                )
            name = item["name"] if "name" in item else cell_name(rev, source, mach, policy)
            if name in seen:
                raise InputError(
                    path,
                    f"duplicate cell '{name}' (first at line {seen[name]})",
                    line=item.line,
                )
            seen[name] = item.line
            cells.append(Cell(name, rev, source, mach, policy, tests, expect, reason, item.line))
    return Matrix(data["name"], data.get("description", ""), path, tuple(cells))


# -- outcomes ----------------------------------------------------------------


def outcome_of(results: list[dict], boot: dict | None = None) -> str:
    """error if any test ERRORed or QEMU itself died, else fail if any test FAILed or
    was MISSed, else pass."""
    statuses = {r["status"] for r in results}
    if ERROR in statuses or not results or (boot or {}).get("status") == "qemu-died":
        return "error"
    if statuses & {FAILED, MISSED}:
        return "fail"
    return "pass"


def reason_of(outcome: str, data: dict) -> str:
    """One line on why a cell did not pass."""
    if outcome == "pass":
        return ""
    if data.get("identity", {}).get("error"):
        return data["identity"]["error"]
    bad = [t for t in data["tests"] if t["status"] not in (PASSED, SKIPPED)]
    if not bad:
        return "no tests ran"
    first = bad[0]
    why = first["reasons"][0] if first["reasons"] else first["status"]
    names = ", ".join(t["name"] for t in bad[:4]) + (", ..." if len(bad) > 4 else "")
    return f"{len(bad)} not passed ({names}); {first['name']}: {why}"


@dataclass
class CellResult:
    cell: Cell
    outcome: str = "pending"  # pending, running, pass, fail, error, interrupted
    reason: str = ""
    all_reasons: str = ""
    run_dir: Path | None = None
    summary: dict[str, int] = field(default_factory=dict)
    kernel: dict = field(default_factory=dict)
    boot: dict | None = None
    wall_s: float | None = None
    retried: list[str] = field(default_factory=list)  # run dirs of attempts run again
    tests: dict[str, str] = field(default_factory=dict)  # test -> status

    @property
    def as_expected(self) -> bool:
        if self.outcome != self.cell.expect:
            return False
        return self.cell.expect_reason is None or self.cell.expect_reason in self.all_reasons

    def to_json(self, base: Path) -> dict:
        return self.cell.describe() | {
            "outcome": self.outcome,
            "as_expected": self.as_expected,
            "reason": self.reason,
            "run_dir": str(self.run_dir.relative_to(base)) if self.run_dir else None,
            "summary": self.summary,
            "kernel": self.kernel,
            "boot": self.boot,
            "wall_s": self.wall_s,
            "retried": self.retried,
        }


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
    first served: a two-CPU boot is not overtaken by one-CPU boots while it waits."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.free = self.total
        self.cond = threading.Condition()
        self.queue: collections.deque[object] = collections.deque()

    def take(self, n: int) -> int:
        n = max(1, min(n, self.total))
        me = object()
        with self.cond:
            self.queue.append(me)
            self.cond.wait_for(lambda: self.queue[0] is me and self.free >= n)
            self.queue.popleft()
            self.free -= n
            self.cond.notify_all()
        return n

    def give(self, n: int) -> None:
        with self.cond:
            self.free += n
            self.cond.notify_all()


class Runner:
    """Runs a matrix: one kernel-preparing thread, `slots` tokens of boots."""

    def __init__(
        self,
        matrix: Matrix,
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
        self.tokens = Tokens(self.slots)
        self.lock = threading.Lock()
        self.build_lock = threading.Lock()  # one kernel build at a time
        self.changed = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.dir = resultsfile.new_run_dir(f"matrix-{matrix.name}", results_base)
        self.results = [CellResult(c) for c in matrix.cells]
        self.keys = [c.kernel_key() for c in matrix.cells]  # cells with one key share a kernel
        self.prepared: dict[tuple[str, ...], _Prepared] = {}
        self.started = time.monotonic()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.interrupted: signals.Interrupted | None = None
        self.threads_done = 0  # threads of run() that have finished (under self.changed)

    # -- display -------------------------------------------------------------
    def say(self, text: str) -> None:
        with self.lock:
            self.out(text)

    def _tag(self, i: int) -> str:
        n = len(self.results)
        return f"[{i + 1:>{len(str(n))}}/{n}]"

    # -- the run -------------------------------------------------------------
    def run(self) -> int:
        m = self.matrix
        self.out(
            f"# matrix {m.name}: {len(m.cells)} cells, {self.slots} CPU tokens for boots; "
            f"results: {repo.rel(self.dir)}"
        )
        self.save()
        threads = [threading.Thread(target=self._counted(self._prepare_all), name="kernels")]
        threads += [
            threading.Thread(target=self._counted(self._worker), name=f"boot{i}")
            for i in range(self.slots)
        ]
        for t in threads:
            t.daemon = True
            t.start()
        try:
            self._wait_threads(len(threads))
        except KeyboardInterrupt as e:  # signals.Interrupted: SIGINT or SIGTERM
            with signals.deferred():
                return self._interrupt(signals.of(e), len(threads))
        self.save()
        for line in self.table():
            self.out(line)
        if m.repeat > 1:
            self._report_unstable()
        ok = all(r.as_expected for r in self.results)
        bad = sum(not r.as_expected for r in self.results)
        verdict = "all cells as expected" if ok else f"{bad} cell(s) NOT as expected"
        self.out(
            f"# matrix {m.name}: {verdict}; {time.monotonic() - self.started:.0f} s; "
            f"{repo.rel(self.dir)}/matrix.json"
        )
        return 0 if ok else 1

    def _counted(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            finally:
                with self.changed:
                    self.threads_done += 1
                    self.changed.notify_all()

        return run

    def _wait_threads(self, n: int, deadline: float | None = None) -> bool:
        """Until n threads of run() have finished (or the deadline): whether they have.
        Not Thread.join(): a signal's exception inside it can mark a running thread
        stopped, and join() then returns at once (CPython before 3.13)."""
        with self.changed:
            while self.threads_done < n:
                left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def _interrupt(self, sig: signals.Interrupted, threads: int) -> int:
        """No new cell starts; the running ones end their QEMU and keep their results
        (each Run sees the signal through signals.check()); matrix.json says so."""
        self.interrupted = sig
        signals.request(sig.signum)  # a plain KeyboardInterrupt reaches the threads too
        self.stop.set()
        with self.changed:
            self.changed.notify_all()
        self.out(f"# {sig.reason}: no new cells start; the running ones end their QEMU")
        self._wait_threads(threads, time.monotonic() + INTERRUPT_GRACE_S)
        if n := qemu_runner.end_all():
            self.out(f"# {n} QEMU still running after {INTERRUPT_GRACE_S:.0f} s: killed")
        for r in self.results:
            if r.outcome == "running":  # its thread did not finish in time
                r.outcome, r.reason = INTERRUPTED, sig.reason
        self.save()
        for line in self.table():
            self.out(line)
        ran = sum(r.outcome not in ("pending", INTERRUPTED) for r in self.results)
        self.out(
            f"# matrix {self.matrix.name}: {sig.reason}; {ran} of {len(self.results)} cells "
            f"finished; {repo.rel(self.dir)}/matrix.json"
        )
        return sig.exit_code

    def _prepare_all(self) -> None:
        """Kernels one at a time, in cell order; two cells with one kernel share it."""
        try:
            self._prepare_each()
        except KeyboardInterrupt:  # signals.Interrupted: the build was ended (kernel._make)
            pass
        with self.changed:
            self.changed.notify_all()

    def _prepare_each(self) -> None:
        for i, r in enumerate(self.results):
            if self.stop.is_set():
                break
            key = self.keys[i]
            if key not in self.prepared:
                p = self._prepare(i, r.cell)
                with self.changed:
                    self.prepared[key] = p
                    self.changed.notify_all()

    def _prepare(self, i: int, cell: Cell) -> _Prepared:
        start = time.monotonic()
        label = f"{cell.revision} on {cell.source}"
        p = _Prepared()
        try:
            if cell.prebuilt:
                k = debkernel.fetch(cell.source, say=lambda m: None)
                p.image, p.info = k.image, k.identity()
                p.how = "cached" if k.cached else "fetched"
            else:
                n = self.tokens.take(1)
                try:
                    with self.build_lock:
                        k = kernel.build(
                            revision.load(cell.revision),
                            machmod.load(cell.machine),
                            jobs=self.build_jobs,
                            say=lambda m: None,
                            source_package=cell.source,
                        )
                finally:
                    self.tokens.give(n)
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
            self.say(f"{self._tag(i)} kernel {label}: {p.how}")
        return p

    def _next(self) -> int | None:
        """The first pending cell whose kernel is ready (waits); None when none is left."""
        with self.changed:
            while True:
                if self.stop.is_set():
                    return None
                pending = [i for i, r in enumerate(self.results) if r.outcome == "pending"]
                if not pending:
                    return None
                for i in pending:
                    if self.keys[i] in self.prepared:
                        self.results[i].outcome = "running"
                        return i
                self.changed.wait(0.5)

    def _worker(self) -> None:
        while (i := self._next()) is not None:
            try:
                self._run_cell(i)
            except KeyboardInterrupt as e:  # signals.Interrupted outside a Run
                r = self.results[i]
                r.outcome, r.reason = INTERRUPTED, signals.of(e).reason
            except Exception as e:  # a bug must not hang the matrix: the cell errors
                r = self.results[i]
                r.outcome, r.reason = "error", f"harness exception: {e!r}"
                r.all_reasons = traceback.format_exc()
                self.say(f"{self._tag(i)} end   {r.cell.name}: error: {r.reason}")
            self.save()

    def _run_cell(self, i: int) -> None:
        r = self.results[i]
        cell = r.cell
        p = self.prepared[self.keys[i]]
        r.kernel = {"source": cell.source, "how": p.how, "prepare_s": round(p.seconds, 1)}
        base = self.dir / cell.name
        base.mkdir(parents=True, exist_ok=True)
        if p.error and not p.build_error:  # e.g. the prebuilt kernel could not be fetched
            r.outcome, r.reason, r.all_reasons = "error", p.error, p.error
            self._report_end(i)
            return
        mach = machmod.load(cell.machine)
        opts = RunOptions(
            revision=cell.revision,
            machine=cell.machine,
            policy=cell.policy,
            tests=list(cell.tests),
            kernel_image=p.image if cell.prebuilt else None,
            kernel_info=p.info,
            kernel_source=cell.source if not cell.prebuilt else kernel.DEFAULT_SOURCE,
            results_base=base,
            jobs=self.build_jobs,
        )
        n = self.tokens.take(mach.smp)
        if self.stop.is_set():  # interrupted while it waited for CPU tokens: never ran
            self.tokens.give(n)
            r.outcome = "pending"
            return
        start = time.monotonic()
        self.say(f"{self._tag(i)} start {cell.name} (kernel {p.how.split(':')[0]})")
        # a kernel that failed to build fails again inside the run, which records it;
        # that retry is a build too, so it waits for the build lock
        serial = self.build_lock if p.build_error else contextlib.nullcontext()
        try:
            with serial, open(base / "output.log", "w") as log:

                def say(line: str) -> None:
                    log.write(line + "\n")
                    log.flush()

                for attempt in range(1 + RETRIES):
                    try:
                        outcome = self._boot(opts, say)
                    except HarnessError as e:
                        say(f"error: {e}")
                        r.outcome, r.reason, r.all_reasons = "error", str(e), str(e)
                        break
                    self._collect(r, outcome.run_dir)
                    if outcome.interrupted:
                        r.outcome, r.reason = INTERRUPTED, f"interrupted ({outcome.interrupted})"
                        break
                    if attempt == RETRIES or not _infrastructure(r.boot):
                        break
                    r.retried.append(str(outcome.run_dir.relative_to(self.dir)))
                    self.say(
                        f"{self._tag(i)} retry {cell.name}: QEMU died before the kernel "
                        f"ran ({r.reason[:120]})"
                    )
        finally:
            self.tokens.give(n)
        r.wall_s = round(time.monotonic() - start, 1)
        self._report_end(i)

    def _collect(self, r: CellResult, run_dir: Path) -> None:
        r.run_dir = run_dir
        data = json.loads((run_dir / "results.json").read_text())
        r.summary = data["summary"]
        r.tests = {t["name"]: t["status"] for t in data["tests"]}
        r.outcome = outcome_of(data["tests"], data.get("boot"))
        r.reason = reason_of(r.outcome, data)
        texts = [data["identity"].get("error") or ""]
        texts += [why for t in data["tests"] for why in t["reasons"]]
        r.all_reasons = "\n".join(texts)
        k = data["identity"].get("kernel", {})
        r.kernel |= {x: k[x] for x in ("release", "source", "cached", "build_dir") if x in k}
        if data.get("boot"):
            r.boot = {x: data["boot"][x] for x in ("status", "wall_s", "init_s")}

    def _report_end(self, i: int) -> None:
        r = self.results[i]
        s = r.summary
        counts = ", ".join(f"{s[k]} {k.lower()}" for k in STATUSES if s.get(k))
        verdict = "as expected" if r.as_expected else f"NOT AS EXPECTED (expect {r.cell.expect})"
        if r.outcome == INTERRUPTED:
            verdict = "not finished"
        why = f": {r.reason}" if r.reason else ""
        wall = f" {r.wall_s:.1f} s" if r.wall_s is not None else ""
        self.say(
            f"{self._tag(i)} end   {r.cell.name}: {r.outcome}"
            f"{f' ({counts})' if counts else ''}{wall}, {verdict}{why[:200]}"
        )

    def _report_unstable(self) -> None:
        rows = unstable(self.results)
        n = self.matrix.repeat
        if not rows:
            self.out(f"# repeat {n}: every test had the same status in every run of its cell")
            return
        self.out(f"# repeat {n}: {len(rows)} test(s) changed status between runs of a cell:")
        for row in rows:
            counts = ", ".join(f"{k.lower()} {v}" for k, v in row["statuses"].items())
            self.out(f"#   {row['cell']} {row['test']}: {counts}")

    # -- outputs -------------------------------------------------------------
    def save(self) -> None:
        with self.lock:
            done = [r for r in self.results if r.outcome not in ("pending", "running")]
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
                "complete": not self.interrupted and len(done) == len(self.results),
                "interrupted": self.interrupted.name if self.interrupted else None,
                "ok": len(done) == len(self.results) and all(r.as_expected for r in done),
                "cells": [r.to_json(self.dir) for r in self.results],
                "repeat": self.matrix.repeat,
                "unstable": unstable([r for r in done if r.outcome != INTERRUPTED]),
            }
            resultsfile.write_json(self.dir / "matrix.json", data)

    def table(self) -> list[str]:
        return table(
            [
                (
                    r.cell.name,
                    r.outcome,
                    r.cell.expect,
                    "yes" if r.as_expected else "NO",
                    *(str(r.summary.get(k, "-")) for k in STATUSES),
                    "-" if r.wall_s is None else f"{r.wall_s:.1f}",
                    (r.kernel.get("release") or "-"),
                )
                for r in self.results
            ]
        )


HEADER = ("cell", "outcome", "expect", "ok", "pass", "fail", "error", "skip", "miss", "s", "kernel")


def unstable(results: list[CellResult]) -> list[dict]:
    """The tests whose status differed between runs of one cell (<cell>#<k>)."""
    by_test: dict[tuple[str, str], list[str]] = {}
    for r in results:
        base = r.cell.name.rsplit("#", 1)[0]
        for test, status in r.tests.items():
            by_test.setdefault((base, test), []).append(status)
    return [
        {"cell": cell, "test": test, "statuses": dict(collections.Counter(statuses).most_common())}
        for (cell, test), statuses in by_test.items()
        if len(set(statuses)) > 1
    ]


def table(rows) -> list[str]:
    rows = [HEADER, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def run(
    path: Path,
    results_base: Path = repo.RESULTS,
    slots: int | None = None,
    build_jobs: int | None = None,
    cells: list[str] | None = None,
    out: Callable[[str], None] = print,
    repeat: int = 1,
) -> tuple[int, Path]:
    m = load(path).select(cells or []).repeated(repeat)
    runner = Runner(m, results_base, slots, build_jobs, out)
    return runner.run(), runner.dir
