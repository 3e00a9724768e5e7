"""The judge session and `harness parse`, on recorded real boots.

The golden files under tests/data/golden/ are the results.json that judging
each recorded console gave (their run-specific keys left out): a change to the
harness that changes a verdict, a reason or a metric shows up here. After a
change that is meant to, regenerate them with VT_REGEN_GOLDEN=1 and review the
diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import DATA, console

from harness import cli
from harness.inputs import guest_spec, revision
from harness.judge.model import Model
from harness.judge.session import Session
from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED
from harness.runs import offline

GOLDEN = DATA / "golden"
REGEN = os.environ.get("VT_REGEN_GOLDEN") == "1"
# recorded consoles judged offline: (name, console, revision, qemu trace)
CASES = [
    ("upstream-suite", "upstream-suite.console.log", None, None),
    ("upstream-every-exit", "upstream-every-exit.console.log", None, "upstream-every-exit"),
    ("upstream-twice", "upstream-twice.console.log", "upstream-twice", None),
    ("upstream-nointr", "upstream-nointr.console.log.gz", "upstream-nointr", None),
    ("upstream-storm", "upstream-storm.console.log.gz", "upstream-storm", None),
    ("v5-eintr-only", "v5-eintr-only.console.log", "v5", None),
]
# what differs between two judgings of the same console
_RUN_KEYS = ("run_id", "logs")
_IDENTITY_KEYS = ("harness", "parsed", "vmm_sha256", "guest_images", "patches")


def _session(rev: str = "upstream", tests: list[str] | None = None) -> Session:
    r = revision.load(rev)
    specs = guest_spec.select(guest_spec.load_all(), tests or [])
    return Session(r, Model.of(r), specs, specs, {})


def _normal(data: dict) -> dict:
    out = {k: v for k, v in data.items() if k not in _RUN_KEYS}
    out["identity"] = {k: v for k, v in data["identity"].items() if k not in _IDENTITY_KEYS}
    out["boot"] = {k: (data["boot"] or {}).get(k) for k in ("status", "reason")}
    return out


@pytest.mark.parametrize("name,log,rev,trace", CASES, ids=[c[0] for c in CASES])
def test_a_recorded_console_is_judged_as_its_golden_results(tmp_path, name, log, rev, trace):
    qemu_trace = DATA / f"{trace}.qemu-trace.log" if trace else None
    out = offline.parse(
        DATA / log, lambda _: None, rev=rev, qemu_trace_log=qemu_trace, results_base=tmp_path
    )
    got = _normal(json.loads((out.run_dir / "results.json").read_text()))
    golden = GOLDEN / f"{name}.results.json"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(golden.read_text()), f"regenerate with VT_REGEN_GOLDEN=1: {golden}"


def test_feeding_line_by_line_judges_each_test_at_its_end():
    s = _session()
    seen = []
    s.on_result = seen.append
    lines = console("upstream-suite.console.log")
    for line in lines:
        s.feed(line)
        if seen:
            break
    assert seen and seen[0].name == s.stream.parsed.began[0]
    assert s.result(seen[0].name) is seen[0]


def test_a_boot_that_dies_in_a_test_fails_that_test_and_misses_the_rest():
    lines = console("upstream-suite.console.log")
    s = _session()
    ends = [i for i, line in enumerate(lines) if " end " in line and "@VT1" in line]
    for line in lines[: ends[2] + 1]:  # three tests end, then the kernel panics
        s.feed(line)
    s.close("panic", "Kernel panic - not syncing: test")
    by_status = {}
    for r in s.results():
        by_status.setdefault(r.status, []).append(r.name)
    assert len(by_status[PASSED]) == 3
    assert len(by_status[FAILED]) == 1  # the one it was in
    assert by_status[FAILED][0] == next(
        t.name for t in s.runnable if t.name not in by_status[PASSED]
    )
    assert len(by_status[MISSED]) == len(s.runnable) - 4
    assert s.result(by_status[FAILED][0]).reasons == [
        "boot panic: Kernel panic - not syncing: test"
    ]


def test_an_interrupted_stream_keeps_the_signal_as_the_reason():
    s = _session(tests=["oneshot_tval", "rearm_n"])
    s.feed("not a record")
    s.close("interrupted", "SIGTERM: stopped")
    assert {r.status for r in s.results()} == {MISSED}
    assert all(r.reasons == ["never ran: SIGTERM: stopped"] for r in s.results())


def test_a_deferred_session_judges_at_close_in_end_order():
    s = _session()
    s.defer = True
    for line in console("upstream-suite.console.log"):
        s.feed(line)
    assert s.results() == []
    s.close("completed", "suite finished")
    assert [r.name for r in s.results()] == [t.name for t in s.runnable]
    assert all(r.status == PASSED for r in s.results())


def test_parse_takes_a_runs_identity_and_trace_from_its_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(DATA / "upstream-every-exit.console.log", run / "console.log")
    shutil.copy(DATA / "upstream-every-exit.qemu-trace.log", run / "qemu-trace.log")
    tests = ["rearm_n", "mmio_spin"]
    ident = {"revision": "upstream", "machine": {"name": "virt-gicv3"}, "policy": "every-exit"}
    results = {"identity": ident, "tests": [{"name": t} for t in tests], "boot": {}}
    (run / "results.json").write_text(json.dumps(results))
    code = cli.main(["parse", str(run / "console.log"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1..2" in out and " rearm_n\n" in out and "not ok" not in out
    data = json.loads(next((tmp_path / "out").glob("*/results.json")).read_text())
    assert data["identity"]["parsed"]["qemu_trace"].endswith("qemu-trace.log")
    truthful = next(p for p in data["tests"][0]["properties"] if p["prop"] == "truthful")
    assert truthful["status"] == "pass", truthful  # judged: layer 0 came from the directory


@pytest.mark.parametrize(
    "argv,what",
    [
        (["parse", "nonexistent.log"], "cannot read the console log"),
        (["parse", str(DATA / "upstream-suite.console.log"), "--qemu-trace", "nope"], "no such"),
    ],
)
def test_parse_bad_input_is_one_line(argv, what, capsys, tmp_path):
    assert cli.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert what in err and "\n" not in err


def test_a_session_without_the_log_of_a_test_says_why(tmp_path):
    log = tmp_path / "c.log"
    log.write_text("\n".join(console("upstream-suite.console.log")[:5]) + "\n")
    out = offline.parse(log, lambda _: None, rev="upstream", tests=["oneshot_tval"],
                        results_base=tmp_path)  # fmt: skip
    res = out.results[0]
    assert res.status in (ERROR, MISSED) and res.reasons, res


def test_golden_files_are_there_for_every_case():
    assert {f"{c[0]}.results.json" for c in CASES} <= {p.name for p in GOLDEN.iterdir()}
    assert Path(GOLDEN).is_dir()


def test_the_report_draws_the_trace_each_test_was_judged_on_once():
    """A live run draws a test's timeline as its verdict is made; the report at the
    end reuses it unless the verdict or the trace changed."""
    from harness.outputs import report

    s = _session()
    entries = report.Entries()
    drawn = {}
    s.on_result = lambda r: drawn.setdefault(r.name, entries.draw(r, s.trace(r.name)))
    for line in console("upstream-suite.console.log"):
        s.feed(line)
    name = s.stream.parsed.began[0]
    res, tr = s.result(name), s.trace(name)
    assert tr is s.traces()[name]  # the judged trace: its kernel events parsed once
    assert entries.draw(res, tr) is drawn[name] and drawn[name]["svg"]
    redrawn = entries.draw(dataclasses.replace(res, status=FAILED), tr)
    assert redrawn is not drawn[name] and redrawn["status"] == FAILED
