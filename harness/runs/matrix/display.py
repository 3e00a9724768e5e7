"""What a matrix run shows while it runs.

On a terminal, a live block under the scrolling lines: one line per running cell
(its tag, name and time so far) and a count of the cells done, pending and not
as expected, redrawn every second. Anything else (a pipe, a CI log) gets the
plain lines only, and a line naming the running cells every 30 s, so a log is
never silent for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from harness.core.status import Outcome
from harness.runs.matrix.outcome import CellResult

REDRAW_S = 1.0  # a terminal's live block
PLAIN_S = 30.0  # the running cells, in a log


class Display:
    def __init__(
        self,
        stream: TextIO,
        results: Sequence[CellResult],
        tag: Callable[[int], str],
        out: Callable[[str], None] | None = None,
    ) -> None:
        self.stream, self.results, self.tag = stream, results, tag
        self.live = out is None and stream.isatty()
        self._out = out or (lambda line: print(line, file=stream, flush=True))
        self.lock = threading.Lock()
        self.since: dict[int, float] = {}  # running cell -> its start
        self._drawn = 0  # lines of the live block on screen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self, text: str) -> None:
        """A scrolling line, above the live block."""
        with self.lock:
            self._clear()
            self._out(text)
            self._draw()

    def started(self, i: int) -> None:
        with self.lock:
            self.since[i] = time.monotonic()

    def ended(self, i: int) -> None:
        with self.lock:
            self.since.pop(i, None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._tick, name="display", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        with self.lock:
            self._clear()
            self.live = False  # what follows (the table, the verdict) is plain lines

    def block(self, now: float | None = None) -> list[str]:
        """The live block's lines: the running cells, then the counts."""
        now = now or time.monotonic()
        rows = [
            f"  {self.tag(i)} {self.results[i].cell.name}: running {now - t0:.0f} s"
            for i, t0 in sorted(self.since.items())
        ]
        done = sum(r.finished for r in self.results)
        pending = sum(r.outcome == Outcome.PENDING for r in self.results)
        bad = sum(r.finished and not r.as_expected for r in self.results)
        rows.append(
            f"  {done}/{len(self.results)} done, {len(self.since)} running, {pending} pending"
            + (f", {bad} NOT as expected" if bad else "")
        )
        return rows

    def _tick(self) -> None:
        last_plain = time.monotonic()
        while not self._stop.wait(REDRAW_S):
            with self.lock:
                if self.live:
                    self._clear()
                    self._draw()
                elif time.monotonic() - last_plain >= PLAIN_S and self.since:
                    last_plain = time.monotonic()
                    self._out("# running: " + "; ".join(b.strip() for b in self.block()))

    def _draw(self) -> None:
        if not self.live:
            return
        rows = self.block()
        self.stream.write("".join(f"\x1b[2K{r}\n" for r in rows))
        self.stream.flush()
        self._drawn = len(rows)

    def _clear(self) -> None:
        if self.live and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}A\x1b[J")
            self.stream.flush()
            self._drawn = 0
