"""The matrix's order (longest expected first, by earlier runs' matrix.json) and its
utilisation (token-seconds held, kernel prepare time beside boots); kernels and
boots faked, no QEMU here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_matrix import FakeBoots, fake_kernels, write  # noqa: F401  (fake_kernels: a fixture)

from harness.build import kernel
from harness.runs.matrix import history, scheduler, spec
from harness.runs.matrix.utilisation import Meter

A, B, C, D = (f"{r}-6.1-virt-gicv3-every-exit" for r in ("upstream", "v4", "v5", "v6"))


def _earlier(base: Path, when: str, cells: list[dict], name: str = "fake") -> Path:
    """An earlier run's matrix.json: cells are (name, wall_s[, outcome])."""
    run = base / f"{when}-matrix-{name}-0a0a"
    run.mkdir(parents=True)
    (run / "matrix.json").write_text(json.dumps({"name": name, "cells": cells}))
    return run


def _cell(name: str, wall: float | None, outcome: str = "pass") -> dict:
    return {"name": name, "wall_s": wall, "outcome": outcome}


# -- history -----------------------------------------------------------------------


def test_expected_walls_come_from_the_newest_earlier_run_that_ended_the_cell(tmp_path):
    _earlier(tmp_path, "20260101-000000", [_cell(A, 10.0), _cell(B, 3.0), _cell(C, 7.0)])
    # newer: a run of two cells only; C interrupted, D never started
    _earlier(
        tmp_path,
        "20260102-000000",
        [_cell(A, 2.0), _cell(C, 0.5, "interrupted"), _cell(D, None, "pending")],
    )
    # newest: a repeated run (its longest round counts), then one unreadable file
    _earlier(tmp_path, "20260103-000000", [_cell(f"{B}#1", 4.0), _cell(f"{B}#2", 6.0)])
    (_earlier(tmp_path, "20260104-000000", []) / "matrix.json").write_text("{not json")
    # another matrix whose name starts with ours, and ours under another name
    _earlier(tmp_path, "20260105-000000", [_cell(A, 99.0)], name="fake-extra")
    bad = _earlier(tmp_path, "20260106-000000", [_cell(A, 98.0)])
    (bad / "matrix.json").write_text(json.dumps({"name": "other", "cells": [_cell(A, 97.0)]}))
    assert history.expected_walls(tmp_path, "fake") == {A: 2.0, B: 6.0, C: 7.0}
    assert history.expected_walls(tmp_path / "nowhere", "fake") == {}


def test_only_the_newest_history_runs_are_read(tmp_path):
    _earlier(tmp_path, "20260101-000000", [_cell(D, 5.0)])  # the oldest: not read
    for day in range(2, 2 + history.HISTORY_RUNS):
        _earlier(tmp_path, f"202601{day:02}-000000", [_cell(A, float(day))])
    assert history.expected_walls(tmp_path, "fake") == {A: 1.0 + history.HISTORY_RUNS}


def _cells(*names: str) -> list[spec.Cell]:
    return [spec.Cell(n, "upstream", "linux-source-6.1", "virt-gicv3", "every-exit") for n in names]


def test_order_is_longest_first_untimed_cells_before_timed_ones_rounds_kept():
    cells = _cells("a", "b", "c", "d", "e")
    walls = {"a": 1.0, "b": 9.0, "d": 9.0, "e": 4.0}  # c never timed
    assert history.order(cells, walls) == [2, 1, 3, 4, 0]
    assert history.order(cells, {}) == [0, 1, 2, 3, 4]  # no history: the file's order
    rounds = _cells("a#1", "b#1", "a#2", "b#2")
    assert history.order(rounds, {"a": 1.0, "b": 2.0}) == [1, 0, 3, 2]


# -- the runner ----------------------------------------------------------------------


def _runner_with_history(tmp_path: Path, out=lambda line: None) -> scheduler.Runner:
    p = write(
        tmp_path,
        "name: fake\ncells:\n"
        "  - revision: [upstream, v4, v6]\n"
        "  - {revision: v6, machine: virt-gicv2}\n",  # shares v6's kernel
    )
    walls = [_cell(A, 1.0), _cell(B, 7.0), _cell(D, 9.0), _cell(V6_GICV2, 2.0)]
    _earlier(tmp_path / "res", "20260101-000000", walls)
    return scheduler.Runner(spec.load(p), tmp_path / "res", slots=1, out=out)


V6_GICV2 = "v6-6.1-virt-gicv2-every-exit"


def test_the_boots_take_the_longest_cell_whose_kernel_is_ready(tmp_path):
    runner = _runner_with_history(tmp_path)
    names = [c.name for c in runner.matrix.cells]
    assert [names[i] for i in runner.order] == [D, B, V6_GICV2, A]
    boots = scheduler._Boots(runner)

    def ready(cell: str) -> None:
        runner.prepared[runner.keys[names.index(cell)]] = scheduler._Prepared()

    ready(A)
    ready(D)  # v6's kernel: both v6 cells
    assert names[boots.next()] == D  # not A, the file's first
    assert names[boots.next()] == V6_GICV2  # v4 (7 s) is passed over: no kernel yet
    assert names[boots.next()] == A
    ready(B)
    assert names[boots.next()] == B
    assert boots.next() is None  # none pending


def test_the_kernels_are_prepared_in_the_same_order(tmp_path, fake_kernels):  # noqa: F811
    lines: list[str] = []
    runner = _runner_with_history(tmp_path, lines.append)
    runs: list[str] = []
    boots = FakeBoots({})

    def boot(opts, say):
        runs.append(f"{opts.revision}-6.1-{opts.machine}-every-exit")
        return boots(opts, say)

    runner._boot = boot
    assert runner.run() == 0
    assert [rev for rev, _ in fake_kernels] == ["v6", "v4", "upstream"]
    assert runs[0] == D and sorted(runs) == sorted([A, B, D, V6_GICV2])
    assert "longest first, 4 of 4 cells timed by earlier runs" in lines[0]


def test_the_next_run_is_ordered_by_this_one(tmp_path, fake_kernels):  # noqa: F811
    p = write(tmp_path, "name: fake\ncells:\n  - revision: [upstream, v4]\n")
    runs: list[str] = []
    boots = FakeBoots({})

    def boot(opts, say):
        runs.append(opts.revision)
        if opts.revision == "v4":
            time.sleep(0.2)  # the long one
        return boots(opts, say)

    for _ in range(2):
        runner = scheduler.Runner(
            spec.load(p), tmp_path / "res", slots=1, out=lambda s: None, boot=boot
        )
        assert runner.run() == 0
    assert runs == ["upstream", "v4", "v4", "upstream"]


# -- utilisation ----------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_meter_integrates_tokens_boots_and_prepares():
    clock = _Clock()
    m = Meter(clock.now, clock)
    m.tokens(2)  # t=0: a two-CPU boot
    m.boot(1)
    clock.now += 3
    with m.preparing():  # t=3..7: a kernel prepared, a boot running until t=5
        clock.now += 2
        m.boot(-1)
        m.tokens(-2)
        clock.now += 2
    clock.now += 1  # t=8: idle
    got = m.to_json(slots=2)
    assert got == {
        "slots": 2,
        "busy_s": 10.0,  # 2 tokens x 5 s
        "wall_s": 8.0,
        "ratio": round(10 / 16, 3),
        "prepare_s": 4.0,
        "prepare_during_boots_s": 2.0,
    }
    assert Meter(clock.now, clock).to_json(slots=1)["ratio"] is None  # no time yet


def test_matrix_json_says_how_busy_the_tokens_were(tmp_path, fake_kernels, monkeypatch):  # noqa: F811
    p = write(
        tmp_path,
        "name: fake\ncells:\n"
        "  - {revision: upstream, machine: virt-gicv3-smp2}\n"  # two tokens
        "  - revision: [v4, v5]\n",
    )
    build = kernel.build

    def slow(rev, mach, **kw):  # v4's kernel takes a while, beside upstream's boot
        if rev.name == "v4":
            time.sleep(0.3)
        return build(rev, mach, **kw)

    monkeypatch.setattr(kernel, "build", slow)
    monkeypatch.setattr(kernel, "cached", lambda *a, **k: None)
    boots = FakeBoots({})

    def boot(opts, say):
        time.sleep(0.4)
        return boots(opts, say)

    lines: list[str] = []
    m = spec.load(p)
    runner = scheduler.Runner(m, tmp_path / "res", slots=3, out=lines.append, boot=boot)
    assert runner.run() == 0, "\n".join(lines)
    u = json.loads((runner.dir / "matrix.json").read_text())["utilisation"]
    assert u["slots"] == 3 and u["wall_s"] > 0
    assert u["busy_s"] >= 2 * 0.4 + 0.4 + 0.4 + 0.3  # boots' tokens and v4's build token
    assert u["ratio"] == pytest.approx(u["busy_s"] / (3 * u["wall_s"]), rel=0.15)  # rounded
    assert 0 < u["ratio"] <= 1
    assert u["prepare_s"] >= 0.3 and u["prepare_during_boots_s"] >= 0.2
    assert u["prepare_during_boots_s"] <= u["prepare_s"]
    assert f"utilisation {u['ratio']:.0%}" in lines[-1]


def test_a_cached_kernel_is_taken_without_waiting_for_a_cpu(tmp_path, monkeypatch):
    """A kernel in the cache is ready at once: no token, no build lock, no build."""
    p = write(tmp_path, "name: fake\ncells:\n  - {revision: v4}\n")
    runner = scheduler.Runner(spec.load(p), tmp_path / "res", slots=1, out=lambda _: None)
    ready = object()
    monkeypatch.setattr(kernel, "cached", lambda rev, mach, source: ready)
    monkeypatch.setattr(kernel, "build", lambda *a, **k: pytest.fail("built"))
    monkeypatch.setattr(runner.tokens, "take", lambda n: pytest.fail("waited for a CPU"))
    assert scheduler._Kernels(runner)._build(runner.results[0].cell) is ready
