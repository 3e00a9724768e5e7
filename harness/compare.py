"""Judge one run's traces by several revisions' models: a property x model table."""

from __future__ import annotations

from harness.guest_spec import PROPERTIES
from harness.model import FAIL, PASS
from harness.verdict import TestResult


def cell(results: list[TestResult], prop: str) -> str:
    """'pass', 'FAIL n/m' or '-' (no test exercised the property)."""
    seen = [p for r in results for p in r.properties if p.prop == prop]
    judged = [p for p in seen if p.status in (PASS, FAIL)]
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
        differ = len({c for c in cells if c != "-"}) > 1
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
