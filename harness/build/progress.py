"""A kernel build's progress, read from its log while make runs: the make
command first (as kunit.py prints it), then every few seconds the objects built,
of those the last build of the same source and machine made, and the time."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from harness.core import resultsfile

INTERVAL_S = 5.0  # nothing stays silent longer
# Kbuild's quiet lines for an object made: "  CC      kernel/fork.o", "  AS ..."
_OBJECT = re.compile(rb"^\s+(?:CC|AS)\s+\S+\.o$", re.MULTILINE)


class BuildProgress:
    def __init__(self, log: Path, say: Callable[[str], None], counts: Path, key: str) -> None:
        self.log, self.say, self.counts, self.key = log, say, counts, key
        self.offset = log.stat().st_size if log.exists() else 0
        self.built = 0
        self.started = self.last = time.monotonic()
        self.expected = _load(counts).get(key)
        self._tail = b""

    def command(self, cmd: list[str]) -> None:
        self.say("kernel: $ " + " ".join(cmd))

    def poll(self) -> None:
        """Count what the log gained; say where the build is, every INTERVAL_S."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        text = self._tail + data
        cut = text.rfind(b"\n") + 1  # a line split across reads waits for its end
        self.built += len(_OBJECT.findall(text[:cut]))
        self._tail = text[cut:]
        now = time.monotonic()
        if now - self.last >= INTERVAL_S:
            self.last = now
            self.say(f"kernel: {self.line(now)}")

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        of = f" of ~{self.expected}" if self.expected else ""
        return f"{self.built}{of} objects built, {elapsed:.0f} s"

    def finished(self) -> None:
        """The build succeeded: the most it ever built is the next build's expectation
        (an incremental rebuild makes a few objects, a cold one all of them)."""
        self.poll()
        counts = _load(self.counts)
        if self.built > counts.get(self.key, 0):
            counts[self.key] = self.built
            resultsfile.write_json(self.counts, counts)


def _load(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
        return {str(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError):
        return {}
