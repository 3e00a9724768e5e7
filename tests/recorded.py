"""Recorded consoles judged into real run directories, for the output tests
(KTAP, JUnit, KCIDB): (console, revision, qemu trace) by name."""

from __future__ import annotations

from pathlib import Path

from conftest import DATA

from harness.runs import offline

RUNS = {
    "upstream-every-exit": ("upstream-every-exit.console.log", None, "upstream-every-exit"),
    "upstream-nointr": ("upstream-nointr.console.log.gz", "upstream-nointr", None),
    "upstream-storm": ("upstream-storm.console.log.gz", "upstream-storm", None),
    "upstream-twice": ("upstream-twice.console.log", "upstream-twice", None),
    "v4-every-exit": ("v4-every-exit.console.log", "v4", None),
}


def judged(tmp_path: Path, name: str) -> Path:
    """The run directory `harness parse` writes for the recorded console name."""
    log, rev, trace = RUNS[name]
    out = offline.parse(
        DATA / log,
        lambda _: None,
        rev=rev,
        qemu_trace_log=DATA / f"{trace}.qemu-trace.log" if trace else None,
        results_base=tmp_path,
    )
    return out.run_dir
