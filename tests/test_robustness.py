"""A broken kernel never hangs the analysis and no result goes missing: layer 0 in
one pass with bounded lists, the storm control's recorded log, every selected
test in every output, the spec loader's limits from the VMM's header."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path

import pytest
from conftest import DATA, console

from harness.core import repo
from harness.core.errors import InputError
from harness.inputs import guest_spec, limits, revision
from harness.judge.model import FAIL, NA, NOT_JUDGED, Model
from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED, evaluate
from harness.lab.lava import ingest as lava_ingest
from harness.traces import qemu_trace, records


# -- layer 0: one pass, bounded ---------------------------------------------------
def _cycle(i: int, offset: int) -> list[str]:
    """One KVM load / guest arm / fire / put cycle of QEMU's trace on CPU 0."""
    cval = 0x1000 + 0x100 * i
    return [
        f"arm_gt_cntvoff_write value {offset:#x}",
        "arm_gt_cval_write timer 1 value 0x0",
        "arm_gt_ctl_write timer 1 value 0x0",
        f"arm_gt_cval_write timer 1 value {cval:#x}",
        "arm_gt_ctl_write timer 1 value 0x1",
        "arm_gt_recalc timer 1 irqstate 0 next tick 0x100",
        "arm_gt_recalc timer 1 irqstate 1 next tick 0x200",
        "arm_gt_ctl_write timer 1 value 0x3",  # the guest masks it: the line drops
        "arm_gt_recalc timer 1 irqstate 0 next tick 0x0",
        "arm_gt_ctl_write timer 1 value 0x0",  # KVM's put
        "arm_gt_cntvoff_write value 0x0",
    ]


def test_layer0_storm_keeps_exact_counts_and_a_bounded_list(monkeypatch):
    monkeypatch.setattr(qemu_trace, "MAX_CHANGES", 500)
    n = 2000
    lines = [line for i in range(n) for line in _cycle(i, 0x5000)]
    (vm,) = qemu_trace.timelines(qemu_trace.parse(lines))
    assert vm.loads == n and vm.edges() == n
    assert len(vm.changes) == 500 and vm.dropped == 2 * n - 500
    assert len(vm.parked) <= qemu_trace.MAX_PARKED


def _pcycle(i: int, offset: int) -> list[str]:
    """The same on a VHE host, the guest's direct ptimer firing: KVM restores CNTP after
    CNTV at the load and saves it (CNTP_CTL=0) before CNTVOFF=0 at the put."""
    cval = 0x1000 + 0x100 * i
    return [
        f"arm_gt_cntvoff_write value {offset:#x}",
        "arm_gt_cval_write timer 1 value 0x0",
        "arm_gt_ctl_write timer 1 value 0x0",
        "arm_gt_cval_write timer 0 value 0x0",
        "arm_gt_ctl_write timer 0 value 0x0",
        f"arm_gt_cval_write timer 0 value {cval:#x}",
        "arm_gt_ctl_write timer 0 value 0x1",
        "arm_gt_recalc timer 0 irqstate 0 next tick 0x100",
        "arm_gt_recalc timer 0 irqstate 1 next tick 0x200",
        "arm_gt_ctl_write timer 0 value 0x3",  # the guest masks it: the line drops
        "arm_gt_imask_toggle timer 0 IMASK toggle, new irqstate 0",
        "arm_gt_ctl_write timer 1 value 0x0",  # KVM's put
        "arm_gt_ctl_write timer 0 value 0x0",
        "arm_gt_cntvoff_write value 0x0",
    ]


def test_layer0_ptimer_storm_keeps_exact_counts_and_a_bounded_list(monkeypatch):
    monkeypatch.setattr(qemu_trace, "MAX_CHANGES", 500)
    n = 2000
    host = ["arm_gt_recalc timer 2 irqstate 0 next tick 0x10"]  # the host's tick: VHE
    lines = host + [line for i in range(n) for line in _pcycle(i, 0x5000)]
    (vm,) = qemu_trace.timelines(qemu_trace.parse(lines))
    assert vm.ptimer_why is None and vm.loads == n and vm.pedges() == n and vm.edges() == 0
    assert len(vm.pchanges) == 500 and vm.pdropped == 2 * n - 500
    assert len(vm.parked) <= qemu_trace.MAX_PARKED
    assert [c.level for c in vm.pchanges[:4]] == [1, 0, 1, 0]
    assert vm.pchanges[0].tick == 0x1000 and not vm.pchanges[0].while_out  # at CVAL
    # without a hyp timer (nVHE) timer 0 is the host's: not followed, said why
    (vm,) = qemu_trace.timelines(qemu_trace.parse(lines[1:]))
    assert vm.pedges() is None and "nVHE" in (vm.ptimer_why or "")


def test_layer0_reader_in_pieces_equals_one_pass(tmp_path):
    lines = [line for i in range(300) for line in _cycle(i, 0x7000 + 0x1000 * (i // 100))]
    path = tmp_path / "qemu-trace.log"
    reader = qemu_trace.Reader(path)
    reader.BLOCK = 777  # lines cut across reads
    text = "\n".join(lines) + "\n"
    for k in range(0, len(text), 5000):  # the log grows while it is read
        with open(path, "a") as f:
            f.write(text[k : k + 5000])
        reader.timelines()
    whole = qemu_trace.timelines(qemu_trace.parse(lines))
    got = reader.timelines()
    assert [(v.cntvoff, v.edges(), v.changes) for v in got] == [
        (v.cntvoff, v.edges(), v.changes) for v in whole
    ]
    assert [v.edges() for v in got] == [100, 100, 100]
    assert reader.events == len(lines)


def test_layer0_recorded_run_is_unchanged_by_the_one_pass_builder():
    with open(DATA / "upstream-every-exit.qemu-trace.log") as f:
        events = qemu_trace.parse(f)
    vms = qemu_trace.timelines(events)
    # fed in two halves with the decision points held across the cut
    b = qemu_trace.Builder()
    for e in events:
        b.feed(e)
    assert [v.changes for v in b.finish()] == [v.changes for v in vms]
    assert [v.pchanges for v in b.finish()] == [v.pchanges for v in vms]
    assert [v.edges() for v in vms] == [1, 1, 1, 5, 0, 2]  # the ABI probe's VM first
    assert [v.pedges() for v in vms] == [1, 0, 0, 0, 1, 2]


# -- the storm control, recorded ----------------------------------------------------
@pytest.fixture(scope="module")
def storm() -> records.Parsed:
    with gzip.open(DATA / "upstream-storm.console.log.gz", "rt", errors="replace") as f:
        return records.parse(f.read().splitlines())


def test_storm_fails_progress_first_and_judges_nothing_on_dropped_records(storm):
    spec = guest_spec.load_all()["oneshot_tval"]
    res = evaluate(spec, storm.of("oneshot_tval"), [], Model.of(revision.load("upstream")))
    assert res.status == FAILED
    assert res.reasons[0].startswith("progress: exit storm on vcpu 0")
    props = {p.prop: p for p in res.properties}
    assert props["progress"].status == FAIL and "/s for" in props["progress"].observed
    assert res.dropped["exit"] > 0 and res.dropped["kernel"] > 0
    # what the guest could not do in the storm, and what rests on dropped records, is
    # not judged, never passed
    assert all(p.status in (FAIL, NOT_JUDGED, NA) for p in res.properties), props
    assert props["once"].status == NOT_JUDGED and "exit storm" in props["once"].detail


def test_storm_control_leaves_a_test_without_a_rise_alone(storm):
    spec = guest_spec.load_all()["cval_future"]
    res = evaluate(spec, storm.of("cval_future"), [], Model.of(revision.load("upstream")))
    assert res.status == PASSED and not res.dropped


def test_storm_record_stays_within_the_vmm_bounds(storm):
    recs = storm.of("oneshot_tval")
    exits = [r for r in recs if r.kind == "exit" and r.get("port") is None]
    assert len(exits) == limits.get("VT_EXIT_RECORDS_MAX")
    assert sum(r.kind == "kt" for r in recs) == limits.get("VT_KT_LINES_MAX")
    (storm_rec,) = [r for r in recs if r.kind == "storm"]
    assert storm_rec.int("ms") >= limits.get("VT_STORM_MS")


# -- nothing vanishes ----------------------------------------------------------------
def _record(seq: int, test: str, kind: str, fields: str) -> str:
    body = f"@VT1 {seq} {test} 1 {kind} {fields}"
    return f"{body} *{zlib.crc32(body.encode()):08x}"


def _ingest(tmp_path: Path, lines: list[str]) -> tuple[int, dict, str, str]:
    log = tmp_path / "console.log"
    log.write_text("\n".join(lines) + "\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "metadata:\n  vtimer.revision: upstream\n  vtimer.tests: mmio_spin,oneshot_wfi,rearm_n\n"
    )
    out = lava_ingest.ingest(log, tmp_path / "results", job=job, say=lambda _: None)
    data = json.loads((out.run_dir / "results.json").read_text())
    return (
        out.exit_code,
        {t["name"]: t for t in data["tests"]},
        (out.run_dir / "junit.xml").read_text(),
        (out.run_dir / "ktap.txt").read_text(),
    )


def test_a_lost_end_record_is_an_error_in_every_output(tmp_path):
    lines = [ln for ln in console("upstream-every-exit.console.log") if " oneshot_wfi " not in ln
             or " end " not in ln]  # fmt: skip
    code, tests, junit, ktap = _ingest(tmp_path, lines)
    assert code == 1 and tests["oneshot_wfi"]["status"] == ERROR
    assert any("no end record" in r for r in tests["oneshot_wfi"]["reasons"])
    assert 'name="oneshot_wfi"' in junit and re.search(r"not ok \d+ oneshot_wfi # ERROR", ktap)
    assert tests["mmio_spin"]["status"] == tests["rearm_n"]["status"] == PASSED


def test_a_test_that_never_ran_is_a_miss_naming_inits_error(tmp_path):
    lines = [ln for ln in console("upstream-every-exit.console.log") if " rearm_n " not in ln]
    done = next(i for i, ln in enumerate(lines) if " done " in ln)
    # /init's suite-level error, as it reports a manifest line it rejects
    lines.insert(done, _record(493, "-", "error", 'line=5 msg="bad manifest line: x=1"'))
    code, tests, junit, ktap = _ingest(tmp_path, lines)
    assert code == 1 and tests["rearm_n"]["status"] == MISSED
    assert "bad manifest line: x=1" in tests["rearm_n"]["reasons"][0]
    assert 'name="rearm_n"' in junit and re.search(r"not ok \d+ rearm_n # MISS", ktap)


def test_garbled_console_problems_are_bounded_and_counted():
    good = console("upstream-every-exit.console.log")
    at = next(i for i, ln in enumerate(good) if " rearm_n " in ln and " begin " in ln)
    junk = ["@VT1 garbled line"] * 5000
    parsed = records.parse(good[: at + 1] + junk + good[at + 1 :])
    probs = parsed.problems_for("rearm_n")
    assert len(probs) == records.MAX_PROBLEMS + 1
    assert probs[-1].what.startswith(f"{5000 - records.MAX_PROBLEMS} more")


def test_a_long_gap_in_seq_is_one_problem():
    lines = console("upstream-every-exit.console.log")
    at = next(i for i, ln in enumerate(lines) if " done " in ln)
    seq = records.parse_line(lines[at], 0).seq
    lines[at] = _record(10**9, "-", "done", "tests=3")
    parsed = records.parse(lines)
    (p,) = parsed.problems
    assert p.what == f"records seq {seq}..{10**9 - 1} lost or damaged ({10**9 - seq} records)"


# -- one source of truth for /init's limits --------------------------------------------
def test_limits_come_from_the_vmm_header_and_init_uses_them():
    assert limits.get("VT_TIMEOUT_MS_MAX") == 3_600_000
    assert limits.get("VT_NAME_MAX") == 63 and limits.get("VT_MAX_VCPUS") == 4
    init = (repo.ROOT / "vmm" / "init.c").read_text()
    for name in ("VT_TIMEOUT_MS_MAX", "VT_NAME_MAX", "VT_LINE_MAX", "VT_ALARM_US_MAX"):
        assert name in init, name
    assert not re.search(r"parse_uint\(val, \d\d", init)  # no number of its own


@pytest.mark.parametrize(
    ("line", "value", "msg"),
    [
        ("timeout_s: 20", "timeout_s: 4000", "timeout_s' must be in 0.001..3600"),
        ("timeout_s: 20", "timeout_s: 0", "timeout_s' must be in"),
        ("name: oneshot_wfi", "name: " + "x" * 64, "must match the file name"),
    ],
)
def test_spec_loader_rejects_what_init_rejects(tmp_path, line, value, msg):
    src = repo.GUEST_TESTS / "oneshot_wfi.yaml"
    text = src.read_text()
    if line not in text:
        text += f"{line}\n"
    bad = tmp_path / "oneshot_wfi.yaml"
    bad.write_text(text.replace(line, value))
    (tmp_path / "oneshot_wfi.c").write_text("")
    with pytest.raises(InputError) as e:
        guest_spec.load(bad)
    assert msg in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)


def test_a_name_too_long_for_init_is_rejected_with_its_line(tmp_path):
    name = "t" * 64
    text = (repo.GUEST_TESTS / "oneshot_wfi.yaml").read_text()
    bad = tmp_path / f"{name}.yaml"
    bad.write_text(text.replace("name: oneshot_wfi", f"name: {name}"))
    (tmp_path / "oneshot_wfi.c").write_text("")
    with pytest.raises(InputError, match=r"1\.\.63 characters") as e:
        guest_spec.load(bad)
    assert f"{bad}:1:" in str(e.value)
