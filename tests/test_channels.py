"""The files QEMU writes beside the console (boot/channels.py): the records port's,
followed with the console (boot/console.py), a run directory's records.log parsed
offline as the live run judged it, and QEMU's trace log watched by a thread, bounded."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pexpect
import pytest
from conftest import DATA

from harness import cli
from harness.boot.channels import RecordsFile, TraceFile
from harness.boot.console import ConsoleFollower
from harness.core.status import BootStatus
from harness.inputs.options import Timeouts
from harness.traces import records

PORT_RUN = DATA / "port-run"


def _records(tmp_path) -> tuple[RecordsFile, int]:
    recs = RecordsFile(tmp_path / "records.log")
    recs.open()
    # QEMU's file chardev: O_WRONLY | O_CREAT | O_TRUNC
    return recs, os.open(recs.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)


def test_the_records_file_gives_whole_lines_as_they_are_written(tmp_path):
    recs, w = _records(tmp_path)
    assert recs.lines() == []  # nothing written: no line
    os.write(w, b"@VT1 0 - 1 boot a=1 *0\n@VT1 1 - 2 ab")
    assert recs.lines() == ["@VT1 0 - 1 boot a=1 *0"]
    os.write(w, "c \xe9\n\xff".encode("latin-1"))  # not UTF-8: replaced, not lost
    assert recs.lines() == ["@VT1 1 - 2 abc \ufffd"]
    os.close(w)
    assert recs.lines() == [] and recs.rest() == "\ufffd"
    recs.close()
    text = (tmp_path / "records.log").read_bytes()
    assert text.startswith(b"@VT1 0 - 1 boot a=1 *0\n@VT1 1 - 2 abc") and len(text) == 41


def test_a_records_file_written_faster_than_it_is_read_loses_nothing(tmp_path):
    """A harness busy judging a test holds no one up: QEMU writes on, the next look
    reads it all (in bounded calls)."""
    recs, w = _records(tmp_path)
    line = b"x" * 99 + b"\n"
    for _ in range(9000):  # 900 KB, unread
        os.write(w, line)
    assert len(recs.lines()) == 9000
    recs.close()
    os.close(w)


def _follow(tmp_path, script: str, done_word: str = "DONE"):
    """A stand-in for QEMU (sh) that writes console lines and port records, then ends."""
    recs, w = _records(tmp_path)
    os.close(w)
    child = pexpect.spawn(
        "/bin/sh", ["-c", script.replace("PORT", str(recs.path))], encoding="utf-8", echo=False
    )
    console, port = [], []
    follower = ConsoleFollower(child, Timeouts(boot_s=20, silence_s=20), recs)
    status, reason = follower.follow(
        console.append, lambda: any(done_word in r for r in port), on_record=port.append
    )
    child.close()
    recs.close()
    return status, reason, console, port


def test_records_go_to_on_record_and_the_console_to_on_line(tmp_path):
    script = "echo boot; printf 'rec 1\\nrec 2\\n' >>PORT; echo more; printf 'DONE\\n' >>PORT"
    status, reason, console, port = _follow(tmp_path, script)
    assert status == BootStatus.COMPLETED, reason
    assert console[:2] == ["boot", "more"] and port == ["rec 1", "rec 2", "DONE"]


def test_records_written_just_before_qemu_ends_are_not_lost(tmp_path):
    """The console's EOF may come before the file's last records are read."""
    script = "echo boot; printf 'rec 1\\nrec 2\\nno newline' >>PORT; exit 0"
    status, _, _, port = _follow(tmp_path, script)
    assert status == BootStatus.QEMU_DIED and port == ["rec 1", "rec 2", "no newline"]


def test_a_done_record_that_comes_with_qemus_end_completes_the_suite(tmp_path):
    status, _, _, port = _follow(tmp_path, "printf 'rec\\nDONE\\n' >>PORT; exit 0")
    assert status == BootStatus.COMPLETED and port[-1] == "DONE"


def test_a_problem_names_the_port_and_its_own_line():
    """Line numbers count per source: a damaged record's line is records.log's."""
    good = records.parse((PORT_RUN / "records.log").read_text().splitlines()).records
    stream = records.Stream()
    for line in ["Booting Linux", "console 2", "console 3"]:
        stream.feed(line)
    lines = (PORT_RUN / "records.log").read_text().splitlines()
    lines[4] = lines[4].replace("exit", "exiT", 1)  # the checksum no longer holds
    for line in lines:
        stream.feed(line, records.PORT)
    parsed = stream.close()
    (problem,) = parsed.problems
    assert problem.source == records.PORT and problem.line_no == 5
    assert f"record seq {good[4].seq}" in problem.what
    assert len(parsed.records) == len(good) - 1


def test_parse_judges_a_run_directory_with_its_records_log(tmp_path, capsys):
    """A run whose records came on the port: parse reads records.log beside the console
    and gives the live run's verdicts."""
    run = tmp_path / "run"
    shutil.copytree(PORT_RUN, run)
    assert "@VT1" not in (run / "console.log").read_text()  # the records are not there
    code = cli.main(["parse", str(run / "console.log"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    live = json.loads((run / "results.json").read_text())
    parsed = json.loads(next((tmp_path / "out").glob("*/results.json")).read_text())
    assert code == 0, out
    assert [(t["name"], t["status"]) for t in parsed["tests"]] == [
        (t["name"], t["status"]) for t in live["tests"]
    ]
    props = {t["name"]: {p["prop"]: p["status"] for p in t["properties"]} for t in parsed["tests"]}
    assert props == {
        t["name"]: {p["prop"]: p["status"] for p in t["properties"]} for t in live["tests"]
    }
    assert "records.log" in parsed["logs"]


@pytest.mark.parametrize("given", ["dir", "records.log"])
def test_parse_takes_a_run_directory_or_its_records_log(tmp_path, capsys, given):
    """A run's directory is judged by its console.log; its records.log given as the
    log is read once (not again as the port's file beside it)."""
    run = tmp_path / "run"
    shutil.copytree(PORT_RUN, run)
    log = run if given == "dir" else run / "records.log"
    code = cli.main(["parse", str(log), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "out of order" not in out, out
    live = json.loads((run / "results.json").read_text())
    parsed = json.loads(next((tmp_path / "out").glob("*/results.json")).read_text())
    assert [t["status"] for t in parsed["tests"]] == [t["status"] for t in live["tests"]]


def test_parse_names_a_directory_with_no_console(tmp_path, capsys):
    assert cli.main(["parse", str(tmp_path)]) != 0
    err = capsys.readouterr()
    assert f"{tmp_path}: a directory with no console.log" in err.out + err.err


def _tap(tmp_path, max_bytes: int = 1 << 20) -> tuple[TraceFile, int]:
    tap = TraceFile(tmp_path / "qemu-trace.log", max_bytes)
    tap.open()
    return tap, os.open(tap.path, os.O_WRONLY | os.O_TRUNC)  # QEMU's -D: fopen(path, "w")


def test_the_trace_file_wakes_a_waiter_when_lines_come(tmp_path):
    tap, w = _tap(tmp_path)
    assert not tap.wait(0, 0.05)  # nothing yet: the time runs out
    threading.Timer(0.1, os.write, (w, b"arm_gt_recalc gt recalc: timer 1 irqstate 1\n")).start()
    t0 = time.monotonic()
    assert tap.wait(0, 10.0)  # woken when the log grew, not by the time-out
    assert time.monotonic() - t0 < 5.0 and tap.kept == 44
    os.write(w, b"tail without newline")
    os.close(w)
    tap.close()  # QEMU has ended: its last bytes count
    assert tap.kept == 64 and tap.path.read_bytes().endswith(b"tail without newline")
    assert not tap.wait(tap.kept, 0.05)  # closed: no waiting


def test_the_trace_log_is_cut_at_its_bound_and_the_rest_counted(tmp_path):
    """QEMU writes on past the bound at its own offset: each look cuts the log back,
    so the disk holds the bound and a few writes, and the size counts what was lost."""
    tap, w = _tap(tmp_path, max_bytes=4096)
    for _ in range(200):  # 200 KB over some 20 looks
        os.write(w, b"x" * 999 + b"\n")
        time.sleep(0.001)
    assert tap.path.stat().st_blocks * 512 < 64 << 10  # on disk: far less than written
    os.write(w, b"y" * 100)
    os.close(w)
    tap.close()
    assert tap.path.stat().st_size == 4096
    assert tap.kept == 4096 and tap.dropped == 200_100 - 4096


def test_layer0_reads_a_trace_that_is_still_written(tmp_path):
    """Reader.wait_more sleeps until the tap has more: a VM whose lines come after
    the test's records is still found."""
    from harness.judge.layer0 import Hardware

    tap, w = _tap(tmp_path)
    hw = Hardware()
    hw.open(tap.path, {}, 1, tap)
    assert hw.reader.timelines() == [] and not hw.reader.wait_more(0.05)
    lines = (DATA / "upstream-every-exit.qemu-trace.log").read_bytes()
    threading.Timer(0.1, os.write, (w, lines[: 1 << 16])).start()
    assert hw.reader.wait_more(10.0)
    assert hw.reader.lines == 0 and hw.reader.timelines() and hw.reader.lines > 0
    os.close(w)
    tap.close()


def test_layer0_reads_what_qemu_wrote_before_the_record_it_judges(tmp_path):
    """The tap's thread looks every POLL_S, the records are read on their own clock:
    a test's end may be judged between two looks. QEMU wrote that test's trace
    before its record, so the reader looks at the log's size itself and reads it
    all (a CI run judged a test's last exits "not judged" when it did not)."""
    from harness.judge.layer0 import Hardware

    tap = TraceFile(tmp_path / "qemu-trace.log", 1 << 20)
    tap.path.write_bytes(b"")  # open() without its thread: no look of the thread's comes
    hw = Hardware()
    hw.open(tap.path, {}, 1, tap)
    lines = (DATA / "upstream-every-exit.qemu-trace.log").read_bytes()[: 1 << 16]
    tap.path.write_bytes(lines)
    assert tap.kept == 0  # the thread has not looked
    assert hw.reader.timelines() and tap.kept == len(lines)
    assert hw.reader.lines == lines.count(b"\n")
    tap.close()


def test_a_records_path_with_a_comma_reaches_qemus_option_list_escaped():
    """-chardev is a QEMU option list: a ',' in the run directory's path is written ',,'."""
    from pathlib import Path

    from harness.inputs import machine

    argv = machine.load("virt-gicv3").qemu_argv(
        Path("Image"), Path("initrd"), None, records=Path("/tmp/a,b/records.log")
    )
    assert "file,id=vtrec,path=/tmp/a,,b/records.log" in argv
