"""QEMU as a second VMM under test (boot-test --vmm qemu).

QEMU is the production consumer of the upstream ABI: with `-accel kvm -M
virt,gic-version=2,kernel-irqchip=off` its kvm_arch_post_run() copies
run->s.regs.device_irq_level into the timer outputs wired to its emulated
GICv2, which raises the vCPU's IRQ with KVM_IRQ_LINE. Debian's arm64
qemu-system-aarch64 (harness/build/rootfs.py) goes into the L1 initramfs; /init
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

from dataclasses import dataclass
from pathlib import Path

from harness.core import repo, yamlfile
from harness.core.errors import InputError
from harness.inputs import guest_spec

QEMU_TESTS = repo.GUEST_TESTS / "qemu"
QEMU_GUEST_BINS = repo.BUILD / "qemu-guests"
# where the L1 rootfs has Debian's QEMU (build/rootfs.py takes it from here)
QEMU_PROGRAM = "/usr/bin/qemu-system-aarch64"
MACHINE = "virt,gic-version=2,kernel-irqchip=off"
MANIFEST_LINE_MAX = 500  # vmm/init.c reads 512-byte lines


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
