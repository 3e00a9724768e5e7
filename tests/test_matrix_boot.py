"""Real runs: matrix/smoke.yaml (kernels cached after the first run, ~15 s), the diff of
that run, and one exported LAVA job run as LAVA's qemu device type would, then ingested."""

from __future__ import annotations

import json

import pytest

from harness.core import repo
from harness.lab.lava import dispatch as lava_dispatch
from harness.lab.lava import export as lava_export
from harness.lab.lava import ingest as lava_ingest
from harness.lab.lava import schema as lava_schema
from harness.runs import diff
from harness.runs.matrix import scheduler, spec

pytestmark = pytest.mark.boot
SMOKE = repo.ROOT / "matrix" / "smoke.yaml"


def test_smoke_matrix_runs_every_cell_as_expected(tmp_path):
    lines: list[str] = []
    code, mdir = scheduler.run(SMOKE, tmp_path, out=lines.append)
    assert code == 0, "\n".join(lines)
    data = json.loads((mdir / "matrix.json").read_text())
    assert data["complete"] and data["ok"]
    cells = {c["name"]: c for c in data["cells"]}
    assert len(cells) == len(spec.load(SMOKE).cells) >= 5
    assert cells["upstream-6.1-virt-gicv3-eintr-only"]["outcome"] == "fail"
    deb = cells["upstream-deb6.1.0-56-virt-gicv3-debian-every-exit"]
    assert deb["outcome"] == "pass" and deb["kernel"]["release"] == "6.1.0-56-arm64"
    results = json.loads((mdir / deb["run_dir"] / "results.json").read_text())
    assert results["identity"]["kernel"]["package"] == "linux-image-6.1.0-56-arm64"
    assert cells["upstream-6.1-virt-gicv2-every-exit"]["boot"]["status"] == "completed"
    assert lines[-1].startswith("# matrix smoke: all cells as expected")
    # a run diffed with itself: nothing changed
    d = diff.compare(mdir, mdir)
    assert not (d.regressions or d.fixes or d.status_changes or d.metric_changes)
    assert diff.write_html(d).is_file()


def test_an_exported_job_runs_like_lava_and_is_ingested(tmp_path):
    cell = "upstream-6.1-virt-gicv3-every-exit"
    out = tmp_path / "lava"
    (job,) = lava_export.export(
        SMOKE, out, "https://lab.example/vt", cells=[cell], with_kernels=True
    )
    text = job.read_text()
    lava_schema.validate(text)
    manifest = json.loads((out / "artifacts.json").read_text())
    files = {a["url"]: out / "artifacts" / a["path"] for a in manifest["artifacts"]}
    assert all(a["sha256"] for a in manifest["artifacts"])
    log = tmp_path / "job-log.yaml"
    cases = lava_dispatch.run_job_locally(text, files, log, timeout_s=120)
    tests = spec.load(SMOKE).select([cell]).cells[0].tests
    assert [(c["name"], c["result"]) for c in cases] == [(t, "pass") for t in tests]
    run = lava_ingest.ingest(log, tmp_path / "results", say=lambda s: None)
    assert run.exit_code == 0
    assert [(r.name, r.status) for r in run.results] == [(t, "PASS") for t in tests]
