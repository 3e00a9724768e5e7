"""Judge a saved console offline, as the live run judged it (`harness parse`,
like `kunit.py parse`; lava-ingest judges a LAVA job's console the same way).

The console's lines go through the same judge session a boot feeds; how the
boot ended is read from the console itself: "completed" once /init said done,
"panic" at a kernel panic line, else "hang" (the log ends before the suite
finished). The records are on the console, or in the records.log beside it
(the records port's copy). Layer 0 is a saved qemu-trace.log, split per CPU
with the vCPU threads a results.json kept (boot.cpu_threads).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.boot.qemu_runner import PANIC, BootResult
from harness.core import repo
from harness.core.errors import InputError
from harness.core.status import BootStatus
from harness.inputs.options import RunOptions
from harness.outputs import ktap
from harness.runs.run import RunOutcome, RunSetup
from harness.traces import records

_TAG_LINE = "Kernel command line:"


@dataclass
class Console:
    """A saved console and what it says of itself."""

    lines: list[str]
    path: Path
    records: list[str] = field(default_factory=list)  # the records port's lines (records.log)
    began: list[str] = field(default_factory=list)  # the tests, in the order they began
    first_begin: dict[str, str] = field(default_factory=dict)  # the first begin record
    done: bool = False  # /init said done

    @classmethod
    def of(cls, lines: list[str], path: Path, port: Sequence[str] = ()) -> Console:
        c = cls(lines, path, list(port))
        for line in [*lines, *port]:
            rec = records.parse_line(line, 0)
            if not isinstance(rec, records.Record):
                continue
            if rec.kind == "begin":
                c.began.append(rec.test)
                c.first_begin = c.first_begin or rec.fields
            elif rec.kind == "done":
                c.done = True
        return c

    def cmdline(self) -> str:
        """The L1 kernel's command line, if the console shows it."""
        return next((line for line in self.lines if _TAG_LINE in line), "")


def cpu_threads_of(data: dict, results_json: Path) -> dict[int, int]:
    """boot.cpu_threads of a run's results.json (data, read from results_json): vCPU
    thread id -> L1 CPU."""
    try:
        raw = (data.get("boot") or {}).get("cpu_threads") or {}
        return {int(t): int(c) for t, c in raw.items()}
    except (ValueError, AttributeError) as e:
        raise InputError(results_json, f"no boot.cpu_threads to read: {e}") from None


def judge(
    console: Console,
    opts: RunOptions,
    say: Callable[[str], None],
    *,
    identity: dict | None = None,
    header: str = "",
    qemu_trace_log: Path | None = None,
    cpu_threads: dict[int, int] | None = None,
    copies: Sequence[tuple[Path, str]] = (),  # (file, its name in the run directory)
) -> RunOutcome:
    """console's verdicts under results/<run-id>/, as a live run writes them."""
    setup = RunSetup.of(opts, say)
    session, files = setup.session, setup.files
    session.defer = True  # the whole console and trace are there: judge at close
    run_dir = files.run_dir
    files.identity |= identity or {}
    files.identity.setdefault("kernel", {"release": None, "prebuilt": True})
    saved = run_dir / "console.log"
    saved.write_text("\n".join(console.lines) + "\n")
    if console.records:
        (run_dir / "records.log").write_text("\n".join(console.records) + "\n")
    for src, name in copies:
        shutil.copyfile(src, run_dir / name)
    if qemu_trace_log is not None:
        trace = run_dir / "qemu-trace.log"
        shutil.copyfile(qemu_trace_log, trace)
        session.hw.open(trace, cpu_threads, setup.machine.smp)
        files.cpu_threads = cpu_threads or {}
    lines = [
        f"vtimer-harness rev={setup.rev.name} machine={setup.machine.name} "
        f"policy={opts.policy}{header}",
        f"results: {repo.rel(run_dir)}",
    ]
    files.ktap = ktap.KtapWriter(say, lines, len(session.specs))
    session.emit = files.ktap.emit
    session.start()
    status, reason = BootStatus.HANG, "the log ends before the suite finished"
    for line in console.lines:
        if PANIC.search(line):
            status, reason = BootStatus.PANIC, line.strip()
        _feed(session, files, line, records.CONSOLE)
    for line in console.records:
        _feed(session, files, line, records.PORT)
    if console.done:
        status, reason = BootStatus.COMPLETED, "suite finished"
    files.boot = BootResult(status, reason, saved, saved, qemu_trace_log, 0.0)
    session.close(status, reason)
    if session.suite_errors:
        files.identity["suite_errors"] = session.suite_errors
    files.save(complete=status == BootStatus.COMPLETED)
    return setup.outcome(say)


def _feed(session, files, line: str, source: str) -> None:
    for rec in session.feed(line, source):
        if rec.kind == "boot" and isinstance(files.identity["kernel"], dict):
            files.identity["kernel"]["release"] = rec.get("release")


def read_lines(path: Path) -> list[str]:
    """A console log's lines (gzip'ed if it ends in .gz)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", errors="replace") as f:
                return f.read().splitlines()
        return path.read_text(errors="replace").splitlines()
    except (OSError, EOFError) as e:
        raise InputError(path, f"cannot read the console log: {e}") from None


def parse(
    log: Path,
    say: Callable[[str], None],
    *,
    rev: str | None = None,
    machine: str | None = None,
    policy: str | None = None,
    tests: Sequence[str] = (),
    qemu_trace_log: Path | None = None,
    results_base: Path = repo.RESULTS,
) -> RunOutcome:
    """`harness parse`: judge a saved console (or a run's directory: its
    console.log). Next to a run's results.json (its
    results/<run-id>/console.log), the run's revision, machine, policy, tests,
    qemu-trace.log and vCPU threads are the defaults; else the console's own
    begin records name the ABI and the policy."""
    if log.is_dir():  # a run's directory: its console
        log = log / "console.log"
        if not log.is_file():
            raise InputError(log.parent, "a directory with no console.log: give a console log")
    port = log.parent / "records.log"
    beside = port.is_file() and not port.samefile(log)  # records.log itself: read once
    console = Console.of(read_lines(log), log, read_lines(port) if beside else ())
    run_json = log.parent / "results.json"
    ran: dict = {}
    if run_json.is_file():
        try:
            ran = json.loads(run_json.read_text())
        except ValueError as e:
            raise InputError(run_json, f"not JSON: {e}") from None
    ident = ran.get("identity") or {}
    first = console.first_begin
    rev = rev or ident.get("revision") or first.get("abi")
    if not rev:
        raise InputError(log, "no revision: give --rev (the log names none)")
    machine = machine or (ident.get("machine") or {}).get("name") or "virt-gicv3"
    policy = policy or ident.get("policy") or first.get("policy") or "every-exit"
    names = list(tests) or [t["name"] for t in ran.get("tests", []) if "name" in t]
    names = names or list(dict.fromkeys(console.began))
    trace = qemu_trace_log
    if trace is None and ran and (log.parent / "qemu-trace.log").is_file():
        trace = log.parent / "qemu-trace.log"
    if trace is not None and not trace.is_file():
        raise InputError(trace, "no such QEMU trace log")
    threads = cpu_threads_of(ran, run_json) if ran and trace is not None else None
    opts = RunOptions(
        revision=rev, machine=machine, policy=policy, tests=names, results_base=results_base
    )
    return judge(
        console,
        opts,
        say,
        identity={"parsed": {"log": str(log), "qemu_trace": str(trace) if trace else None}},
        header=f" (parsed from {log.name})",
        qemu_trace_log=trace,
        cpu_threads=threads,
    )
