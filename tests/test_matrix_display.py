"""The matrix's live block on a terminal, and plain lines in a log."""

from __future__ import annotations

import io
import time

from harness.core.status import Outcome
from harness.runs.matrix import display
from harness.runs.matrix.outcome import CellResult
from harness.runs.matrix.spec import Cell


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _results(n: int) -> list[CellResult]:
    return [
        CellResult(Cell(f"cell{i}", "upstream", "linux-source-6.1", "virt-gicv3", "every-exit"))
        for i in range(n)
    ]


def test_a_terminal_gets_a_live_block_under_the_scrolling_lines():
    tty, results = _Tty(), _results(3)
    d = display.Display(tty, results, lambda i: f"[{i + 1}/3]")
    assert d.live
    results[0].outcome = Outcome.RUNNING
    d.started(0)
    d.line("[1/3] start cell0")
    out = tty.getvalue()
    assert out.startswith("[1/3] start cell0\n")
    assert "[1/3] cell0: running 0 s" in out and "0/3 done, 1 running, 2 pending" in out
    d.line("next")  # the block is erased (cursor up, clear) and drawn again below
    assert "\x1b[2A\x1b[J" in tty.getvalue()
    d.stop()
    assert tty.getvalue().endswith("\x1b[2A\x1b[J")
    d.line("# matrix: all cells as expected")  # after the run: plain lines, no block
    assert tty.getvalue().endswith("\x1b[J# matrix: all cells as expected\n")


def test_a_log_gets_plain_lines_and_the_running_cells_now_and_then(monkeypatch):
    lines: list[str] = []
    results = _results(2)
    d = display.Display(io.StringIO(), results, lambda i: f"[{i + 1}/2]", out=lines.append)
    assert not d.live
    monkeypatch.setattr(display, "REDRAW_S", 0.01)
    monkeypatch.setattr(display, "PLAIN_S", 0.02)
    results[1].outcome = Outcome.RUNNING
    d.started(1)
    d.start()
    time.sleep(0.2)
    d.stop()
    d.line("end")
    assert lines[-1] == "end" and "\x1b" not in "".join(lines)
    assert any(s.startswith("# running: [2/2] cell1: running") for s in lines), lines
