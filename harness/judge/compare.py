"""Judge one run's traces by several revisions' models: a property x model table."""

from __future__ import annotations

from harness.inputs.guest_spec import PROPERTIES
from harness.judge.model import FAIL, NA, PASS
from harness.judge.verdict import TestResult

# what an n/a cell counts: the behaviour the model does not promise, as measured
_MEASURED = {"coalesce": "rode", "eintr-suffices": "missed"}


def cell(results: list[TestResult], prop: str) -> str:
    """'pass', 'FAIL n/m' (tests), 'n/a k/n rode' (a property the model does not
    promise: what the kernel did, over all changes) or '-' (no test exercised it)."""
    seen = [p for r in results for p in r.properties if p.prop == prop]
    judged = [p for p in seen if p.status in (PASS, FAIL)]
    measured = [p.observed for p in seen if p.status == NA and p.observed and "/" in p.observed]
    if not judged and measured:
        k = sum(int(m.split("/")[0]) for m in measured)
        n = sum(int(m.split("/")[1]) for m in measured)
        return f"n/a {k}/{n} {_MEASURED.get(prop, 'seen')}"
    if not judged:
        return "-"
    failed = [p for p in judged if p.status == FAIL]
    return "pass" if not failed else f"FAIL {len(failed)}/{len(judged)}"


def rows(by_model: dict[str, list[TestResult]]) -> list[tuple[str, ...]]:
    """Header, then one row per property: its cell under each model, '*' if they differ."""
    models = list(by_model)
    out: list[tuple[str, ...]] = [("property", *models, "")]
    for prop in PROPERTIES:
        cells = [cell(by_model[m], prop) for m in models]
        if all(c == "-" for c in cells):
            continue
        differ = _disagree(cells)
        out.append((prop, *cells, "*" if differ else ""))
    return out


def table(by_model: dict[str, list[TestResult]]) -> list[str]:
    """rows() as aligned text."""
    rs = rows(by_model)
    widths = [max(len(r[i]) for r in rs) for i in range(len(rs[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rs]


def first_failures(by_model: dict[str, list[TestResult]]) -> list[str]:
    """For each model, its failing properties with the test and first record."""
    out = []
    for model, results in by_model.items():
        for r in results:
            for p in r.properties:
                if p.status == FAIL:
                    out.append(f"{model}: {r.name}: {p.line()}")
    return out


def _disagree(cells: list[str]) -> bool:
    """Do the models disagree on this kernel: one fails it where another does not
    (passes it, or does not promise it), or they fail it in different tests?"""
    shown = [c for c in cells if c != "-"]
    failed = {c for c in shown if c.startswith("FAIL")}
    return bool(failed) and (len(failed) > 1 or len(failed) < len(set(shown)))
