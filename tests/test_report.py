"""report.html from a recorded run, loaded in headless Chromium (Debian's chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile

import pytest
from conftest import DATA, recorded_vms

from harness.inputs import guest_spec, revision
from harness.judge.model import Model
from harness.judge.verdict import evaluate
from harness.outputs import report
from harness.traces.records import parse

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _make_report(run_dir):
    shutil.copy(DATA / "upstream-every-exit.console.log", run_dir / "console.log")
    (run_dir / "results.json").write_text(
        json.dumps(
            {
                "run_id": "recorded",
                "complete": True,
                "identity": {
                    "revision": "upstream",
                    "provenance": "merged-4.12",
                    "model": "upstream",
                    "machine": {"name": "virt-gicv3"},
                    "policy": "every-exit",
                    "kernel": {"release": "6.1.192"},
                },
                "boot": {
                    "status": "completed",
                    "reason": "ok",
                    "wall_s": 1.0,
                    "qemu_version": "7.2",
                },
                "logs": ["console.log", "results.json"],
            }
        )
    )
    traces = report.traces_from_console(run_dir / "console.log")
    vms = recorded_vms("upstream-every-exit")
    specs = guest_spec.load_all()
    parsed = parse((run_dir / "console.log").read_text().splitlines())
    results = []
    for name, vm in vms.items():
        traces[name].hw = vm
        recs = [r for r in parsed.records if r.test == name]
        results.append(evaluate(specs[name], recs, [], Model.of(revision.load("upstream")), vm))
    return report.render(run_dir, results, traces, {"upstream": results}), results


def test_report_has_a_timeline_per_test(tmp_path):
    page, results = _make_report(tmp_path)
    html = page.read_text()
    for r in results:
        assert f'id="{r.name}"' in html
        assert f'data-test="{r.name}"' in html
    assert "<script" not in html


def test_report_escapes_what_it_shows(tmp_path):
    _, results = _make_report(tmp_path)
    results[0].reasons.append("<script>alert(1)</script>")
    traces = report.traces_from_console(tmp_path / "console.log")
    html = report.render(tmp_path, results, traces).read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_loads_in_headless_chromium(tmp_path):
    page, results = _make_report(tmp_path)
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
             page.as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
    assert "vtimer-harness run recorded" in dom
    svgs = re.findall(r'<svg[^>]*data-test="([^"]+)"', dom)
    assert svgs == [r.name for r in results]
    assert dom.count("<polyline") >= 2 * len(results)
