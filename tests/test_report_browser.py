"""report.html in a real browser (headless Chromium, installed by
scripts/install-deps.sh): the page loads, every test that ran has its timeline,
every layer-0 rise is drawn, and a failed property is marked at its record."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DATA

from harness.runs import offline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def _report(tmp_path: Path, log: str, rev: str | None, trace: str | None = None):
    out = offline.parse(
        DATA / log,
        lambda _: None,
        rev=rev,
        qemu_trace_log=DATA / trace if trace else None,
        results_base=tmp_path,
    )
    return out, out.run_dir / "report.html"


def _dom(page: Path) -> str:
    assert CHROMIUM, "chromium is not installed (scripts/install-deps.sh installs it)"
    r = subprocess.run(
        [CHROMIUM, *_FLAGS, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "</html>" in r.stdout, r.stderr[-500:]
    return r.stdout


def _timelines(dom: str) -> dict[str, str]:
    return {
        m.group(1): m.group(0)
        for m in re.finditer(r'<svg[^>]*class="timeline"[^>]*data-test="(\w+)".*?</svg>', dom, re.S)
    }


def test_every_test_has_its_timeline_and_every_hardware_rise_is_drawn(tmp_path):
    out, page = _report(
        tmp_path, "upstream-every-exit.console.log", None, "upstream-every-exit.qemu-trace.log"
    )
    svgs = _timelines(_dom(page))
    assert set(svgs) == {r.name for r in out.results}
    for r in out.results:
        rises = r.metrics["hw_vtimer_edges"]
        drawn = re.search(r"hardware rise \(QEMU\).*?(?=<text x=\"4\")", svgs[r.name], re.S)
        assert drawn and drawn.group(0).count('class="mark hw"') == rises, r.name
        assert " ms</text>" in svgs[r.name]  # the time axis
        assert "[record " in svgs[r.name]  # hovering a mark shows its record


def test_a_failed_property_is_marked_at_its_record(tmp_path):
    out, page = _report(tmp_path, "upstream-twice.console.log", "upstream-twice")
    svgs = _timelines(_dom(page))
    failed = [r for r in out.results if r.status == "FAIL"]
    assert failed
    for r in failed:
        marks = re.findall(r'class="mark fail".*?<title>(.*?)</title>', svgs[r.name], re.S)
        # each failed property that names a record (a count mismatch names none)
        first = next(p for p in r.properties if p.status == "fail" and p.seq is not None)
        assert any(m.split(": ", 1)[1].startswith(first.prop) for m in marks), marks
        assert any(f"[record {first.seq}:" in m for m in marks)


@pytest.mark.parametrize("size", ["1200,4000"])
def test_the_page_renders(tmp_path, size):
    _, page = _report(tmp_path, "upstream-twice.console.log", "upstream-twice")
    shot = tmp_path / "report.png"
    r = subprocess.run(
        [CHROMIUM, *_FLAGS, f"--window-size={size}", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-500:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
