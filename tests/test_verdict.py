"""Verdicts and models on recorded real traces."""

from __future__ import annotations

import dataclasses

from conftest import console

from harness.inputs import guest_spec, revision
from harness.judge.model import Model
from harness.judge.verdict import FAILED, PASSED, evaluate
from harness.traces import records


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


def _oneshot_wfi(change) -> list[records.Record]:
    parsed = records.parse(console("upstream-every-exit.console.log"))
    return [change(r) for r in parsed.records if r.test == "oneshot_wfi"]


def _wake(recs: list[records.Record]):
    spec = guest_spec.load_all()["oneshot_wfi"]
    res = evaluate(spec, [r for r in recs if r], [], Model.of(revision.load("upstream")))
    return res, next(p for p in res.properties if p.prop == "wake")


def _is_wake(r: records.Record) -> bool:
    return r.kind == "exit" and r.get("port") == "WAKE"


def test_wake_passes_with_the_kernel_blocking_the_vcpu():
    res, wake = _wake(_oneshot_wfi(lambda r: r))
    assert res.status == PASSED and wake.status == "pass"


def test_wake_not_exercised_when_the_timer_fired_before_the_wfi():
    """VT_WAKE_EARLY: the guest got to its WFI after the fire; the test still passes."""
    early = _oneshot_wfi(
        lambda r: (
            dataclasses.replace(r, fields=r.fields | {"val": "0x100000001"}) if _is_wake(r) else r
        )
    )
    res, wake = _wake(early)
    assert wake.status == "skip" and "not exercised" in wake.detail
    assert res.status == PASSED


def test_wake_fails_without_a_wake_report():
    """The failure a racy guest produced under load: the IRQ came before any WFI."""
    res, wake = _wake(_oneshot_wfi(lambda r: None if _is_wake(r) else r))
    assert res.status == FAILED and wake.status == "fail"


def test_wake_fails_when_kvm_never_blocked_the_vcpu():
    def drop(r: records.Record):
        return None if r.kind == "kt" and r.get("ev") == "kvm_vcpu_wakeup" else r

    res, wake = _wake(_oneshot_wfi(drop))
    assert res.status == FAILED and wake.status == "fail"
    assert wake.expected == "a kvm_vcpu_wakeup event"


def _exits(*rows):
    """Exit records from (reason, errno, level, notice, port[, sig]) rows, one vCPU."""
    from harness.traces.records import Record
    from harness.traces.test_trace import TestTrace

    recs = []
    for n, (r, err, lvl, ntc, port, *sig) in enumerate(rows, 1):
        f = {"vcpu": "0", "n": str(n), "r": r, "err": str(err), "lvl": lvl, "read": "1"}
        f["ntc"] = ntc
        if port:
            f["port"] = port
        if sig:
            f["sig"] = str(sig[0])
        recs.append(Record(n, "rearm_n", n * 1000, "exit", f, n))
    return TestTrace.from_records("rearm_n", recs)


def test_coalesce_a_notice_must_show_the_change():
    """A fall that rode on the guest's MMIO report, then an EINTR for the re-armed
    timer's rise: that EINTR is the rise's notice, not the fall's (v5-coalesce)."""
    v5 = Model.of(revision.load("v5"))
    rode = _exits(
        ("INTR", 4, "1", "1", None),
        ("MMIO", 0, "0", "0", "IRQ"),
        ("INTR", 4, "1", "1", None),
        ("MMIO", 0, "0", "0", "IRQ"),
        ("INTR", 4, "0", "1", None),
    )
    res = v5.judge("coalesce", rode)
    assert res.status == "fail" and res.seq == 2, res.line()
    assert "1 of 4 changes rode" in res.detail and "line 1" in (res.observed or "")
    assert v5.judge("eintr-suffices", rode).seq == 2
    own = _exits(
        ("INTR", 4, "1", "1", None),
        ("MMIO", 0, "0", "0", "IRQ"),
        ("INTR", 4, "0", "1", None),
        ("INTR", 4, "1", "1", None),
    )
    assert v5.judge("coalesce", own).status == "pass", v5.judge("coalesce", own).line()
    assert v5.judge("eintr-suffices", own).status == "pass"


def test_coalesce_passes_over_the_vmms_own_signal_exits():
    """v5 under sigalrm: the fall rode on the IRQ report, the VMM's SIGALRM ended the
    next KVM_RUN before the kernel's entry check, and the forced EINTR came after."""
    v5 = Model.of(revision.load("v5"))
    tr = _exits(
        ("INTR", 4, "1", "1", None),
        ("MMIO", 0, "0", "0", "IRQ"),
        ("INTR", 4, "0", "0", None, 1),  # the VMM's own alarm: no notice (vmm/vm.c)
        ("INTR", 4, "0", "1", None),
    )
    assert v5.judge("coalesce", tr).status == "pass", v5.judge("coalesce", tr).line()
    assert v5.judge("eintr-suffices", tr).status == "pass"
    # with no notice after the signal exit, the fall rode
    tr = _exits(
        ("INTR", 4, "1", "1", None),
        ("MMIO", 0, "0", "0", "IRQ"),
        ("INTR", 4, "0", "0", None, 1),  # the VMM's own alarm: no notice (vmm/vm.c)
        ("MMIO", 0, "0", "0", "EXIT"),
    )
    assert v5.judge("coalesce", tr).status == "fail"


def test_once_counts_the_abis_reports_of_an_edge():
    """upstream-twice: the first rise shown, a false fall, the same rise again. The
    late-inject VMM's hold absorbs the extra report (one injection, one IRQ), so
    only the ABI's count of rises against the kernel's edges shows it."""
    res = _judge("upstream-twice.console.log", "late_inject")
    once = [r for r in res.reasons if r.startswith("once:")]
    assert res.status == FAILED and once, res.reasons
    assert "reported 2 vtimer rises for 1 edge" in once[0]
    parsed = records.parse(console("upstream-twice.console.log"))
    injected = [r for r in parsed.records if r.test == "late_inject" and r.kind == "inject"]
    assert [r.get("level") for r in injected] == ["1", "0"]
    # a VMM that injects at once injects the edge twice; the guest takes one IRQ
    res = _judge("upstream-twice.console.log", "oneshot_tval")
    assert any(r.startswith("once:") for r in res.reasons), res.reasons
