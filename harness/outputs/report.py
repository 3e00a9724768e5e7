"""report.html: one page per run, a timeline picture (inline SVG) per test."""

from __future__ import annotations

import json
import math
from pathlib import Path

from markupsafe import Markup

from harness.core import resultsfile
from harness.inputs.guest_spec import PROPERTIES
from harness.judge import compare
from harness.judge.verdict import TestResult
from harness.outputs import templating, timeline
from harness.traces import records
from harness.traces.test_trace import TestTrace

WIDTH, LEFT, ROW = 960, 235, 34
COLORS = {
    "notice": "#d93025",
    "mmio": "#9aa0a6",
    "other": "#f29900",
    "irq": "#1a73e8",
    "hw": "#188038",
    "fail": "#a50e0e",
}


def _marks(ticks: list[timeline.Tick], x) -> list[dict]:
    return [
        {"x": x(k.t), "t": k.t, "label": k.label, "color": COLORS.get(k.kind, "#000"),
         "tall": k.kind in ("notice", "irq", "hw", "fail"), "kind": k.kind}
        for k in ticks
    ]  # fmt: skip


def _axis_ticks(span_ms: float) -> list[float]:
    """Round times in ms for the axis: 1, 2 or 5 times a power of ten, 4-10 of them."""
    step = 10 ** math.floor(math.log10(max(span_ms, 0.001) / 10))
    for k in (1, 2, 5, 10):
        if span_ms / (step * k) <= 10:
            step *= k
            break
    n = int(span_ms // step)
    return [round(i * step, 6) for i in range(n + 1)]


def svg(tl: timeline.Timeline) -> Markup:
    scale = (WIDTH - LEFT - 10) / tl.span_ms

    def x(t: float) -> float:
        return round(LEFT + min(max(t, 0.0), tl.span_ms) * scale, 1)

    rows = []
    y = 4
    first = {k: v for k, v in tl.ticks.items() if k.startswith("hardware")}
    rest = {k: v for k, v in tl.ticks.items() if k not in first}
    for name, ticks in first.items():
        rows.append({"name": name, "y": y, "path": "", "ticks": _marks(ticks, x)})
        y += ROW
    for name, steps in tl.tracks.items():
        pts = []
        for i, s in enumerate(steps):
            level_y = y + (6 if s.level else 24)
            if i:
                pts.append(f"{x(s.t)},{y + (24 if steps[i - 1].level == 0 else 6)}")
            pts.append(f"{x(s.t)},{level_y}")
        pts.append(f"{x(tl.span_ms)},{y + (6 if steps[-1].level else 24)}")
        rows.append({"name": name, "y": y, "path": " ".join(pts), "ticks": []})
        y += ROW
    for name, ticks in rest.items():
        rows.append({"name": name, "y": y, "path": "", "ticks": _marks(ticks, x)})
        y += ROW
    axis = [{"x": x(t), "t": t} for t in _axis_ticks(tl.span_ms)]
    # autoescaped (the one environment escapes .svg.j2), so safe to embed
    html = (
        templating.env()
        .get_template("timeline.svg.j2")
        .render(tl=tl, rows=rows, width=WIDTH, height=y + 14, left=LEFT, axis=axis, top=4, bottom=y)
    )
    return Markup(html)


def warm() -> None:
    """Compile the report's templates ahead (a run does it while its boot goes on),
    so that the report at the run's end is only rendered."""
    for name in ("report.html.j2", "timeline.svg.j2"):
        templating.env().get_template(name)


def test_entry(r: TestResult, tr: TestTrace | None) -> dict:
    """The report's part of one test: its verdict, and its timeline drawn from tr."""
    failed = [p for p in r.properties if p.status == "fail"]
    tl = timeline.build(tr, failed) if tr is not None and tr.exits else None
    return {
        "name": r.name,
        "status": r.status,
        "reasons": r.reasons,
        "props": {p.prop: p.status for p in r.properties},
        "metrics": r.metrics,
        "svg": svg(tl) if tl else None,
        "notes": tl.notes if tl else [],
    }


class Entries:
    """Each test's entry drawn once its verdict is made (a live run: while the next
    test runs), and drawn again only if its verdict or trace changed since."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[TestResult, TestTrace | None, object, dict]] = {}

    def draw(self, r: TestResult, tr: TestTrace | None) -> dict:
        hw = tr.hw if tr is not None else None
        kept = self._kept.get(r.name)
        if kept is not None and kept[0] is r and kept[1] is tr and kept[2] is hw:
            return kept[3]
        entry = test_entry(r, tr)
        self._kept[r.name] = (r, tr, hw, entry)
        return entry


def render(
    run_dir: Path,
    results: list[TestResult],
    traces: dict[str, TestTrace],
    by_model: dict[str, list[TestResult]] | None = None,
    entries: Entries | None = None,
    data: dict | None = None,  # results.json's (default: read from run_dir)
) -> Path:
    if data is None:
        data = json.loads((run_dir / "results.json").read_text())
    entries = entries or Entries()
    tests = [entries.draw(r, traces.get(r.name)) for r in results]
    props = [p for p in PROPERTIES if any(p in t["props"] for t in tests)]
    cmp_rows = None
    if by_model and len(by_model) > 1:
        cmp_rows = compare.rows(by_model)
    page = (
        templating.env()
        .get_template("report.html.j2")
        .render(
            run_id=data["run_id"],
            identity=data["identity"],
            boot=data["boot"],
            complete=data["complete"],
            logs=[n for n in data["logs"] if n != "report.html"],
            tests=tests,
            props=props,
            compare=cmp_rows,
        )
    )
    out = run_dir / "report.html"
    resultsfile.write_atomic(out, page)
    return out


def traces_from_console(console_log: Path) -> dict[str, TestTrace]:
    with open(console_log, errors="replace") as f:
        parsed = records.parse(f)
    return {t: TestTrace.from_records(t, recs) for t, recs in parsed.by_test().items()}
