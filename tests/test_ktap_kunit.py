"""Our KTAP read by the kernel's own parser: tools/testing/kunit/kunit_parser.py of
the installed linux-source-6.1 (just tools/testing/kunit/ extracted into build/,
once). Each judged test's properties are KTAP subtests (harness/outputs/ktap.py);
the parser's counts must be ours, failures included, and a property that is not a
pass (not-judged, n/a, skip) must never count as passed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from recorded import RUNS, judged

from harness.core import repo

SOURCE = Path("/usr/src/linux-source-6.1.tar.xz")
# tools/testing/kunit/ of SOURCE, where kunit.py finds itself (it wants that path)
TREE = repo.BUILD / "kunit-6.1"
KUNIT = TREE / "tools" / "testing" / "kunit"


def _extract() -> Path:
    if (KUNIT / "kunit_parser.py").exists():
        return KUNIT
    if not SOURCE.exists():
        pytest.skip(f"{SOURCE} is not installed (apt-get install linux-source-6.1)")
    repo.BUILD.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=repo.BUILD, prefix=".kunit-"))
    subprocess.run(
        ["tar", "xJf", SOURCE, "-C", tmp, "--strip-components=1", "--wildcards",
         "*/tools/testing/kunit/*"],
        check=True,
    )  # fmt: skip
    try:
        os.rename(tmp, TREE)
    except OSError:  # another session extracted it first
        subprocess.run(["rm", "-rf", tmp], check=True)
    return KUNIT


@pytest.fixture(scope="session")
def kunit_parser():
    path = str(_extract())
    sys.path.insert(0, path)
    try:
        import kunit_parser

        yield kunit_parser
    finally:
        sys.path.remove(path)


def expected_counts(tests: list[dict]) -> dict[str, int]:
    """What kunit_parser counts: a test's subtests (its properties, then checks),
    or the test itself when it has none."""
    n = {"passed": 0, "failed": 0, "skipped": 0}
    for t in tests:
        props = t["properties"]
        if not props:
            key = {"PASS": "passed", "SKIP": "skipped"}.get(t["status"], "failed")
            n[key] += 1
            continue
        for p in props:
            n[{"pass": "passed", "fail": "failed"}.get(p["status"], "skipped")] += 1
        own = {_line(p) for p in props if p["status"] == "fail"}
        rest = [r for r in t["reasons"] if r not in own] if t["status"] != "PASS" else []
        n["failed" if rest else "passed"] += 1
    return n


def _line(p: dict) -> str:
    from harness.judge.property import PropertyResult

    return PropertyResult(**p).line()


def parse(kunit_parser, run_dir: Path):
    text = (run_dir / "ktap.txt").read_text().splitlines()
    return kunit_parser.parse_run_tests(text)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_kunit_parser_reads_our_ktap_with_our_counts(tmp_path, kunit_parser, name):
    run_dir = judged(tmp_path, name)
    data = json.loads((run_dir / "results.json").read_text())
    main = parse(kunit_parser, run_dir)
    c = main.counts
    assert (c.errors, c.crashed) == (0, 0), main.log
    assert {"passed": c.passed, "failed": c.failed, "skipped": c.skipped} == expected_counts(
        data["tests"]
    )
    S = kunit_parser.TestStatus
    assert [t.name for t in main.subtests] == [t["name"] for t in data["tests"]]
    for got, want in zip(main.subtests, data["tests"], strict=True):
        status = {"PASS": S.SUCCESS, "SKIP": S.SKIPPED}.get(want["status"], S.FAILURE)
        assert got.status == status, want["name"]
        if not want["properties"]:
            assert got.subtests == []
            continue
        props = {p.name: p.status for p in got.subtests}
        for p in want["properties"]:
            assert props[p["prop"]] == {"pass": S.SUCCESS, "fail": S.FAILURE}.get(
                p["status"], S.SKIPPED
            ), (want["name"], p)
    if any(t["status"] != "PASS" for t in data["tests"]):
        assert main.status == S.FAILURE


def test_a_failed_property_fails_under_its_failed_test_with_its_reason(tmp_path, kunit_parser):
    run_dir = judged(tmp_path, "upstream-nointr")
    main = parse(kunit_parser, run_dir)
    S = kunit_parser.TestStatus
    t = next(t for t in main.subtests if t.name == "oneshot_tval")
    assert t.status == S.FAILURE
    visible = next(p for p in t.subtests if p.name == "visible")
    assert visible.status == S.FAILURE
    assert any(line.strip().startswith("# visible: the guest was entered") for line in visible.log)
    # not judged is SKIP with the reason, never a pass
    abi = next(p for p in t.subtests if p.name == "abi")
    assert abi.status == S.SKIPPED
    ktap = (run_dir / "ktap.txt").read_text()
    assert "  ok 1 abi # SKIP not judged: the booted kernel's ABI was not checked" in ktap
    # the guest's failed check fails the checks subtest too
    checks = t.subtests[-1]
    assert checks.name == "checks" and checks.status == S.FAILURE


@pytest.mark.parametrize("name,code", [("upstream-every-exit", 0), ("upstream-nointr", 1)])
def test_kunit_py_parse_exits_as_our_run_did(tmp_path, kunit_parser, name, code):
    """`kunit.py parse ktap.txt`, the kernel's command: 0 only when nothing failed."""
    run_dir = judged(tmp_path, name)
    cmd = [sys.executable, KUNIT / "kunit.py", "parse", run_dir / "ktap.txt"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == code, out.stdout + out.stderr
    assert "Testing complete." in out.stdout
