"""The @VT1 record parser on recorded real console logs."""

from __future__ import annotations

import zlib

from conftest import console

from harness.traces import records


def test_real_log_parses_without_problems():
    parsed = records.parse(console("upstream-every-exit.console.log"))
    assert parsed.problems == []
    by_test = parsed.by_test()
    assert set(by_test) == {
        "-", "mmio_spin", "oneshot_wfi", "rearm_n", "ptimer_oneshot", "both_timers",
    }  # fmt: skip
    assert [r.seq for r in parsed.records] == list(range(len(parsed.records)))
    kinds = [r.kind for r in by_test["oneshot_wfi"]]
    assert kinds[0] == "begin" and kinds[-1] == "end"


def _tamper(lines: list[str], seq: int, old: str, new: str) -> list[str]:
    out = list(lines)
    i = next(i for i, line in enumerate(out) if line.startswith(f"@VT1 {seq} "))
    assert old in out[i]
    out[i] = out[i].replace(old, new)
    return out


def test_mangled_record_is_a_problem_of_its_test():
    lines = console("upstream-every-exit.console.log")
    rec = next(r for r in records.parse(lines).records if r.test == "rearm_n" and r.kind == "exit")
    bad = _tamper(lines, rec.seq, "r=MMIO", "r=MMJO")
    parsed = records.parse(bad)
    assert [(p.seq, p.test) for p in parsed.problems] == [(rec.seq, "rearm_n")]
    assert "checksum" in parsed.problems[0].what


def test_lost_record_is_detected_by_sequence():
    lines = console("upstream-every-exit.console.log")
    idx = next(i for i, line in enumerate(lines) if " oneshot_wfi " in line and " inject " in line)
    seq = int(lines[idx].split()[1])
    parsed = records.parse(lines[:idx] + lines[idx + 1 :])
    assert [(p.seq, p.test) for p in parsed.problems] == [(seq, "oneshot_wfi")]
    assert "lost" in parsed.problems[0].what


def test_lost_end_record_belongs_to_the_unfinished_test():
    lines = console("upstream-every-exit.console.log")
    idx = next(i for i, line in enumerate(lines) if " mmio_spin " in line and " end " in line)
    parsed = records.parse(lines[:idx] + lines[idx + 1 :])
    assert [p.test for p in parsed.problems] == ["mmio_spin"]


def _record(seq: int, body: str) -> str:
    text = f"@VT1 {seq} t 1000 {body}"
    return f"{text} *{zlib.crc32(text.encode()):08x}"


def test_two_records_glued_on_one_line_are_split():
    line = _record(0, "begin vcpus=1")[:-12] + _record(1, "end status=ok")
    parsed = records.parse([line])
    assert [r.seq for r in parsed.records] == [1]
    assert len(parsed.problems) == 2  # the cut record, and seq 0 counted once
    assert {p.seq for p in parsed.problems} == {None, 0}


def test_quoted_values_and_kernel_noise():
    lines = [
        "[    1.0] some kernel message",
        "noise before " + _record(0, 'error msg="VM setup: No such device"'),
    ]
    parsed = records.parse(lines)
    assert parsed.problems == []
    assert parsed.records[0].get("msg") == "VM setup: No such device"
