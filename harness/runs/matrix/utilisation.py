"""How busy a matrix run kept its CPU tokens, for matrix.json's "utilisation".

Integrals over the run's wall time, kept as the counts change (no sampling):
busy_s, the token-seconds actually held (by boots and kernel builds); the
seconds in which at least one boot ran; and the kernel thread's prepare time
(built, fetched or found cached, waits for a CPU token included) with the part
of it that ran while a boot ran. ratio = busy_s / (slots * wall_s): 1.0 is every
token held all the time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class Meter:
    """The integrals, under one lock; the scheduler reports every change to it."""

    def __init__(self, start: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.start = self._last = start
        self.held = 0  # tokens held now
        self.boots = 0  # boots running now
        self.busy_s = 0.0  # token-seconds held
        self.booting_s = 0.0  # seconds with at least one boot running
        self.prepare_s = 0.0
        self.prepare_during_boots_s = 0.0

    def _advance(self) -> float:
        """The integrals up to now (under self.lock); now."""
        now = self.clock()
        dt = max(0.0, now - self._last)
        self.busy_s += self.held * dt
        if self.boots:
            self.booting_s += dt
        self._last = now
        return now

    def tokens(self, n: int) -> None:
        """n tokens taken (n < 0: given back)."""
        with self.lock:
            self._advance()
            self.held += n

    def boot(self, n: int) -> None:
        """A boot started (1) or ended (-1)."""
        with self.lock:
            self._advance()
            self.boots += n

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """A kernel being prepared: its time, and how much of it a boot ran in."""
        with self.lock:
            start, booting = self._advance(), self.booting_s
        try:
            yield
        finally:
            with self.lock:
                self.prepare_s += self._advance() - start
                self.prepare_during_boots_s += self.booting_s - booting

    def to_json(self, slots: int) -> dict:
        with self.lock:
            wall = self._advance() - self.start
            return {
                "slots": slots,
                "busy_s": round(self.busy_s, 1),
                "wall_s": round(wall, 1),
                "ratio": round(self.busy_s / (slots * wall), 3) if wall > 0 else None,
                "prepare_s": round(self.prepare_s, 1),
                "prepare_during_boots_s": round(self.prepare_during_boots_s, 1),
            }
