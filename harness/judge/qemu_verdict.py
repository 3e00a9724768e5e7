"""A QEMU test's verdict (--vmm qemu): the guest's "VT-QEMU: <name> ... ok" line,
QEMU's exit status, the expected IRQ count and the L1 kernel's trace showing the
IRQs went in through KVM_IRQ_LINE; and QEMU's verdict against our VMM's on the
test's peers (results.json "vmm_comparison")."""

from __future__ import annotations

import re

from harness.inputs.qemu_tests import QemuTest
from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED, TestResult
from harness.traces import kernel_trace
from harness.traces.records import Problem, Record

_GUEST_LINE = re.compile(r"^VT-QEMU: (?P<name>\S+) (?P<rest>.*)$")
_KV = re.compile(r"(\w+)=(\d+)")


def _guest_lines(spec: QemuTest, outs: list[Record]) -> dict[str, tuple[int, str]]:
    """The guest's start and verdict lines: kind -> (t_ns, rest of the line)."""
    found: dict[str, tuple[int, str]] = {}
    for r in outs:
        m = _GUEST_LINE.match(r.get("line", ""))
        if not m or m["name"] != spec.name:
            continue
        rest = m["rest"]
        if rest.startswith("start"):
            found.setdefault("start", (r.t_ns, rest))
        elif not rest.startswith("note "):
            found["verdict"] = (r.t_ns, rest)
    return found


def evaluate(spec: QemuTest, recs: list[Record], problems: list[Problem]) -> TestResult:
    """A QEMU test's verdict from its records (begin, out, kt, end)."""
    res = TestResult(spec.name, PASSED)
    if not recs:
        return TestResult(spec.name, MISSED, ["no records: the test did not run"])
    if problems:
        res.status = ERROR
        res.reasons += [f"{p.source}: {p.what} (line {p.line_no})" for p in problems]
    begin = next((r for r in recs if r.kind == "begin"), None)
    end = next((r for r in recs if r.kind == "end"), None)
    if begin is None or end is None:
        res.status = ERROR
        res.reasons.append(
            "no begin record"
            if begin is None
            else "no end record: the run stopped inside this test"
        )
        return res
    outs = [r for r in recs if r.kind == "out"]
    guest = _guest_lines(spec, outs)
    kev = kernel_trace.events(recs)
    res.metrics = _metrics(begin, end, guest, kev)
    if end.get("status") == "vmm-error":
        res.status = ERROR
        res.reasons.append(f"/init could not run QEMU: {end.get('msg', '?')}")
        return res
    said = [r.get("line", "") for r in outs if not _GUEST_LINE.match(r.get("line", ""))]
    bad = _qemu_end(spec, end)
    if bad and said:
        bad.append("QEMU said: " + " | ".join(said[-3:]))
    verdict = guest.get("verdict", (0, ""))[1]
    counts = {k: int(v) for k, v in _KV.findall(verdict)}
    res.metrics |= {k: counts.get(k) for k in ("irqs", "spurious", "early", "max_late_us")}
    bad += _guest_verdict(spec, verdict, counts, outs, bool(kev), res.metrics["kt_irq_lines"])
    if bad:
        res.reasons += bad
        if res.status != ERROR:
            res.status = FAILED
    return res


def _metrics(begin: Record, end: Record, guest: dict, kev: list) -> dict:
    started = guest.get("start", (None,))[0]
    ended = guest.get("verdict", (None,))[0]
    return {
        "wall_ms": end.int("wall_ms") if end.get("wall_ms") else None,
        "qemu_start_ms": None if started is None else round((started - begin.t_ns) / 1e6, 1),
        "guest_ms": None if started is None or ended is None else round((ended - started) / 1e6, 1),
        "kt_vtimer_edges": kernel_trace.rises(kev) if kev else None,
        "kt_userspace_exits": sum(e.event == "kvm_userspace_exit" for e in kev) if kev else None,
        "kt_irq_lines": sum(e.event == "kvm_irq_line" for e in kev) if kev else None,
    }


def _qemu_end(spec: QemuTest, end: Record) -> list[str]:
    """What was wrong with how QEMU ended (its end record's status)."""
    status = end.get("status")
    if status == "watchdog":
        return [f"QEMU did not finish in {spec.timeout_s:g} s: the watchdog killed it"]
    if status == "vmm-crash":
        return [f"QEMU died of signal {end.get('signal')}"]
    if status == "qemu-exit":
        return [f"QEMU exited with status {end.get('code')}"]
    if status != "ok":
        return [f"unknown end status {status}"]
    return []


def _guest_verdict(
    spec: QemuTest, verdict: str, counts: dict, outs: list[Record], traced: bool, lines: int | None
) -> list[str]:
    """What was wrong with the guest's verdict line, its IRQ count, the kernel's view."""
    if not verdict:
        last = outs[-1].get("line", "") if outs else "nothing"
        return [f"no verdict line from the guest (last output: {last})"]
    if verdict.endswith(" ok"):
        bad = []
        if spec.expect_irqs is not None and counts.get("irqs") != spec.expect_irqs:
            bad.append(f"irqs: expected {spec.expect_irqs}, observed {counts.get('irqs')}")
        if traced and not lines:
            bad.append("no kvm_irq_line in the kernel's trace: QEMU never injected an IRQ")
        return bad
    if "line" in counts:
        return [f"the guest's check at line {counts['line']} of {spec.source.name} failed"]
    return [f"the guest failed: {verdict}"]


def compare(spec: QemuTest, qemu: TestResult, results: dict[str, TestResult]) -> dict:
    """QEMU's verdict against our VMM's verdicts on the peers, on the same kernel."""
    ours = {p: results[p].status if p in results else MISSED for p in spec.peers}
    decided = {PASSED, FAILED}
    if not ours or qemu.status not in decided or not set(ours.values()) <= decided:
        agree = None  # one side did not come to a verdict
    else:
        agree = (qemu.status == PASSED) == all(s == PASSED for s in ours.values())
    return {"test": spec.name, "qemu": qemu.status, "ours": ours, "agree": agree}


def compare_line(c: dict) -> str:
    ours = ", ".join(f"{p} {s}" for p, s in c["ours"].items()) or "no peers"
    word = {True: "agree", False: "DISAGREE", None: "no comparison"}[c["agree"]]
    return f"vmm {c['test']}: qemu {c['qemu']}, ours {ours}: {word}"
