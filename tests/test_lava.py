"""LAVA: exported jobs pass LAVA's own schema (lava_common, from Debian's lava-common) and
render LAVA's own qemu device type (lava-server's templates); recorded job logs (the
server's YAML, lava-run's JSON lines) are judged by our verdict."""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.core import repo
from harness.core.errors import HarnessError, InputError
from harness.lab.lava import export as lava_export
from harness.lab.lava import ingest as lava_ingest
from harness.lab.lava import lavarun
from harness.lab.lava import schema as lava_schema
from harness.runs.matrix import spec

DATA = repo.ROOT / "tests" / "data" / "lava"
SMOKE = repo.ROOT / "matrix" / "smoke.yaml"
NIGHTLY = repo.ROOT / "matrix" / "nightly.yaml"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lava")
    lava_export.export(NIGHTLY, out, "https://lab.example/vtimer/")
    return out


def test_every_exported_job_passes_lavas_schema(exported):
    jobs = sorted((exported / "jobs").glob("*.yaml"))
    assert len(jobs) == len(spec.load(NIGHTLY).cells)
    for job in jobs:
        lava_schema.validate(job.read_text())  # raises on any schema error
    import lava_common.schemas  # imported from Debian's package, unpacked under build/

    assert Path(lava_common.schemas.__file__).is_relative_to(repo.BUILD)


def test_schema_rejects_what_lava_would(exported):
    good = yaml.safe_load(
        (exported / "jobs" / "upstream-6.1-virt-gicv3-every-exit.yaml").read_text()
    )
    cases = [
        (lambda j: j["context"].update(smp=2), "context"),
        (lambda j: j["timeouts"].update(job={"minutes": 1}), "timeout"),
        (lambda j: j["actions"][2]["test"]["monitors"][0].update(name="a b"), "monitors"),
        (lambda j: j["actions"][1]["boot"].update(method="qemux"), "qemux"),
        (lambda j: j.pop("visibility"), "visibility"),
    ]
    for mutate, where in cases:
        job = yaml.safe_load(yaml.safe_dump(good))
        mutate(job)
        with pytest.raises(HarnessError, match="LAVA schema") as e:
            lava_schema.validate(yaml.safe_dump(job))
        assert where in str(e.value)


def test_jobs_carry_the_cells_machine_kernel_and_initramfs(exported):
    jobs = {p.stem: yaml.safe_load(p.read_text()) for p in (exported / "jobs").glob("*.yaml")}
    deb = jobs["upstream-deb6.1.0-56-virt-gicv3-debian-every-exit"]
    assert deb["device_type"] == "qemu"
    assert deb["context"]["machine"] == "virt,virtualization=on,gic-version=3"
    assert deb["context"]["memory"] == 1024 and "-smp 1" in deb["context"]["extra_options"]
    images = deb["actions"][0]["deploy"]["images"]
    assert images["kernel"]["url"] == (
        "https://lab.example/vtimer/kernels/linux-image-6.1.0-56-arm64/Image"
    )
    assert "cryptomgr.notests" in images["kernel"]["image_arg"]
    assert (
        "vtimer.cell=upstream-deb6.1.0-56-virt-gicv3-debian-every-exit"
        in (images["kernel"]["image_arg"])
    )
    assert deb["metadata"]["vtimer.source"] == "linux-image-6.1.0-56-arm64"
    nvhe = jobs["upstream-6.1-virt-gicv3-nvhe-every-exit"]["actions"][0]["deploy"]["images"]
    assert "kvm-arm.mode=nvhe" in nvhe["kernel"]["image_arg"]
    assert "/kernels/upstream-" in nvhe["kernel"]["url"]  # the build's content-addressed dir
    gic2 = jobs["upstream-6.1-virt-gicv2-every-exit"]["context"]["machine"]
    assert gic2.endswith("gic-version=2")
    assert "-smp 2" in jobs["upstream-6.1-virt-gicv3-smp2-every-exit"]["context"]["extra_options"]
    # every initramfs the jobs name was written, with the sha256 the job checks
    manifest = json.loads((exported / "artifacts.json").read_text())
    for a in manifest["artifacts"]:
        if a["path"].startswith("initramfs/"):
            assert (exported / "artifacts" / a["path"]).is_file() and a["sha256"]
    initrd = jobs["v5-6.1-virt-gicv3-eintr-only"]["actions"][0]["deploy"]["images"]["initrd"]
    assert "/initramfs/v5-eintr-only-" in initrd["url"] and len(initrd["sha256sum"]) == 64


def test_device_config_is_lavas_qemu_device_type():
    # LAVA's own qemu.jinja2 (lava-server, unpacked under build/) rendered with the context
    job = yaml.safe_load((DATA / "upstream-eintr-only-mmio_spin.job.yaml").read_text())
    device = yaml.safe_load(lavarun.device_config(job))
    assert lavarun.device_types_dir().is_relative_to(repo.BUILD)
    qemu = device["actions"]["boot"]["methods"]["qemu"]["parameters"]
    assert qemu["command"] == "qemu-system-aarch64"
    ctx = job["context"]
    assert qemu["options"][:2] == [f"-cpu {ctx['cpu']}", f"-machine {ctx['machine']}"]
    assert f"-m {ctx['memory']}" in qemu["options"] and "-monitor none" in qemu["options"]
    assert qemu["extra"] == ctx["extra_options"]
    assert "tmpfs" in device["actions"]["deploy"]["methods"] or device["actions"]["deploy"]


def _log(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt") as f:
        return yaml.safe_load(f) if name.endswith(".yaml.gz") else lava_ingest.log_entries(f.read())


def _monitor(job: dict, lines: list[str]) -> list[tuple[str, str]]:
    """The (case, result) pairs the job's monitor patterns find in console lines."""
    (mon,) = next(a["test"] for a in job["actions"] if "test" in a)["monitors"]
    start = next(i for i, x in enumerate(lines) if re.search(mon["start"], x))
    cases = []
    for line in lines[start + 1 :]:
        if re.search(mon["end"], line):
            break
        if m := re.search(mon["pattern"], line):
            cases.append((m["test_case_id"], mon["fixupdict"].get(m["result"], m["result"])))
    return cases


LAVA_RUN_LOG = "upstream-every-exit-smoke.lava-run.jsonl.gz"  # lava-run 2023.01's own
SMOKE_TESTS = ["oneshot_wfi", "rearm_n", "mmio_spin"]


def test_monitor_patterns_find_one_case_per_test_in_recorded_logs():
    job = yaml.safe_load((DATA / "upstream-eintr-only-mmio_spin.job.yaml").read_text())
    for name, tests in (
        ("upstream-every-exit-rearm_n.log.yaml.gz", ["rearm_n"]),
        ("upstream-eintr-only-mmio_spin.log.yaml.gz", ["mmio_spin"]),
        (LAVA_RUN_LOG, SMOKE_TESTS),
    ):
        entries = _log(name)
        lines, _ = lava_ingest.console_lines(DATA / name)
        assert _monitor(job, lines) == [(t, "pass") for t in tests]
        recorded = [e["msg"] for e in entries if e["lvl"] == "results"]
        recorded = [r for r in recorded if r["definition"] != "lava"]  # LAVA's own actions
        assert [(r.get("name", r.get("case")), r["result"]) for r in recorded] == [
            (t, "pass") for t in tests
        ]


def test_ingest_reads_lava_runs_json_lines_and_the_servers_yaml(tmp_path):
    # lava-run's log: a YAML flow mapping per line (JSON but for a tagged value), the
    # console's '"' escaped as '\\"' (the kt records' msg="..."): undone, CRCs hold
    raw = gzip.decompress((DATA / LAVA_RUN_LOG).read_bytes()).decode()
    assert '\\\\\\"' in raw and ': ! "' in raw
    lines, kind = lava_ingest.console_lines(DATA / LAVA_RUN_LOG)
    assert kind == "lava-run job log"
    kt = [x for x in lines if " kt " in x and x.startswith("@VT1")]
    assert kt and all('msg="' in x for x in kt)
    out = lava_ingest.ingest(DATA / LAVA_RUN_LOG, tmp_path, say=lambda s: None)
    assert out.exit_code == 0 and out.boot.status == "completed"
    assert [(r.name, r.status) for r in out.results] == [(t, "PASS") for t in SMOKE_TESTS]
    data = json.loads((out.run_dir / "results.json").read_text())
    assert data["identity"]["lava"]["cell"] == "upstream-6.1-virt-gicv3-every-exit"
    assert not any("checksum" in r for t in data["tests"] for r in t["reasons"])
    # the same log as the server keeps it (output.yaml: "- " and the mapping, a line each)
    server = tmp_path / "output.yaml"
    server.write_text("".join(f"- {x}\n" for x in raw.splitlines()))
    assert lava_ingest.console_lines(server) == (lines, "LAVA job log")
    again = lava_ingest.ingest(server, tmp_path, say=lambda s: None)
    assert [(r.name, r.status) for r in again.results] == [(t, "PASS") for t in SMOKE_TESTS]


def test_lava_run_missing_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarnessError, match="lava-run not found: install Debian's lava-disp"):
        lavarun.run(DATA / "upstream-eintr-only-mmio_spin.job.yaml", tmp_path / "out")


def _fake_lava_run(tmp_path: Path, body: str) -> None:
    fake = tmp_path / "bin" / "lava-run"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\necho \'{"dt": "x", "lvl": "info", "msg": "hi"}\' >&2\n' + body)
    fake.chmod(0o755)


def test_lava_run_past_its_deadline_is_killed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    job = DATA / "upstream-eintr-only-mmio_spin.job.yaml"
    _fake_lava_run(tmp_path, "exec sleep 60\n")  # SIGTERM ends it (LAVA cancels the job)
    r = lavarun.run(job, tmp_path / "out", timeout_s=1)
    assert r.returncode is None and not r.ok and r.elapsed_s < 10
    assert r.error == "killed after 1 s (deadline)"
    assert [e["lvl"] for e in lava_ingest.log_entries(r.log.read_text())] == ["info", "error"]
    assert (tmp_path / "out" / "device.yaml").is_file()
    # one that ignores SIGTERM, its child (QEMU, under pexpect) in a session of its own
    pidfile = tmp_path / "child.pid"
    _fake_lava_run(tmp_path, f"trap '' TERM\nsetsid sleep 300 &\necho $! > {pidfile}\nwait\n")
    monkeypatch.setattr(lavarun, "CANCEL_S", 0.5)
    r = lavarun.run(job, tmp_path / "out2", timeout_s=1)
    assert r.returncode is None and r.elapsed_s < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # killed; reaped by init
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_ingest_judges_what_lavas_monitor_cannot(tmp_path):
    # LAVA's monitor saw the VMM end mmio_spin with status ok; our model sees that an
    # eintr-only VMM never read a change that rode on an MMIO exit
    out = lava_ingest.ingest(
        DATA / "upstream-eintr-only-mmio_spin.log.yaml.gz", tmp_path, say=lambda s: None
    )
    data = json.loads((out.run_dir / "results.json").read_text())
    assert data["complete"] and data["boot"]["status"] == "completed"
    ident = data["identity"]
    assert (ident["revision"], ident["policy"], ident["machine"]["name"]) == (
        "upstream",
        "eintr-only",
        "virt-gicv3",
    )  # from the vtimer.* words on the kernel command line
    assert ident["lava"]["cell"] == "upstream-6.1-virt-gicv3-eintr-only"
    assert ident["kernel"]["release"] == "6.1.192"
    (t,) = data["tests"]
    assert t["name"] == "mmio_spin" and t["status"] == "FAIL"
    assert any(r.startswith("visible:") for r in t["reasons"])
    for name in ("console.log", "junit.xml", "ktap.txt", "report.html"):
        assert (out.run_dir / name).is_file()
    assert out.exit_code == 1


def test_ingest_of_a_passing_log_and_of_a_raw_console(tmp_path):
    out = lava_ingest.ingest(
        DATA / "upstream-every-exit-rearm_n.log.yaml.gz", tmp_path, say=lambda s: None
    )
    assert out.exit_code == 0 and [r.status for r in out.results] == ["PASS"]
    # the same job log as JSON (LAVA's API can give either)
    as_json = tmp_path / "log.json"
    as_json.write_text(json.dumps(_log("upstream-every-exit-rearm_n.log.yaml.gz"), default=str))
    assert lava_ingest.console_lines(as_json)[1] == "LAVA job log"
    assert lava_ingest.ingest(as_json, tmp_path, say=lambda s: None).exit_code == 0
    # the same console as a plain log; with a job's metadata naming the tests
    lines = [
        e["msg"] for e in _log("upstream-every-exit-rearm_n.log.yaml.gz") if e["lvl"] == "target"
    ]
    raw = tmp_path / "console.txt"
    raw.write_text("\n".join(lines) + "\n")
    out2 = lava_ingest.ingest(raw, tmp_path, say=lambda s: None)
    assert [(r.name, r.status) for r in out2.results] == [("rearm_n", "PASS")]
    # a log cut short: the test that never ended is an ERROR, the rest MISS
    cut = tmp_path / "cut.txt"
    end = next(i for i, x in enumerate(lines) if " rearm_n " in x and " end " in x)
    cut.write_text("\n".join(lines[:end]) + "\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {"metadata": {"vtimer.revision": "upstream", "vtimer.tests": "rearm_n,oneshot_wfi"}}
        )
    )
    out3 = lava_ingest.ingest(cut, tmp_path, job=job, say=lambda s: None)
    assert {r.name: r.status for r in out3.results} == {"rearm_n": "ERROR", "oneshot_wfi": "MISS"}
    assert out3.boot.status == "hang"


def test_ingest_refuses_lavas_results_list(tmp_path):
    results = tmp_path / "results.yaml"
    results.write_text(yaml.safe_dump([{"name": "rearm_n", "result": "pass", "suite": "x"}]))
    with pytest.raises(InputError, match="list of test results"):
        lava_ingest.ingest(results, tmp_path)
    assert cli.main(["lava-ingest", str(results), "--out", str(tmp_path)]) == 2


def test_cli_export_then_ingest(tmp_path, capsys):
    assert (
        cli.main(
            [
                "lava-export",
                str(SMOKE),
                "--out",
                str(tmp_path / "x"),
                "--artifact-url",
                "http://h/a",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.split()
    assert len(printed) == len(spec.load(SMOKE).cells)
    assert cli.main(["lava-export", str(SMOKE), "--out", str(tmp_path), "--artifact-url", "h"]) == 2
    code = cli.main(
        [
            "lava-ingest",
            str(DATA / "upstream-every-exit-rearm_n.log.yaml.gz"),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 0 and "ok 1 rearm_n" in capsys.readouterr().out


def test_the_suites_last_records_in_lavas_feedback_are_the_console_too(tmp_path):
    # on a loaded host the suite's done record (and records before it) reached the
    # serial after LAVA's test action ended: lava-run logs them as lvl "feedback"
    name = "upstream-every-exit-smoke-feedback.lava-run.jsonl.gz"
    entries = _log(name)
    assert any(e["lvl"] == "feedback" and " done tests=3 " in str(e.get("msg")) for e in entries)
    out = lava_ingest.ingest(DATA / name, tmp_path, say=lambda s: None)
    assert out.boot.status == "completed"
    assert [r.name for r in out.results] == SMOKE_TESTS or {r.name for r in out.results} == set(
        SMOKE_TESTS
    )
    assert {r.status for r in out.results} == {"PASS"}
