"""junit.xml read back with junitparser (PyPI): each test case's time from its
records, a classname naming the cell, its reasons in <failure>/<error>/<skipped>,
and its records, bounded, in <system-out>."""

from __future__ import annotations

import json

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped
from recorded import judged

from harness.outputs import junit
from harness.traces.records import Record


def _cases(run_dir):
    xml = JUnitXml.fromfile(str(run_dir / "junit.xml"))
    return {c.name: c for suite in xml for c in suite}


def _begin_end(run_dir, test):
    recs = [
        line.split()
        for line in (run_dir / "console.log").read_text(errors="replace").splitlines()
        if line.startswith("@VT1 ") and line.split()[2] == test
    ]
    t = {r[4]: int(r[3]) for r in recs if r[4] in ("begin", "end")}
    return t["begin"], t["end"], len(recs)


@pytest.mark.parametrize("name", ["upstream-every-exit", "upstream-nointr"])
def test_junit_cases_have_time_classname_reasons_and_records(tmp_path, name):
    run_dir = judged(tmp_path, name)
    data = json.loads((run_dir / "results.json").read_text())
    cases = _cases(run_dir)
    ident = data["identity"]
    cell = f"{ident['revision']}.{ident['machine']['name']}.{ident['policy']}"
    assert set(cases) == {t["name"] for t in data["tests"]}
    for t in data["tests"]:
        case = cases[t["name"]]
        assert case.classname == cell
        begin, end, n = _begin_end(run_dir, t["name"])
        assert case.time == pytest.approx((end - begin) / 1e9, abs=1e-3)
        results = case.result
        if t["status"] == "PASS":
            assert results == []
        else:
            (res,) = results
            kind = {"FAIL": Failure, "ERROR": Error, "MISS": Error, "SKIP": Skipped}[t["status"]]
            assert isinstance(res, kind)
            for why in t["reasons"]:
                assert why in res.message
        out = case.system_out.splitlines()
        assert out[0].startswith("@VT1 ") and " begin " in out[0]
        if n > junit.SYSTEM_OUT_RECORDS:
            assert len(out) == junit.SYSTEM_OUT_RECORDS + 1
            assert out[-1].startswith(f"... {n - junit.SYSTEM_OUT_RECORDS} more records")
        else:
            assert len(out) == n and " end status=" in out[-1]
    if name == "upstream-nointr":
        f = cases["oneshot_tval"].result[0]
        assert f.message.startswith("visible: the guest was entered with a vtimer change")
        assert "exit_code: expected 0, observed 1" in f.message and "exit_code" in f.text


def test_system_out_is_bounded_and_counts_the_rest():
    recs = [Record(i, "t", 1000 * i, "exit", {"msg": 'a "b"', "n": str(i)}, i) for i in range(5)]
    text = junit.system_out(recs, limit=2).splitlines()
    assert text == [
        '@VT1 0 t 0 exit msg="a \\"b\\"" n=0',
        '@VT1 1 t 1000 exit msg="a \\"b\\"" n=1',
        "... 3 more records (of 5; console.log)",
    ]
    assert junit.wall_s(recs) == pytest.approx(4e-6)
    end = Record(9, "t", 9, "end", {"status": "ok", "wall_ms": "1500"}, 9)
    assert junit.wall_s([*recs, end]) == 1.5
    assert junit.wall_s([]) is None


def test_a_skipped_and_a_missed_test_carry_their_reasons():
    from harness.judge.verdict import MISSED, SKIPPED, TestResult

    xml = junit.render(
        "s",
        [
            TestResult("a", SKIPPED, ["the ABI cannot express it"]),
            TestResult("b", MISSED, ["never ran: x"]),
        ],
        1.0,
        cell="v6.virt-gicv3.every-exit",
    )
    path_cases = {c.name: c for suite in JUnitXml.fromstring(xml) for c in suite}
    (skip,) = path_cases["a"].result
    assert isinstance(skip, Skipped) and skip.message == "the ABI cannot express it"
    (err,) = path_cases["b"].result
    assert isinstance(err, Error) and err.message == "MISS: never ran: x" and err.type == "MISS"
    assert path_cases["b"].classname == "v6.virt-gicv3.every-exit"
