"""The four revisions' models on recorded real traces of each revision's kernel."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest
from conftest import console

from harness.build import kernel as kbuild
from harness.core.errors import HarnessError
from harness.inputs import guest_spec, revision
from harness.judge import compare
from harness.judge.model import Model
from harness.judge.verdict import FAILED, PASSED, evaluate
from harness.traces import records
from harness.traces.test_trace import TestTrace

TESTS = ("mmio_spin", "oneshot_wfi", "rearm_n")
REVS = ("upstream", "v4", "v5", "v6")
PORTED = ("v4", "v5", "v6")  # the revisions with a 6.12 forward-port of their own


def _judge(kernel: str, policy: str, model: str):
    parsed = records.parse(console(f"{kernel}-{policy}.console.log"))
    specs = guest_spec.load_all()
    m = Model.of(revision.load(model))
    return [
        evaluate(specs[t], [r for r in parsed.records if r.test == t], parsed.problems_for(t), m)
        for t in TESTS
    ]


def _trace(kernel: str, policy: str, test: str) -> TestTrace:
    parsed = records.parse(console(f"{kernel}-{policy}.console.log"))
    return TestTrace.from_records(test, [r for r in parsed.records if r.test == test])


def test_profiles_load_with_their_provenance():
    prov = {r: revision.load(r).provenance for r in REVS}
    assert prov == {
        "upstream": "merged-4.12", "v4": "reconstructed", "v5": "seed", "v6": "reconstructed",
    }  # fmt: skip
    for r in ("v4", "v5", "v6"):
        rev = revision.load(r)
        assert len(rev.patches) == 1 and rev.rules
        assert rev.abi.bits == {"vtimer": 0}
    assert revision.load("v4").abi.exit_reason_value == 64


def test_every_revision_has_a_series_for_both_kernel_sources():
    assert revision.SOURCES == kbuild.SOURCES  # what a profile may name is what is built
    for r in REVS:
        rev = revision.load(r)
        for source in revision.SOURCES:
            assert rev.for_source(source).patches == rev.patches_for(source)
        if r not in PORTED:
            assert rev.patches_for("linux-source-6.12") == rev.patches
            continue
        old, new = rev.patches_for("linux-source-6.1"), rev.patches_for("linux-source-6.12")
        assert old == rev.patches and len(new) == 1 and old != new
        assert rev.series_file("linux-source-6.12") == "series-6.12"
        assert new[0].name.endswith(f"-{r}-ABI-6.12.patch")
        text = new[0].read_text()  # a 6.12 forward-port, saying so
        assert "Subject: [PATCH] KVM: arm64: Route vtimer events to user space" in text
        assert f"This is the 6.12 forward-port of the 6.1 patch (kernel_patches/{r}," in text


def _cited(patch) -> list[str]:
    """The seed passages a patch's message cites (its quoted text), in order."""
    message = patch.read_text().split("\n---\n", 1)[0]
    return re.findall(r'"([^"]+)"', " ".join(message.split()))


@pytest.mark.parametrize("rev", PORTED)
def test_the_6_12_patch_cites_the_seed_as_the_6_1_patch_does(rev):
    r = revision.load(rev)
    (old,), (new,) = r.patches_for("linux-source-6.1"), r.patches_for("linux-source-6.12")
    assert _cited(old) and _cited(new) == _cited(old)


def _unpacked(source: str):
    """The unpacked source kernel.build patches (build/kernels/src-*), if cached."""
    try:
        identity = f"{source} {kbuild.package_version(source)}"
    except HarnessError:
        return None
    top = kbuild.KERNELS / f"src-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    return top / "linux" if (top / ".unpacked").is_file() else None


@pytest.mark.parametrize(
    ("rev", "source"),
    [
        (r, s)
        for r in REVS
        for s in revision.SOURCES
        if s == revision.DEFAULT_SOURCE or r in (*PORTED, "upstream")
    ],
)
def test_each_revision_series_applies_to_its_source(tmp_path, rev, source):
    tree = _unpacked(source)
    if tree is None:
        pytest.skip(f"{source} is not unpacked in {kbuild.KERNELS} (a kernel build does it)")
    patches = revision.load(rev).patches_for(source)
    for name in kbuild.touched_files(patches):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tree / name, tmp_path / name)
    kbuild.apply_patches(tmp_path, patches, tmp_path / "log")  # BuildError if not


def test_the_negative_control_is_upstream_with_one_patch():
    control, upstream = revision.load("upstream-nowake"), revision.load("upstream")
    assert control.provenance == "negative-control" and len(control.patches) == 1
    assert Model.of(control) == Model.of(upstream)  # judged by upstream's rules
    assert control.abi == upstream.abi


@pytest.mark.parametrize("rev", REVS)
def test_each_revision_passes_its_own_model_with_every_exit(rev):
    for res in _judge(rev, "every-exit", rev):
        assert res.status == PASSED, (res.name, res.reasons)


@pytest.mark.parametrize("rev", ["v4", "v5"])
def test_eintr_only_vmm_suffices_on_v4_and_v5(rev):
    for res in _judge(rev, "eintr-only", rev):
        assert res.status == PASSED, (res.name, res.reasons)


@pytest.mark.parametrize("rev", ["v6", "upstream"])
def test_eintr_only_vmm_misses_changes_on_v6_and_upstream(rev):
    results = _judge(rev, "eintr-only", rev)
    assert all(r.status == FAILED for r in results)
    for r in results:
        visible = next(p for p in r.properties if p.prop == "visible")
        assert visible.status == "fail" and visible.seq is not None


def test_v5_gives_every_change_its_own_eintr_even_after_mmio_showed_it():
    tr = _trace("v5", "every-exit", "oneshot_wfi")
    fall = next(c for c in tr.changes("vtimer") if c.level == 0)
    assert fall.first.reason == "MMIO" and not fall.first.notice
    nxt = tr.next_exit(fall.first)
    assert nxt.reason == "INTR" and nxt.notice and nxt.level == 0


def test_v4_shows_the_line_only_on_its_dedicated_exit():
    tr = _trace("v4", "every-exit", "oneshot_wfi")
    shown = [e for e in tr.exits if e.level is not None]
    assert shown and all(e.reason == "ARM_TIMER" and e.notice for e in shown)


def test_v6_lets_a_change_ride_on_mmio():
    tr = _trace("v6", "every-exit", "mmio_spin")
    fall = next(c for c in tr.changes("vtimer") if c.level == 0)
    assert fall.first.reason == "MMIO"
    assert not tr.next_exit(fall.first).notice


def test_compare_table_shows_the_documented_differences():
    """An upstream (and a v6) kernel judged by every model: only coalesce and
    eintr-suffices differ, and only under v4/v5, which promise an own notice."""
    for kernel in ("upstream", "v6"):
        by_model = {m: _judge(kernel, "every-exit", m) for m in REVS}
        rows = {r[0]: r[1:-1] for r in compare.rows(by_model)[1:]}
        differing = {p for p, r in compare_rows(by_model).items() if r}
        assert differing == {"coalesce", "eintr-suffices"}, rows
        for prop in differing:
            cells = dict(zip(REVS, rows[prop], strict=True))
            # not promised there: n/a with what the kernel did, never "pass"
            assert cells["upstream"] == cells["v6"] and cells["v6"].startswith("n/a ")
            assert cells["v4"].startswith("FAIL") and cells["v5"].startswith("FAIL")
    # a v5 kernel satisfies every model
    by_model = {m: _judge("v5", "every-exit", m) for m in REVS}
    assert not any(compare_rows(by_model).values())


def compare_rows(by_model) -> dict[str, bool]:
    return {r[0]: r[-1] == "*" for r in compare.rows(by_model)[1:]}
