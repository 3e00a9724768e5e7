"""QEMU as the VMM (--vmm qemu): specs, manifest, verdicts on recorded records, the
VMM comparison, the initrd, and the rootfs's package resolution and closure."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import console

from harness.build import qemu_initrd, rootfs
from harness.build.initramfs import MANIFEST, SuitePlan
from harness.core import repo
from harness.core.errors import BuildError, InputError
from harness.inputs import guest_spec, qemu_tests
from harness.judge import qemu_verdict
from harness.judge.verdict import ERROR, FAILED, MISSED, PASSED, TestResult
from harness.traces import records
from harness.traces.records import Problem, Record

LOG = "upstream-qemu-vmm.console.log"


def _spec() -> qemu_tests.QemuTest:
    return qemu_tests.load_all()["vtimer_gic"]


def _recorded() -> list[Record]:
    recs = [records.parse_line(line, i) for i, line in enumerate(console(LOG), 1)]
    assert not any(isinstance(r, Problem) for r in recs)
    return [r for r in recs if isinstance(r, Record)]


def _with(recs: list[Record], kind: str, **fields) -> list[Record]:
    """recs with the fields of every record of kind replaced."""
    return [replace(r, fields=r.fields | fields) if r.kind == kind else r for r in recs]


def _verdict(recs: list[Record], line: str) -> list[Record]:
    return [
        replace(r, fields={"line": line}) if "spurious=" in r.get("line", "") else r for r in recs
    ]


# -- specs and the manifest ------------------------------------------------------
def test_shipped_spec_loads_with_peers_of_our_suite():
    spec = _spec()
    assert spec.abis == ("upstream",)
    assert set(spec.peers) <= set(guest_spec.load_all())
    assert spec.expect_irqs == 7 and spec.source.is_file()
    assert spec.image == repo.BUILD / "qemu-guests" / "vtimer_gic.elf"


def test_manifest_line_runs_qemu_with_the_user_space_irqchip():
    line = _spec().manifest_line()
    assert line.startswith("qemu vtimer_gic timeout_ms=60000 -- /usr/bin/qemu-system-aarch64 ")
    argv = line.split(" -- ", 1)[1].split()
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-M") + 1] == "virt,gic-version=2,kernel-irqchip=off"
    assert argv[argv.index("-cpu") + 1] == "host"
    assert argv[-2:] == ["-kernel", "/suite/qemu/vtimer_gic.elf"]
    assert len(line) < 500  # vmm/init.c reads 512-byte lines


def _spec_copy(tmp_path: Path) -> Path:
    src = repo.GUEST_TESTS / "qemu"
    shutil.copy(src / "vtimer_gic.c", tmp_path / "vtimer_gic.c")
    shutil.copy(src / "vtimer_gic.yaml", tmp_path / "vtimer_gic.yaml")
    return tmp_path / "vtimer_gic.yaml"


def test_unknown_peer_is_an_input_error_naming_the_line(tmp_path):
    path = _spec_copy(tmp_path)
    path.write_text(path.read_text().replace("mmio_spin]", "mmio_spinn]"))
    with pytest.raises(InputError) as e:
        qemu_tests.load(path, guest_spec.load_all())
    assert "unknown value 'mmio_spinn'" in str(e.value) and e.value.line is not None


def test_a_name_our_suite_has_is_refused(tmp_path):
    path = _spec_copy(tmp_path)
    path.rename(tmp_path / "rearm_n.yaml")
    text = (tmp_path / "rearm_n.yaml").read_text().replace("name: vtimer_gic", "name: rearm_n")
    (tmp_path / "rearm_n.yaml").write_text(text)
    with pytest.raises(InputError, match="guest test of our VMM too"):
        qemu_tests.load(tmp_path / "rearm_n.yaml", guest_spec.load_all())


# -- verdicts ----------------------------------------------------------------------
def test_recorded_run_passes_with_its_metrics():
    res = qemu_verdict.evaluate(_spec(), _recorded(), [])
    assert res.status == PASSED, res.reasons
    m = res.metrics
    assert m["irqs"] == 7 and m["spurious"] == 0 and m["early"] == 0
    assert m["wall_ms"] == 1728
    assert m["qemu_start_ms"] == pytest.approx(1634.0, abs=0.1)  # begin to the guest's start
    assert m["guest_ms"] == pytest.approx(128.2, abs=0.1)
    assert m["kt_irq_lines"] == 84 and m["kt_vtimer_edges"] == 7


@pytest.mark.parametrize(
    "change, reason",
    [
        (
            lambda r: _verdict(r, "VT-QEMU: vtimer_gic irqs=5 spurious=0 FAIL line=42"),
            "the guest's check at line 42 of vtimer_gic.c failed",
        ),
        (lambda r: _verdict(r, "VT-QEMU: vtimer_gic irqs=6 spurious=0 ok"), "irqs: expected 7"),
        (
            lambda r: [x for x in r if "spurious=" not in x.get("line", "")],
            "no verdict line from the guest (last output: VT-QEMU: vtimer_gic note",
        ),
        (
            lambda r: _with(r, "end", status="watchdog"),
            "QEMU did not finish in 60 s: the watchdog killed it",
        ),
        (lambda r: _with(r, "end", status="vmm-crash", signal="11"), "QEMU died of signal 11"),
        (
            lambda r: [x for x in r if x.get("ev") != "kvm_irq_line"],
            "no kvm_irq_line in the kernel's trace: QEMU never injected an IRQ",
        ),
    ],
)
def test_failures_name_their_cause(change, reason):
    res = qemu_verdict.evaluate(_spec(), change(_recorded()), [])
    assert res.status == FAILED
    assert any(r.startswith(reason) for r in res.reasons), res.reasons


def test_qemu_exit_status_comes_with_what_qemu_said():
    recs = _with(_recorded(), "end", status="qemu-exit", code="1")
    begin = recs[0]
    said = replace(begin, kind="out", fields={"line": "qemu-system-aarch64: kvm_init failed"})
    recs = [begin, said, *[r for r in recs[1:] if r.kind != "out"]]
    res = qemu_verdict.evaluate(_spec(), recs, [])
    assert res.status == FAILED
    assert res.reasons[:2] == [
        "QEMU exited with status 1",
        "QEMU said: qemu-system-aarch64: kvm_init failed",
    ]


def test_missing_end_lost_record_and_no_records():
    recs = _recorded()
    res = qemu_verdict.evaluate(_spec(), [r for r in recs if r.kind != "end"], [])
    assert res.status == ERROR and "no end record" in res.reasons[0]
    res = qemu_verdict.evaluate(_spec(), recs, [Problem(7, "checksum mismatch in record seq 9")])
    assert res.status == ERROR and res.reasons[0].startswith("console: checksum mismatch")
    assert qemu_verdict.evaluate(_spec(), [], []).status == MISSED


# -- the VMM comparison ----------------------------------------------------------------
def _results(**statuses: str) -> dict[str, TestResult]:
    return {name: TestResult(name, s) for name, s in statuses.items()}


def test_comparison_agree_disagree_and_undecided():
    spec = _spec()
    qemu_ok = TestResult("vtimer_gic", PASSED)
    ok = _results(rearm_n=PASSED, oneshot_wfi=PASSED, mmio_spin=PASSED)
    c = qemu_verdict.compare(spec, qemu_ok, ok)
    assert c["agree"] is True
    assert qemu_verdict.compare_line(c) == (
        "vmm vtimer_gic: qemu PASS, ours rearm_n PASS, oneshot_wfi PASS, mmio_spin PASS: agree"
    )
    one_fails = ok | _results(mmio_spin=FAILED)
    c = qemu_verdict.compare(spec, qemu_ok, one_fails)
    assert c["agree"] is False and qemu_verdict.compare_line(c).endswith(": DISAGREE")
    both_fail = qemu_verdict.compare(spec, TestResult("vtimer_gic", FAILED), one_fails)
    assert both_fail["agree"] is True
    undecided = qemu_verdict.compare(spec, qemu_ok, ok | _results(mmio_spin=ERROR))
    assert undecided["agree"] is None
    assert qemu_verdict.compare_line(undecided).endswith(": no comparison")
    json.dumps(c)  # goes into results.json as is


# -- the initrd -------------------------------------------------------------------------
def test_initrd_is_the_rootfs_then_the_suite_part(tmp_path, monkeypatch):
    fake = tmp_path / "qemu-x" / "rootfs.cpio"
    fake.parent.mkdir()
    fake.write_bytes(b"070701" + b"\0" * 122)
    fs = rootfs.Rootfs(fake, "x", {}, {})
    peers = tuple(guest_spec.load_all()[p] for p in _spec().peers)
    plan = SuitePlan("upstream", "every-exit", peers)
    suite = tmp_path / "initramfs.cpio.gz"
    out = qemu_initrd.build_initrd(plan, [_spec()], fs, suite)
    assert out.parent == fake.parent / "initrd"
    data = out.read_bytes()
    assert data.startswith(fake.read_bytes()) and data.endswith(suite.read_bytes())
    cpio = gzip.decompress(suite.read_bytes())
    manifest = cpio.split(MANIFEST.encode(), 1)[1]
    assert b"test rearm_n /suite/rearm_n.bin" in manifest
    assert b"\nqemu vtimer_gic timeout_ms=60000 -- /usr/bin/qemu-system-aarch64" in manifest
    assert b"suite/qemu/vtimer_gic.elf" in cpio and b"suite/mmio_spin.bin" in cpio
    assert qemu_initrd.build_initrd(plan, [_spec()], fs, suite) == out  # content-addressed


# -- the rootfs ----------------------------------------------------------------------------
def test_depends_groups_keep_alternatives_without_versions():
    fields = {
        "Pre-Depends": "libc6 (>= 2.34)",
        "Depends": "libfoo1:any (>= 1) | libfoo-alt, zlib1g (>= 1:1.2.0), debconf | debconf-2.0",
    }
    assert rootfs._depends(fields) == [
        ["libc6"],
        ["libfoo1", "libfoo-alt"],
        ["zlib1g"],
        ["debconf", "debconf-2.0"],
    ]


def test_resolution_follows_only_library_packages(monkeypatch):
    archive = {
        "qemu-system-arm": ("otherosfs", "libglib2.0-0, qemu-system-common (= 1), zlib1g"),
        "libglib2.0-0": ("libs", "libc6, libffi8"),
        "qemu-system-common": ("otherosfs", "adduser, libc6"),
        "libc6": ("libs", "libgcc-s1"),
        "libgcc-s1": ("libs", "libc6"),
        "libffi8": ("libs", ""),
        "zlib1g": ("libs", "libc6"),
        "adduser": ("admin", "passwd"),
    }
    asked: list[str] = []

    def show(names):
        asked.extend(names)
        return [
            {"Package": n, "Version": "1:1.0", "Section": archive[n][0], "Depends": archive[n][1]}
            for n in names
            if n in archive
        ]

    monkeypatch.setattr(rootfs, "_show", show)
    got = [p.name for p in rootfs.resolve_apt()]
    assert got == ["libc6", "libffi8", "libgcc-s1", "libglib2.0-0", "qemu-system-arm", "zlib1g"]
    assert "adduser" not in asked and "passwd" not in asked  # not below a non-library
    pkg = rootfs.Package("zlib1g", "1:1.2.13.dfsg-1")
    assert pkg.deb.name == "zlib1g_1%3a1.2.13.dfsg-1_arm64.deb"  # as apt-get download names it
    key = rootfs.cache_key([pkg])
    assert key != rootfs.cache_key([replace(pkg, version="1:1.2.13.dfsg-2")])


def test_closure_takes_only_what_the_binary_loads(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    for name in ("usr/bin/qemu-system-aarch64", "lib/aarch64-linux-gnu/libc.so.6"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(b"\x7fELF")
    (tree / "usr/lib/aarch64-linux-gnu").mkdir(parents=True)
    (tree / "usr/lib/aarch64-linux-gnu/libz.so.1.2.13").write_bytes(b"\x7fELF")
    (tree / "usr/lib/aarch64-linux-gnu/libz.so.1").symlink_to("libz.so.1.2.13")
    (tree / "usr/lib/aarch64-linux-gnu/libunused.so.1").write_bytes(b"\x7fELF")
    (tree / "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1").write_bytes(b"\x7fELF")
    (tree / "lib/ld-linux-aarch64.so.1").symlink_to("aarch64-linux-gnu/ld-linux-aarch64.so.1")
    needs = {
        "qemu-system-aarch64": ["libz.so.1", "libc.so.6"],
        "libz.so.1.2.13": ["libc.so.6"],
        "libc.so.6": ["ld-linux-aarch64.so.1"],
    }
    monkeypatch.setattr(rootfs, "needed", lambda p: needs.get(p.name, []))
    files = rootfs.closure(tree, rootfs.BINARY)
    assert sorted(files) == [
        "lib/aarch64-linux-gnu/libc.so.6",
        "lib/aarch64-linux-gnu/libz.so.1",
        "lib/ld-linux-aarch64.so.1",
        "usr/bin/qemu-system-aarch64",
    ]
    assert files["lib/aarch64-linux-gnu/libz.so.1"].name == "libz.so.1.2.13"
    needs["libc.so.6"] = ["libmissing.so.3"]
    with pytest.raises(BuildError, match=r"libmissing\.so\.3"):
        rootfs.closure(tree, rootfs.BINARY)
