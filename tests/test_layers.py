"""Layers 1 (kvm tracepoints) and the correlation, on a recorded real run."""

from __future__ import annotations

from conftest import DATA, console

from harness.traces import correlate, kernel_trace, qemu_trace, records
from harness.traces.records import Record
from harness.traces.test_trace import TestTrace

TESTS = ("mmio_spin", "oneshot_wfi", "rearm_n")


def _traces() -> dict[str, TestTrace]:
    parsed = records.parse(console("upstream-every-exit.console.log"))
    with open(DATA / "upstream-every-exit.qemu-trace.log") as f:
        vms = qemu_trace.timelines(qemu_trace.parse(f))
    out = {}
    for name, vm in zip(TESTS, vms, strict=True):
        tr = TestTrace.from_records(name, [r for r in parsed.records if r.test == name])
        tr.hw = vm
        out[name] = tr
    return out


def test_kernel_events_parse_with_monotonic_times():
    tr = _traces()["rearm_n"]
    evs = kernel_trace.events(tr.records)
    assert {"kvm_exit", "kvm_entry", "kvm_userspace_exit", "kvm_timer_update_irq"} <= {
        e.event for e in evs
    }
    assert [e.t_ns for e in evs] == sorted(e.t_ns for e in evs)
    # the kernel's events fall inside the test's own time span (one clock)
    assert tr.begin.t_ns - 50_000_000 < evs[0].t_ns < evs[-1].t_ns < tr.end.t_ns


def test_three_layers_count_the_same_edges():
    for name, tr in _traces().items():
        m = correlate.metrics(tr)
        assert tr.edges("vtimer") == tr.hw.edges() == m["kt_vtimer_edges"], name
        assert m["kt_userspace_exits"] == len(tr.exits), name


def test_latencies_are_measured_and_plausible():
    m = correlate.metrics(_traces()["rearm_n"])
    assert m["notice_latency_us"]["n"] == 5
    assert 0 < m["notice_latency_us"]["median"] < 5_000
    assert m["irq_latency_us"]["n"] == 5
    assert 0 < m["irq_latency_us"]["median"] < 5_000


def test_clock_maps_the_counter_onto_monotonic_time():
    tr = _traces()["rearm_n"]
    clk = correlate.clock(tr)
    for r in tr.injections:
        assert abs(clk.mono(int(r.get("cnt"), 16)) - r.t_ns) < 200_000  # 0.2 ms


def test_dropped_kernel_events_disable_the_layer():
    tr = _traces()["mmio_spin"]
    drop = Record(10**6, "mmio_spin", tr.end.t_ns, "ktdrop", {"n": "5", "kept": "4000"}, 0)
    assert kernel_trace.events([*tr.records, drop]) == []
