"""Which cell a matrix run boots next: the longest expected first.

Longest processing time first: the boot threads take the pending cell (whose
kernel is prepared) that is expected to take longest, so that no long cell
starts last and keeps one slot busy while the others idle. The kernel thread
prepares kernels in the same order, so the long cells' kernels are ready first.

The expectation is a cell's wall_s in earlier runs of the same matrix under the
results base, <base>/<time>-matrix-<name>-<id>/matrix.json:

- the HISTORY_RUNS newest of them (their names start with the time), newest first;
  an unreadable one, or one of another matrix, is passed over;
- a cell's expectation is its wall_s in the newest of them that ran it to an end
  (pass, fail or error: not pending, running or interrupted), cells matched by
  name with a repeat's '#k' suffix stripped on both sides (a repeated run's
  longest round counts);
- cells with an expectation go longest first (ties in file order); cells with
  none go before them, in file order: a cell never timed may be a long one, and a
  long cell started last is what this order avoids, while a short one started
  early costs nothing. With no history at all the order is the file's;
- a repeated matrix (--repeat) keeps its rounds: round k's cells before round
  k+1's, longest first within a round, so a cell's runs still have different
  neighbours.

Bounded: one listing of the base and at most HISTORY_RUNS files read; the order
is computed once, and each pick walks it once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.status import Outcome

if TYPE_CHECKING:
    from harness.runs.matrix.spec import Cell

HISTORY_RUNS = 5  # earlier matrix.json files read, newest first
_ENDED = (Outcome.PASS, Outcome.FAIL, Outcome.ERROR)


def base_name(cell: str) -> str:
    """A cell's name without a repeat's '#k' (a cell name has no '#' of its own)."""
    return cell.rsplit("#", 1)[0]


def _round(cell: str) -> int:
    """A repeated cell's round k (<cell>#<k>), 0 for a cell not repeated."""
    _, hash_, k = cell.rpartition("#")
    return int(k) if hash_ and k.isdigit() else 0


def earlier_runs(base: Path, name: str) -> list[Path]:
    """The HISTORY_RUNS newest run directories of matrix name under base."""
    pattern = re.compile(rf"\d{{8}}-\d{{6}}-matrix-{re.escape(name)}-[0-9a-f]{{4}}")
    try:
        runs = [p for p in base.iterdir() if pattern.fullmatch(p.name)]
    except OSError:  # no results base yet
        return []
    return sorted(runs, key=lambda p: p.name, reverse=True)[:HISTORY_RUNS]


def _walls(path: Path, name: str) -> dict[str, float]:
    """Each cell's wall_s in one matrix.json (a cell's longest round), or none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("name") != name:
        return {}
    walls: dict[str, float] = {}
    for c in data.get("cells") or ():
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            continue
        wall = c.get("wall_s")
        if c.get("outcome") not in _ENDED or isinstance(wall, bool):
            continue
        if isinstance(wall, (int, float)) and wall >= 0:
            cell = base_name(c["name"])
            walls[cell] = max(walls.get(cell, 0.0), float(wall))
    return walls


def expected_walls(base: Path, name: str) -> dict[str, float]:
    """Cell name (no '#k') -> its wall_s in the newest earlier run that ran it to an end."""
    walls: dict[str, float] = {}
    for run in earlier_runs(base, name):
        for cell, wall in _walls(run / "matrix.json", name).items():
            walls.setdefault(cell, wall)
    return walls


def order(cells: Sequence[Cell], walls: dict[str, float]) -> list[int]:
    """The cells' indices in the order they are taken (the module's rule)."""

    def key(i: int) -> tuple[int, bool, float, int]:
        name = cells[i].name
        wall = walls.get(base_name(name))
        return (_round(name), wall is not None, -(wall or 0.0), i)

    return sorted(range(len(cells)), key=key)
