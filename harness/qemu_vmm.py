"""QEMU as a second VMM under test (boot-test --vmm qemu).

QEMU is the production consumer of the upstream ABI: with `-accel kvm -M
virt,gic-version=2,kernel-irqchip=off` its kvm_arch_post_run() copies
run->s.regs.device_irq_level into the timer outputs wired to its emulated
GICv2, which raises the vCPU's IRQ with KVM_IRQ_LINE. Debian's arm64
qemu-system-aarch64 (harness/rootfs.py) goes into the L1 initramfs; /init
runs it for a manifest "qemu" line (vmm/qemu_vmm.c) and writes its output as
records.

A QEMU test is guest_tests/qemu/<name>.c on the runtime there (PL011 and GIC
instead of our report ports) plus <name>.yaml:

    name: vtimer_gic
    description: ...
    source: vtimer_gic.c
    abis: [upstream]               # the ABIs QEMU can follow (others SKIP)
    peers: [rearm_n, oneshot_wfi]  # the same scenarios under our VMM, same boot
    timeout_s: 60                  # the watchdog of the whole QEMU run
    memory_mb: 64
    expect: {irqs: 6}

The verdict is the guest's "VT-QEMU: <name> ... ok" line, QEMU's exit
status, the expected IRQ count, and the L1 kernel's trace showing that the
IRQs went in through KVM_IRQ_LINE. Each QEMU test is compared with its peers'
verdicts under our VMM: results.json "vmm_comparison" and a KTAP line say
whether the two VMMs agree on this kernel.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from harness import (
    guest_spec,
    initramfs,
    kernel_trace,
    locks,
    repo,
    rootfs,
    yamlfile,
)
from harness.errors import BuildError, InputError
from harness.options import RunOptions
from harness.records import Problem, Record
from harness.revision import Revision
from harness.session import Session
from harness.verdict import ERROR, FAILED, MISSED, PASSED, TestResult
from harness.verdict import skipped as skipped_result
from harness.vmms import Suite, Vmm

QEMU_TESTS = repo.GUEST_TESTS / "qemu"
QEMU_GUEST_BINS = repo.BUILD / "qemu-guests"
QEMU_PROGRAM = "/" + rootfs.BINARY
MACHINE = "virt,gic-version=2,kernel-irqchip=off"
MANIFEST_LINE_MAX = 500  # vmm/init.c reads 512-byte lines
KEEP_INITRDS = 4  # combined initrds kept per rootfs (content-addressed), and those in use
_GUEST_LINE = re.compile(r"^VT-QEMU: (?P<name>\S+) (?P<rest>.*)$")
_KV = re.compile(r"(\w+)=(\d+)")


@dataclass(frozen=True)
class QemuTest:
    name: str
    description: str
    source: Path
    abis: tuple[str, ...]
    peers: tuple[str, ...]
    timeout_s: float
    memory_mb: int
    expect_irqs: int | None
    spec_path: Path

    @property
    def image(self) -> Path:
        return QEMU_GUEST_BINS / f"{self.source.stem}.elf"

    def argv(self) -> list[str]:
        """The inner QEMU's command line, as /init runs it in the L1."""
        return [
            QEMU_PROGRAM,
            "-accel", "kvm",
            "-M", MACHINE,
            "-cpu", "host",
            "-m", str(self.memory_mb),
            "-nographic",
            "-no-reboot",
            "-nic", "none",
            "-kernel", f"/suite/qemu/{self.image.name}",
        ]  # fmt: skip

    def manifest_line(self) -> str:
        line = f"qemu {self.name} timeout_ms={int(self.timeout_s * 1000)} -- " + " ".join(
            self.argv()
        )
        if len(line) > MANIFEST_LINE_MAX:
            raise InputError(self.spec_path, f"the QEMU command line is too long: {line}")
        return line


def load(path: Path, guests: dict[str, guest_spec.GuestTest]) -> QemuTest:
    data = yamlfile.load(path)
    yamlfile.check_keys(
        path,
        data,
        {"name", "description", "source", "abis", "expect"},
        {"peers", "timeout_s", "memory_mb"},
    )
    name = yamlfile.expect_type(path, data, "name", str)
    if name != path.stem:
        raise InputError(path, f"name '{name}' must match the file name", line=data.lines["name"])
    if name in guests:
        raise InputError(path, f"name '{name}' is a guest test of our VMM too", line=data.line)
    source = guest_spec.source_beside(path, data)
    abis = yamlfile.expect_type(path, data, "abis", list)
    peers = yamlfile.expect_type(path, data, "peers", list) if "peers" in data else []
    for key, values, allowed in (("abis", abis, guest_spec.ABIS), ("peers", peers, guests)):
        for v in values:
            if not isinstance(v, str) or v not in allowed:
                raise InputError(
                    path,
                    f"key '{key}': unknown value '{v}' (allowed: {', '.join(sorted(allowed))})",
                    line=data.lines[key],
                )
    for key, kind, low in (("timeout_s", (int, float), 1), ("memory_mb", int, 16)):
        if key in data and yamlfile.expect_type(path, data, key, kind) < low:
            raise InputError(path, f"key '{key}' must be at least {low}", line=data.lines[key])
    expect = data["expect"]
    if not isinstance(expect, yamlfile.LineDict):
        raise InputError(path, "key 'expect' must be a mapping", line=data.lines["expect"])
    yamlfile.check_keys(path, expect, set(), {"irqs"})
    if "irqs" in expect:
        yamlfile.expect_type(path, expect, "irqs", int)
    return QemuTest(
        name=name,
        description=" ".join(yamlfile.expect_type(path, data, "description", str).split()),
        source=source,
        abis=tuple(abis),
        peers=tuple(peers),
        timeout_s=float(data.get("timeout_s", 60)),
        memory_mb=data.get("memory_mb", 64),
        expect_irqs=expect.get("irqs"),
        spec_path=path,
    )


def load_all(directory: Path = QEMU_TESTS) -> dict[str, QemuTest]:
    guests = guest_spec.load_all()
    return {p.stem: load(p, guests) for p in sorted(directory.glob("*.yaml"))}


# -- the initrd --------------------------------------------------------------
def build_initrd(
    plan: initramfs.SuitePlan,
    tests: list[QemuTest],
    fs: rootfs.Rootfs,
    suite_out: Path,
    hold: contextlib.ExitStack | None = None,
) -> Path:
    """The L1 initrd: the rootfs (uncompressed, cached) + the suite's part.

    The suite's part is the usual layout (initramfs.build) plus the QEMU
    tests' manifest lines and images; it is written to suite_out (the run's
    initramfs.cpio.gz). The two are concatenated into a content-addressed
    file next to the rootfs, which the L1 kernel unpacks one after the other.
    With hold, the file is held (a shared lock on it, until hold closes) from
    the moment it is found or made, so another run's prune leaves it alone
    until this run's QEMU is done with it.
    """
    cpio = initramfs.CpioWriter()
    for d in ("dev", "proc", "sys", "suite", "suite/qemu"):
        cpio.directory(d)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("init", repo.VMM_BIN.read_bytes(), executable=True)
    manifest = plan.manifest() + "".join(t.manifest_line() + "\n" for t in tests)
    cpio.file(initramfs.MANIFEST, manifest.encode())
    for g in plan.tests:
        cpio.file(f"suite/{g.name}.bin", g.image.read_bytes())
    for t in tests:
        cpio.file(f"suite/qemu/{t.image.name}", t.image.read_bytes())
    suite = gzip.compress(cpio.finish(), compresslevel=1, mtime=0)
    suite_out.write_bytes(suite)
    out = fs.cpio.parent / "initrd" / f"{hashlib.sha256(suite).hexdigest()[:16]}.img"
    with contextlib.ExitStack() as unheld:
        hold = unheld if hold is None else hold
        for _ in range(3):  # each time round, another run's prune removed it under us
            if f := locks.hold_shared(out):
                hold.enter_context(f)
                with contextlib.suppress(OSError):  # (another user's file)
                    os.utime(out)  # the prune keeps the recently used ones
                return out
            if f := _new_initrd(out, fs.cpio, suite):
                hold.enter_context(f)
                _prune_initrds(out.parent)
                return out
    raise BuildError(out, "other runs removed it three times while this run made it")


def _new_initrd(out: Path, rootfs_cpio: Path, suite: bytes) -> BinaryIO | None:
    """Write out, held from its first byte; None when another run made it first."""
    out.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".tmp")
    f = os.fdopen(fd, "w+b")
    try:
        locks.share(f)
        f.write(rootfs_cpio.read_bytes())
        f.write(suite)
        f.flush()
        os.fsync(fd)  # content-addressed: a torn file after a crash would be trusted
        os.fchmod(fd, 0o644)
        try:
            os.link(tmp, out)  # never replaces: a run holding the one there keeps it
        except FileExistsError:
            f.close()
            return None
        return f
    except BaseException:
        f.close()
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def _prune_initrds(directory: Path, keep: int = KEEP_INITRDS) -> None:
    """Remove all but the keep most recently used initrds, except those a run holds."""
    found = []
    for p in directory.glob("*.img"):
        try:
            found.append((p.stat().st_mtime, p))
        except FileNotFoundError:
            continue
    for _, p in sorted(found)[:-keep]:
        locks.remove_unless_used(p)


# -- verdicts ----------------------------------------------------------------
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
        res.reasons += [f"console: {p.what} (line {p.line_no})" for p in problems]
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
    said = [r.get("line", "") for r in outs if not _GUEST_LINE.match(r.get("line", ""))]
    kev = kernel_trace.events(recs)
    res.metrics = {
        "wall_ms": end.int("wall_ms") if end.get("wall_ms") else None,
        "qemu_start_ms": round((guest["start"][0] - begin.t_ns) / 1e6, 1)
        if "start" in guest
        else None,
        "guest_ms": round((guest["verdict"][0] - guest["start"][0]) / 1e6, 1)
        if "start" in guest and "verdict" in guest
        else None,
        "kt_vtimer_edges": kernel_trace.rises(kev) if kev else None,
        "kt_userspace_exits": sum(e.event == "kvm_userspace_exit" for e in kev) if kev else None,
        "kt_irq_lines": sum(e.event == "kvm_irq_line" for e in kev) if kev else None,
    }
    bad: list[str] = []
    status = end.get("status")
    if status == "vmm-error":
        res.status = ERROR
        res.reasons.append(f"/init could not run QEMU: {end.get('msg', '?')}")
        return res
    if status == "watchdog":
        bad.append(f"QEMU did not finish in {spec.timeout_s:g} s: the watchdog killed it")
    elif status == "vmm-crash":
        bad.append(f"QEMU died of signal {end.get('signal')}")
    elif status == "qemu-exit":
        bad.append(f"QEMU exited with status {end.get('code')}")
    elif status != "ok":
        bad.append(f"unknown end status {status}")
    if bad and said:
        bad.append("QEMU said: " + " | ".join(said[-3:]))
    verdict = guest.get("verdict", (0, ""))[1]
    counts = {k: int(v) for k, v in _KV.findall(verdict)}
    res.metrics |= {k: counts.get(k) for k in ("irqs", "spurious", "early", "max_late_us")}
    if not verdict:
        last = outs[-1].get("line", "") if outs else "nothing"
        bad.append(f"no verdict line from the guest (last output: {last})")
    elif verdict.endswith(" ok"):
        if spec.expect_irqs is not None and counts.get("irqs") != spec.expect_irqs:
            bad.append(f"irqs: expected {spec.expect_irqs}, observed {counts.get('irqs')}")
        if kev and not res.metrics["kt_irq_lines"]:
            bad.append("no kvm_irq_line in the kernel's trace: QEMU never injected an IRQ")
    elif "line" in counts:
        bad.append(f"the guest's check at line {counts['line']} of {spec.source.name} failed")
    else:
        bad.append(f"the guest failed: {verdict}")
    if bad:
        res.reasons += bad
        if res.status != ERROR:
            res.status = FAILED
    return res


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


# -- the VMM's hooks -------------------------------------------------------------
class QemuVmm(Vmm):
    """--vmm qemu: the QEMU tests, and their peers under our VMM in the same boot."""

    name = "qemu"

    def __init__(self, opts: RunOptions, rev: Revision, say: Callable[[str], None]) -> None:
        super().__init__(opts, rev, say)
        self.qemu_tests: list[QemuTest] = []
        self.comparison: list[dict] = []
        self.rootfs: rootfs.Rootfs | None = None

    def suite(self) -> Suite:
        tests = list(load_all().values())
        if self.opts.tests:
            names = {t.name: t for t in tests}
            unknown = [n for n in self.opts.tests if n not in names]
            if unknown:
                raise InputError(
                    None, f"unknown QEMU test '{unknown[0]}' (valid: {', '.join(sorted(names))})"
                )
            tests = [names[n] for n in self.opts.tests]
        abi = self.rev.abi.name
        self.qemu_tests = [t for t in tests if abi in t.abis]
        guests = guest_spec.load_all()
        peers = [guests[p] for p in dict.fromkeys(p for t in self.qemu_tests for p in t.peers)]
        specs = [*peers, *tests]
        runnable = [*(p for p in peers if abi in p.abis), *self.qemu_tests]
        skipped = {
            s.name: skipped_result(
                s,
                f"QEMU does not speak the {abi} ABI"
                if isinstance(s, QemuTest)
                else f"the {abi} ABI cannot express it",
            )
            for s in specs
            if s not in runnable
        }
        return Suite(specs, runnable, skipped)

    def prepare(self, holds: contextlib.ExitStack) -> None:
        """The L1 rootfs with Debian's QEMU, held (no other run prunes it) until the run ends."""
        if not self.qemu_tests:
            return
        fs = self.rootfs = rootfs.build(say=lambda m: self.say(f"# {m}"), hold=holds)
        how = "cached" if fs.cached else f"built in {fs.build_seconds} s"
        self.say(
            f"# rootfs: qemu-system-aarch64 {fs.qemu_version} from Debian {rootfs.ARCH}, "
            f"{len(fs.files)} files, {fs.cpio.stat().st_size >> 20} MiB ({how}, "
            f"{repo.rel(fs.cpio)})"
        )
        self.identity["qemu_vmm"] = {
            "program": QEMU_PROGRAM,
            "machine": MACHINE,
            "qemu_package": f"{rootfs.TOP_PACKAGE}:{rootfs.ARCH} {fs.qemu_version}",
            "rootfs": fs.identity(),
        }

    def initrd(self, runnable: list, out: Path, holds: contextlib.ExitStack) -> Path:
        peers = [s for s in runnable if not isinstance(s, QemuTest)]
        if self.rootfs is None:  # nothing for QEMU to run
            return super().initrd(peers, out, holds)
        self.plan = initramfs.SuitePlan(
            self.rev.abi.name, self.opts.policy, tuple(peers), live=bool(self.opts.fault)
        )
        combined = build_initrd(self.plan, self.qemu_tests, self.rootfs, out, holds)
        self.identity["qemu_vmm"]["initrd"] = repo.rel(combined)
        return combined

    def judge(self, session: Session, spec: object) -> tuple[TestResult, list[str]] | None:
        if not isinstance(spec, QemuTest):
            return None
        parsed = session.stream.parsed
        recs = [r for r in parsed.records if r.test == spec.name]
        res = session.abi_gate.apply(evaluate(spec, recs, parsed.problems_for(spec.name)), parsed)
        results = {r.name: r for r in session.results()}
        cmp = compare(spec, res, results)
        self.comparison.append(cmp)
        return res, [compare_line(cmp)]

    def extra_results(self) -> dict:
        return {"vmm_comparison": self.comparison}
