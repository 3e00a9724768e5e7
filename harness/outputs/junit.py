"""JUnit XML for CI systems.

A test case per test: `classname` names the cell (revision.machine.policy),
`time` is the test's wall time from its records (its `end` record's `wall_ms`
when it has one, else begin to end on the VMM's clock; a test with no end
record, as far as its records go; none for a test with no records), its
reasons go in `<failure message=...>` (FAIL), `<error>` (ERROR, MISS) or
`<skipped message=...>` (SKIP), and its records in `<system-out>`, the first
SYSTEM_OUT_RECORDS of them and a count of the rest."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from harness.judge.verdict import ERROR, FAILED, MISSED, SKIPPED, TestResult
from harness.traces.records import Record

SYSTEM_OUT_RECORDS = 200  # records of a test in its <system-out>; the rest are counted
MESSAGE_CHARS = 1000  # a message attribute: every reason, "; "-joined, cut here


def classname(identity: Mapping) -> str:
    """The cell a run is: revision.machine.policy."""
    mach = identity.get("machine")
    name = mach.get("name") if isinstance(mach, Mapping) else mach
    parts = (identity.get("revision"), name, identity.get("policy"))
    return ".".join(str(p or "unknown") for p in parts)


def wall_s(records: Sequence[Record]) -> float | None:
    """A test's wall time from its records (see the module doc)."""
    if not records:
        return None
    end = next((r for r in records if r.kind == "end"), None)
    if end is not None and end.get("wall_ms") not in (None, "-"):
        return end.int("wall_ms") / 1e3
    begin = next((r for r in records if r.kind == "begin"), records[0])
    last = end or records[-1]
    return max(0, last.t_ns - begin.t_ns) / 1e9


def _value(v: str) -> str:
    return json.dumps(v) if not v or any(c in v for c in ' "\\=') else v


def record_line(r: Record) -> str:
    """A record as the VMM wrote it, less its checksum."""
    if r.text:
        return r.text
    kv = " ".join(f"{k}={_value(v)}" for k, v in r.fields.items())
    return f"@VT1 {r.seq} {r.test} {r.t_ns} {r.kind}" + (f" {kv}" if kv else "")


def system_out(records: Sequence[Record], limit: int = SYSTEM_OUT_RECORDS) -> str:
    lines = [record_line(r) for r in records[:limit]]
    if len(records) > limit:
        lines.append(f"... {len(records) - limit} more records (of {len(records)}; console.log)")
    return "\n".join(lines)


def render(
    suite_name: str,
    results: list[TestResult],
    wall: float,
    records: Mapping[str, Sequence[Record]] | None = None,
    cell: str | None = None,
) -> str:
    records = records or {}
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(results)),
        failures=str(sum(r.status == FAILED for r in results)),
        errors=str(sum(r.status in (ERROR, MISSED) for r in results)),
        skipped=str(sum(r.status == SKIPPED for r in results)),
        time=f"{wall:.3f}",
    )
    for r in results:
        recs = records.get(r.name, ())
        case = ET.SubElement(suite, "testcase", classname=cell or suite_name, name=r.name)
        if (t := wall_s(recs)) is not None:
            case.set("time", f"{t:.3f}")
        _outcome(case, r)
        props = ET.SubElement(case, "properties")
        for p in r.properties:
            ET.SubElement(props, "property", name=p.prop, value=p.status)
        if recs:
            ET.SubElement(case, "system-out").text = system_out(recs)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _message(text: str, limit: int = MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _outcome(case: ET.Element, r: TestResult) -> None:
    text = "\n".join(r.reasons)
    every = _message("; ".join(r.reasons))
    if r.status == FAILED:
        ET.SubElement(case, "failure", message=every, type="FAIL").text = text
    elif r.status in (ERROR, MISSED):
        ET.SubElement(
            case, "error", message=_message(f"{r.status}: {every}"), type=r.status
        ).text = text
    elif r.status == SKIPPED:
        ET.SubElement(case, "skipped", message=every)
