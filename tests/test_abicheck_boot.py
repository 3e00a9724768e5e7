"""The ABI self-check for real: every shipped revision's kernel speaks its own
profile's ABI, and a kernel booted under another revision's profile makes every
test ERROR with the ABI reason in results.json, junit.xml and KTAP.

Kernels come from harness.kernel.build (cached under build/kernels/: seconds).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.build import kernel
from harness.inputs import machine
from harness.inputs import revision as revmod
from harness.judge import abicheck
from harness.judge.verdict import ERROR, SKIPPED
from harness.runs.run import RunOptions, boot_test

pytestmark = pytest.mark.boot

MACHINE = "virt-gicv3"


def _image(rev: str) -> Path:
    return kernel.build(revmod.load(rev), machine.load(MACHINE), say=lambda _: None).image


def _run(tmp_path: Path, **kw) -> tuple[dict, Path, list[str]]:
    lines: list[str] = []
    out = boot_test(RunOptions(results_base=tmp_path, machine=MACHINE, **kw), say=lines.append)
    data = json.loads((out.run_dir / "results.json").read_text())
    return data, out.run_dir, lines


@pytest.mark.parametrize("rev", revmod.available())
def test_every_shipped_revisions_kernel_passes_its_own_check(tmp_path, rev):
    data, _, lines = _run(tmp_path, revision=rev, tests=["cval_past"])
    check = data["abi_check"]
    assert check["status"] == abicheck.MATCH, (check, "\n".join(lines))
    assert check["record"]["status"] == "ok" and check["record"]["cap"] == "1"
    (test,) = data["tests"]
    assert not any("does not speak" in r for r in test["reasons"]), test
    # the probe's VM is not taken for the test's in QEMU's trace (layer 0); a control
    # may report edges wrongly (upstream-twice: one rise twice), but QEMU saw them all
    if revmod.load(rev).provenance != "negative-control":
        assert test["metrics"]["hw_vtimer_edges"] == test["metrics"]["vtimer_edges"], test
    elif rev == "upstream-imask":  # the kernel's own view is the broken one: QEMU saw
        assert test["metrics"]["hw_vtimer_edges"] == 2, test  # cval_past's two fires
    elif test["metrics"]["kt_vtimer_edges"] is not None:  # a storm drops kernel events
        assert test["metrics"]["hw_vtimer_edges"] == test["metrics"]["kt_vtimer_edges"], test


@pytest.mark.parametrize(
    ("kernel_of", "profile", "words"),
    [
        ("v5", "v6", ["word 0 bit 0 and word 1 bit 0 of s.regs", "with no history", "v5's"]),
        ("v6", "upstream", ["the firing ptimer never showed", "v6's layout"]),
    ],
)
def test_a_kernel_under_another_revisions_profile_errors_every_test(
    tmp_path, kernel_of, profile, words
):
    tests = ["cval_past", "oneshot_wfi", "ptimer_oneshot"]
    data, run_dir, _ = _run(tmp_path, revision=profile, kernel_image=_image(kernel_of), tests=tests)
    check = data["abi_check"]
    assert check["status"] == abicheck.MISMATCH, check
    reason = check["reason"]
    assert reason.startswith(f"the booted kernel does not speak {profile}'s ABI"), reason
    for w in words:
        assert w in reason, reason
    ran = [t for t in data["tests"] if t["status"] != SKIPPED]
    assert {t["name"] for t in ran} >= {"cval_past", "oneshot_wfi"}
    for t in ran:
        assert t["status"] == ERROR and t["reasons"] == [reason] and not t["properties"], t
    junit = ET.parse(run_dir / "junit.xml").getroot()
    for case in junit.iter("testcase"):
        if case.get("name") in {t["name"] for t in ran}:
            assert case.find("error") is not None and case.find("error").text == reason
    ktap = (run_dir / "ktap.txt").read_text().splitlines()
    for t in ran:
        assert f"# {t['name']}: {reason}" in ktap
        assert any(ln.endswith(f" {t['name']} # ERROR") for ln in ktap), ktap
