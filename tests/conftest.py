from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data() -> Path:
    return DATA


def console(name: str) -> list[str]:
    """A recorded console log's lines (stored gzipped as name.gz when large)."""
    path = DATA / name
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        import gzip

        with gzip.open(path.with_name(path.name + ".gz"), "rt", errors="replace") as f:
            return f.read().splitlines()
    return path.read_text(errors="replace").splitlines()


def recorded_vms(run: str):
    """A recorded run's layer-0 VMs by test, as harness/judge/layer0.py ties them by order: QEMU's
    trace (with its CPU threads, when recorded on several CPUs) split per VM, the
    ABI probe's VM skipped, the rest in the order the tests began."""
    import json

    from harness.judge import abicheck
    from harness.traces import qemu_trace, records

    parsed = records.parse(console(f"{run}.console.log"))
    path = DATA / f"{run}.cpu-threads.json"
    threads = None
    if path.exists():
        threads = {int(t): c for t, c in json.loads(path.read_text()).items()}
    with open(DATA / f"{run}.qemu-trace.log") as f:
        vms = qemu_trace.timelines(qemu_trace.parse(f, threads))
    names = list(dict.fromkeys(r.test for r in parsed.records if r.kind == "begin"))
    return dict(zip(names, vms[abicheck.probe_vms(parsed) :], strict=True))
