"""JUnit XML for CI systems."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.judge.verdict import ERROR, FAILED, MISSED, SKIPPED, TestResult


def render(suite_name: str, results: list[TestResult], wall_s: float) -> str:
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(results)),
        failures=str(sum(r.status == FAILED for r in results)),
        errors=str(sum(r.status in (ERROR, MISSED) for r in results)),
        skipped=str(sum(r.status == SKIPPED for r in results)),
        time=f"{wall_s:.3f}",
    )
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=suite_name, name=r.name)
        text = "\n".join(r.reasons)
        if r.status == FAILED:
            ET.SubElement(case, "failure", message=r.reasons[0] if r.reasons else "").text = text
        elif r.status in (ERROR, MISSED):
            ET.SubElement(case, "error", message=f"{r.status}: {text}"[:200]).text = text
        elif r.status == SKIPPED:
            ET.SubElement(case, "skipped", message=text)
        props = ET.SubElement(case, "properties")
        for p in r.properties:
            ET.SubElement(props, "property", name=p.prop, value=p.status)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
