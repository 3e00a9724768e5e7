"""diff on two recorded matrix runs (two real nightly runs, results.json of every cell)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from harness import cli
from harness.core import repo
from harness.core.errors import InputError
from harness.runs import diff


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("diff")
    with tarfile.open(repo.ROOT / "tests" / "data" / "diff-nightly.tar.gz") as t:
        t.extractall(root, filter="data")
    return root / "a", root / "b"


def cell_dir(run: Path, cell: str) -> Path:
    m = json.loads((run / "matrix.json").read_text())
    return run / next(c["run_dir"] for c in m["cells"] if c["name"] == cell)


def test_matrix_diff_of_two_real_nightly_runs(runs):
    a, b = runs
    d = diff.compare(a, b)
    assert d.kind == "matrix" and len(d.cells) == 15 and not d.only_a and not d.only_b
    assert [(t.cell, t.test, t.a, t.b) for t in d.regressions] == [
        ("v4-6.1-virt-gicv3-every-exit", "oneshot_tval", "PASS", "FAIL")
    ]
    fixes = {(t.cell, t.test, t.a) for t in d.fixes}
    assert ("upstream-deb6.1.0-50-virt-gicv3-debian-every-exit", "oneshot_tval", "FAIL") in fixes
    # run a's QEMU died (QMP refused): every test MISS; in b the eintr-only VMM fails them
    changed = [t for t in d.status_changes if t.cell == "upstream-6.1-virt-gicv3-eintr-only"]
    assert len(changed) == 15 and all((t.a, t.b) == ("MISS", "FAIL") for t in changed)
    removed = {(t.cell, t.test) for t in d.of_kind("removed")}
    assert removed == {
        ("upstream-6.1-virt-gicv3-smp2-every-exit", "two_vcpus"),
        ("upstream-6.1-virt-gicv3-smp2-every-exit", "both_timers"),
    }
    outcomes = {c.name: (c.a_outcome, c.b_outcome) for c in d.outcome_changes}
    assert outcomes["upstream-6.1-virt-gicv3-eintr-only"] == ("error", "fail")
    assert outcomes["v4-6.1-virt-gicv3-every-exit"] == ("pass", "fail")
    # latencies of single edges under two parallel boots: all within noise here
    assert d.metric_changes == []
    assert any(
        m.metric == "notice_latency_us" and m.factor > 10 for c in d.cells for m in c.metrics
    )
    notes = {n for c in d.cells for n in c.notes if c.name == "upstream-6.1-virt-gicv3-eintr-only"}
    assert "boot: qemu-died -> completed" in notes


def test_text_lists_changes_most_important_first(runs):
    a, b = runs
    lines = diff.text(diff.compare(a, b))
    assert lines[2].startswith("# 1 new failure(s), 2 fix(es), 15 other status change(s)")
    assert lines[3] == "new failures:"
    assert lines[4].startswith("  v4-6.1-virt-gicv3-every-exit: oneshot_tval: PASS -> FAIL  (")
    assert "fixes:" in lines and "cells:" in lines
    full = diff.text(diff.compare(a, b), show_all=True)
    assert "metric changes within noise:" in full and len(full) > len(lines)


def test_noise_rules():
    lat = diff.metric_change
    # a doubling of a 20 ms median over 3+ edges counts; the same over one edge does not
    assert lat("c", "t", "irq_latency_us", 20_000, 45_000, (3, 4)).beyond_noise
    assert not lat("c", "t", "irq_latency_us", 20_000, 45_000, (1, 1)).beyond_noise
    # a large factor under the floor does not count: 0.2 ms -> 5 ms for an IRQ delivery
    assert not lat("c", "t", "irq_latency_us", 200, 5_000, (5, 5)).beyond_noise
    # but a notice that now waits for the host's tick does: a sub-ms median tenfold
    assert lat("c", "t", "notice_latency_us", 380, 4_100, (5, 5)).beyond_noise
    assert lat("c", "t", "notice_latency_us", 4_100, 380, (5, 5)).beyond_noise
    assert not lat("c", "t", "notice_latency_us", 380, 4_100, (1, 1)).beyond_noise
    assert not lat("c", "t", "notice_latency_us", 400, 1_200, (5, 5)).beyond_noise  # x3
    assert not lat("c", "t", "notice_latency_us", 900, 3_800, (5, 5)).beyond_noise  # x4
    # halving weighs like doubling
    m = lat("c", "t", "notice_latency_us", 45_000, 20_000, (3, 3))
    assert m.beyond_noise and m.factor == pytest.approx(2.25)
    assert m.line() == "notice_latency_us: 45000 -> 20000 µs (x2.2 down, n 3/3)"
    # exits per edge: an exit storm counts, timing-driven jitter does not
    assert diff.metric_change("c", "t", "exits_per_edge", 24, 2400, (None, None)).beyond_noise
    assert not diff.metric_change("c", "t", "exits_per_edge", 8, 28, (None, None)).beyond_noise


def test_run_against_run_and_cell_dirs(runs, tmp_path):
    a, b = runs
    ra = cell_dir(a, "v4-6.1-virt-gicv3-every-exit")
    rb = cell_dir(b, "v4-6.1-virt-gicv3-every-exit")
    d = diff.compare(ra, rb)
    assert d.kind == "run" and len(d.cells) == 1
    assert [t.test for t in d.regressions] == ["oneshot_tval"]
    assert diff.text(d)[3:5] == [
        "new failures:",
        "  oneshot_tval: PASS -> FAIL  (the guest reported a failed check)",
    ]
    # a matrix cell directory stands for the one run inside it
    d2 = diff.compare(ra.parent, rb.parent)
    assert [t.test for t in d2.regressions] == ["oneshot_tval"]
    same = diff.compare(ra, ra)
    assert not (same.regressions or same.fixes or same.status_changes or same.metric_changes)
    assert diff.text(same)[-1].startswith("no test changed status")
    with pytest.raises(InputError, match="compare like with like"):
        diff.compare(a, rb)
    with pytest.raises(InputError, match=r"no results\.json or matrix\.json"):
        diff.compare(tmp_path, rb)


def test_cells_in_one_run_only_and_cells_without_results(runs, tmp_path):
    a, b = runs
    b2 = tmp_path / "b2"
    shutil.copytree(b, b2)
    m = json.loads((b2 / "matrix.json").read_text())
    m["cells"][0]["name"] = "renamed"
    m["cells"][1]["run_dir"] = None  # e.g. the prebuilt kernel could not be fetched
    (b2 / "matrix.json").write_text(json.dumps(m))
    d = diff.compare(a, b2)
    assert d.only_a == ["upstream-6.1-virt-gicv3-every-exit"] and d.only_b == ["renamed"]
    gone = next(c for c in d.cells if c.name == "v4-6.1-virt-gicv3-every-exit")
    assert gone.b_outcome == "error" and all(t.kind == "removed" for t in gone.tests)
    assert gone.notes == ["run b has no results (the cell failed before its run)"]
    text = diff.text(d)
    assert "  renamed: only in b" in text


def test_html_page_escapes_and_links_reports(runs, tmp_path):
    a, b = runs
    b2 = tmp_path / "b"
    shutil.copytree(b, b2)
    rd = cell_dir(b2, "v4-6.1-virt-gicv3-every-exit") / "results.json"
    data = json.loads(rd.read_text())
    t = next(t for t in data["tests"] if t["name"] == "oneshot_tval")
    t["reasons"].insert(0, "<script>alert(1)</script>")
    rd.write_text(json.dumps(data))
    out = diff.write_html(diff.compare(a, b2))
    assert out == b2 / "diff-a.html"
    page = out.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="v4-6.1-virt-gicv3-every-exit/' in page and "/report.html" in page
    assert "New failures" in page and "Fixes" in page
    other = diff.write_html(diff.compare(a, b2), tmp_path / "x" / "d.html")
    assert other.is_file() and "../b/v4-6.1" in other.read_text()


def test_cli_exit_code_says_whether_anything_regressed(runs, tmp_path, capsys):
    a, b = runs
    assert cli.main(["diff", str(a), str(b), "--html", str(tmp_path / "d.html")]) == 1
    out = capsys.readouterr().out
    assert "new failures:" in out and f"# html: {tmp_path / 'd.html'}" in out
    assert cli.main(["diff", str(b), str(b), "--no-html"]) == 0
    assert cli.main(["diff", str(tmp_path / "nope"), str(b)]) == 2
