"""Verdicts and models on recorded real traces."""

from __future__ import annotations

import dataclasses

from conftest import console

from harness import guest_spec, records, revision
from harness.model import Model
from harness.verdict import FAILED, PASSED, evaluate


def _judge(log: str, test: str, spec=None, model_rev: str = "upstream"):
    parsed = records.parse(console(log))
    spec = spec or guest_spec.load_all()[test]
    recs = [r for r in parsed.records if r.test == test]
    return evaluate(spec, recs, parsed.problems_for(test), Model.of(revision.load(model_rev)))


def test_upstream_every_exit_passes():
    for test in ("mmio_spin", "oneshot_wfi", "rearm_n"):
        res = _judge("upstream-every-exit.console.log", test)
        assert res.status == PASSED, res.reasons
        assert res.metrics["irqs"] == res.metrics["vtimer_edges"]


def test_rearm_counts_five_edges():
    res = _judge("upstream-every-exit.console.log", "rearm_n")
    assert res.metrics["vtimer_edges"] == 5
    assert res.metrics["irqs"] == 5


def test_wrong_expectation_in_spec_fails():
    spec = guest_spec.load_all()["rearm_n"]
    wrong = dataclasses.replace(spec, expect=dataclasses.replace(spec.expect, irqs=4))
    res = _judge("upstream-every-exit.console.log", "rearm_n", spec=wrong)
    assert res.status == FAILED
    assert "irqs: expected 4, observed 5" in res.reasons


def test_eintr_only_vmm_misses_a_change_on_upstream():
    res = _judge("upstream-eintr-only.console.log", "mmio_spin")
    assert res.status == FAILED
    visible = next(p for p in res.properties if p.prop == "visible")
    assert visible.status == "fail"
    assert "never read" in visible.detail and visible.seq is not None


def test_upstream_trace_breaks_a_no_coalesce_model():
    """The rise in mmio_spin rode on an MMIO exit: fine upstream, not under 'always own exit'."""
    spec = guest_spec.load_all()["mmio_spin"]
    parsed = records.parse(console("upstream-every-exit.console.log"))
    recs = [r for r in parsed.records if r.test == "mmio_spin"]
    strict = dataclasses.replace(
        Model.of(revision.load("upstream")), coalesce=False, eintr_suffices=True
    )
    res = evaluate(spec, recs, [], strict)
    props = {p.prop: p for p in res.properties}
    assert props["coalesce"].status == "fail"
    assert "rode on exit" in props["coalesce"].detail
