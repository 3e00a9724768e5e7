"""A run's files under results/<run-id>/: results.json (rewritten after every
test, so a killed run keeps what it judged), then junit.xml, ktap.txt and
report.html once the run ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.boot.qemu_runner import BootResult
from harness.core import repo, resultsfile
from harness.judge.session import Session
from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED, SKIPPED, TestResult
from harness.outputs import junit, ktap, report


@dataclass
class RunFiles:
    """What a run writes, and what results.json says of the run besides its tests."""

    run_dir: Path
    identity: dict
    session: Session
    ktap: ktap.KtapWriter | None = None
    boot: BootResult | None = None
    cpu_threads: dict[int, int] = field(default_factory=dict)
    extra: Callable[[], dict] = dict  # keys a VMM adds (its registry hook)
    started: float = field(default_factory=time.monotonic)
    warm: bool = False  # the report's templates are compiled
    entries: report.Entries = field(default_factory=report.Entries)  # the report's tests

    def saved_test(self, res: TestResult) -> None:
        """results.json after a test's verdict, and the test's part of the report (the
        first one also readies the report's templates), while the next test runs."""
        self.save(complete=False, durable=False)
        if not self.warm:
            report.warm()
            self.warm = True
        self.entries.draw(res, self.session.trace(res.name))

    def save(self, complete: bool, durable: bool = True) -> None:
        """results.json as of now (durable: through a machine's crash too; the saves
        after each test are not, a killed harness loses nothing of them)."""
        resultsfile.write_json(self.run_dir / "results.json", self.data(complete), durable)

    def data(self, complete: bool) -> dict:
        """What results.json says as of now."""
        s = self.session
        results = s.results()
        counts = {
            st: sum(r.status == st for r in results)
            for st in (PASSED, FAILED, ERROR, SKIPPED, MISSED)
        }
        data = {
            "format": resultsfile.FORMAT,
            "run_id": self.run_dir.name,
            "complete": complete,
            "identity": self.identity,
            "boot": self._boot(),
            "abi_check": s.abi_gate.last.to_json(),
            "tests": [r.to_json() for r in results],
            "models": {m: [r.to_json() for r in rs.values()] for m, rs in s.by_model.items()},
            "summary": counts,
            "logs": sorted(p.name for p in self.run_dir.iterdir() if not p.name.startswith(".")),
        }
        return data | self.extra()

    def _boot(self) -> dict | None:
        b = self.boot
        if b is None:
            return None
        return {
            "status": b.status,
            "reason": b.reason,
            "wall_s": round(b.wall_s, 3),
            "init_s": None if b.init_s is None else round(b.init_s, 3),
            "qemu_exit": b.qemu_exit,
            "qemu_version": b.qemu_version,
            "trace_events": b.traces_enabled,
            # qemu-trace.log's bytes, and those past its bound (not kept)
            "trace_bytes": {"kept": b.trace_bytes[0], "dropped": b.trace_bytes[1]},
            # vCPU thread id -> L1 CPU, to split qemu-trace.log per CPU again
            "cpu_threads": {str(t): c for t, c in self.cpu_threads.items()},
        }

    def finish(
        self, rev_name: str, say: Callable[[str], None], data: dict | None = None
    ) -> tuple[list[TestResult], int]:
        """junit.xml, ktap.txt and report.html (its run's part from data, else from
        results.json); the results and the exit code (1: a test neither passed nor was
        skipped)."""
        s = self.session
        results = s.results()
        wall = time.monotonic() - self.started
        parsed = s.stream.parsed
        recs = {r.name: parsed.of(r.name) for r in results}
        xml = junit.render("vtimer-harness", results, wall, recs, junit.classname(self.identity))
        resultsfile.write_atomic(self.run_dir / "junit.xml", xml)
        if self.ktap:
            resultsfile.write_atomic(self.run_dir / "ktap.txt", self.ktap.text())
        by_model = {m: list(rs.values()) for m, rs in s.by_model.items()}
        models = {rev_name: results} | by_model
        report.render(self.run_dir, results, s.traces(), models, self.entries, data)
        say(ktap.summary(results))
        ok = all(r.status in (PASSED, SKIPPED) for r in results)
        say(f"# results: {repo.rel(self.run_dir)}/results.json")
        return results, 0 if ok else 1
