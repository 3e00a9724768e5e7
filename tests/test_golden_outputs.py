"""Golden files for what a run writes for people and labs: report.html of a
recorded boot (judged offline, with its layer 0) and an exported LAVA job.

Run-specific text is masked: the run id, content hashes (kernel build keys,
sha256 sums). A change to a template or to what feeds it shows as a diff here;
regenerate with VT_REGEN_GOLDEN=1 and review it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from conftest import DATA

from harness.lab.lava import export as lava_export
from harness.runs import offline

GOLDEN = DATA / "golden"
REGEN = os.environ.get("VT_REGEN_GOLDEN") == "1"
SMOKE = DATA.parent.parent / "matrix" / "smoke.yaml"
_HASH = re.compile(r"\b[0-9a-f]{12,64}\b")


def _check(got: str, name: str) -> None:
    golden = GOLDEN / name
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(got)
    want = golden.read_text()
    if got != want:
        diff = next(
            (f"line {i + 1}: {a!r} != {b!r}"
             for i, (a, b) in enumerate(zip(got.splitlines(), want.splitlines(), strict=False))
             if a != b),
            f"{len(got.splitlines())} lines != {len(want.splitlines())}",
        )  # fmt: skip
        raise AssertionError(f"{golden} differs ({diff}); regenerate with VT_REGEN_GOLDEN=1")


def test_report_html_of_a_recorded_boot(tmp_path):
    out = offline.parse(
        DATA / "upstream-every-exit.console.log",
        lambda _: None,
        qemu_trace_log=DATA / "upstream-every-exit.qemu-trace.log",
        results_base=tmp_path,
    )
    page = (out.run_dir / "report.html").read_text()
    page = page.replace(out.run_dir.name, "RUN-ID")
    assert "RUN-ID" in page and "oneshot_wfi" in page
    _check(page, "upstream-every-exit.report.html")


def test_an_exported_lava_job(tmp_path: Path):
    lava_export.export(SMOKE, tmp_path, "https://lab.example/vtimer/", cells=[])
    job = sorted((tmp_path / "jobs").glob("*.yaml"))[0]
    text = _HASH.sub("HASH", job.read_text())
    assert "device_type: qemu" in text and "HASH" in text
    _check(text, f"lava-{job.name}")
