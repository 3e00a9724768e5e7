"""Machine configs (qemu_configs/<name>.yaml) and the QEMU command they render to."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from harness.core import repo, yamlfile
from harness.core.errors import InputError

QEMU_BINARY = "qemu-system-aarch64"
FRAGMENTS = repo.QEMU_CONFIGS / "fragments"
# the records channel: a virtio-serial port the VMM finds by this name (vmm/record.c)
RECORDS_PORT = "vt.records"


@dataclass(frozen=True)
class MachineConfig:
    name: str
    description: str
    machine: str
    virtualization: bool
    gic_version: int
    cpu: str
    smp: int
    memory_mb: int
    kernel_cmdline: str
    kernel_fragments: tuple[Path, ...]
    extra_args: tuple[str, ...] = ()

    def qemu_argv(
        self,
        kernel: Path,
        initrd: Path,
        qmp_socket: Path | None,
        trace_log: Path | None = None,
        records: Path | None = None,
        trace_events: tuple[str, ...] = (),
    ) -> list[str]:
        """The QEMU command line, serial on stdio, the records port into records.

        With qmp_socket: QMP on that unix socket (the machine runs at once; the
        harness asks QMP what it needs meanwhile), and with trace_log the
        trace_events patterns on from the first instruction (-trace enable=), logged
        there. Without: the same machine to rerun by hand. records is a file
        (records.log in the current directory unless given) the harness follows.
        """
        machine = f"{self.machine},virtualization={'on' if self.virtualization else 'off'}"
        machine += f",gic-version={self.gic_version}"
        argv = [
            QEMU_BINARY,
            "-M", machine,
            "-cpu", self.cpu,
            "-smp", str(self.smp),
            "-m", str(self.memory_mb),
            "-accel", "tcg",
            "-nographic",
            "-no-reboot",
            "-nic", "none",
            "-monitor", "none",
            "-serial", "stdio",
            "-kernel", str(kernel),
            "-initrd", str(initrd),
            "-append", self.kernel_cmdline,
        ]  # fmt: skip
        # a file chardev only writes (a pipe chardev would read its own records back)
        argv += [
            "-device", "virtio-serial-device",
            "-chardev", f"file,id=vtrec,path={_opt(str(records or 'records.log'))}",
            "-device", f"virtserialport,chardev=vtrec,name={RECORDS_PORT}",
        ]  # fmt: skip
        if qmp_socket is not None:
            argv += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
        if trace_log is not None:
            # timestamp=on prefixes each trace line with the thread id: the L1 CPU
            argv += ["-D", str(trace_log), "-msg", "timestamp=on"]
            for pattern in trace_events:
                argv += ["-trace", f"enable={pattern}"]
        return argv + list(self.extra_args)


def _opt(value: str) -> str:
    """value inside a QEMU option list (a ',' in it is written ',,')."""
    return value.replace(",", ",,")


def shell_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def available() -> list[str]:
    return sorted(p.stem for p in repo.QEMU_CONFIGS.glob("*.yaml"))


def _check_name(path: Path, data: yamlfile.LineDict) -> None:
    """The name is the file's name (matrix cells and results are named by it)."""
    name = data["name"]
    if "/" in name:
        raise InputError(path, f"name '{name}' must not hold a '/'", line=data.lines["name"])
    if name != path.stem:
        raise InputError(
            path,
            f"name '{name}' must match the file name '{path.stem}'",
            line=data.lines["name"],
        )


def _fragment(path: Path, data: yamlfile.LineDict, frag: object) -> Path:
    """A kernel fragment: next to the machine file first (a user's own config), then the
    shipped ones; never outside those two directories."""
    line = data.lines["kernel_fragments"]
    if not isinstance(frag, str) or not frag:
        raise InputError(
            path, f"kernel_fragments: {frag!r} is not a fragment's file name", line=line
        )
    bases = (path.parent, FRAGMENTS)
    candidates = [base / frag for base in bases if repo.inside(base, base / frag)]
    if not candidates:
        raise InputError(
            path,
            f"kernel fragment '{frag}' lies outside {repo.rel(path.parent)} "
            f"and {repo.rel(FRAGMENTS)}",
            line=line,
        )
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise InputError(
            path,
            f"kernel fragment '{frag}' not found next to it or in {repo.rel(FRAGMENTS)}",
            line=line,
        )
    return found


def load(name_or_path: str) -> MachineConfig:
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        path = repo.QEMU_CONFIGS / f"{name_or_path}.yaml"
        if not path.is_file():
            raise InputError(
                None, f"unknown machine '{name_or_path}' (valid: {', '.join(available())})"
            )
    data = yamlfile.load(path)
    fields = {
        "name": str,
        "description": str,
        "machine": str,
        "virtualization": bool,
        "gic_version": int,
        "cpu": str,
        "smp": int,
        "memory_mb": int,
        "kernel_cmdline": str,
        "kernel_fragments": list,
    }
    yamlfile.check_keys(path, data, set(fields), {"extra_args"})
    for key, kind in fields.items():
        yamlfile.expect_type(path, data, key, kind)
    if data["gic_version"] not in (2, 3):
        raise InputError(path, "gic_version must be 2 or 3", line=data.lines["gic_version"])
    _check_name(path, data)
    for key in ("smp", "memory_mb"):
        if data[key] < 1:
            raise InputError(path, f"key '{key}' must be at least 1", line=data.lines[key])
    fragments = [_fragment(path, data, frag) for frag in data["kernel_fragments"]]
    extra = data.get("extra_args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise InputError(
            path, "extra_args must be a list of strings", line=data.lines.get("extra_args")
        )
    return MachineConfig(
        name=data["name"],
        description=data["description"],
        machine=data["machine"],
        virtualization=data["virtualization"],
        gic_version=data["gic_version"],
        cpu=data["cpu"],
        smp=data["smp"],
        memory_mb=data["memory_mb"],
        kernel_cmdline=data["kernel_cmdline"],
        kernel_fragments=tuple(fragments),
        extra_args=tuple(extra),
    )
