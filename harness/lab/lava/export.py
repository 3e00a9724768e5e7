"""lava-export: one LAVA job per matrix cell, and the artifacts it deploys."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.boot.suite import suite_bound
from harness.build import debkernel, initramfs, kernel
from harness.build.artifacts import build_artifacts
from harness.core import repo, resultsfile
from harness.core.errors import InputError
from harness.inputs import guest_spec
from harness.inputs import machine as machmod
from harness.inputs import revision as revmod
from harness.outputs import templating
from harness.runs.matrix import spec as matrix_spec

# the console patterns the monitor watches (pexpect regexes on LAVA's side)
PATTERNS = {
    "start": r"@VT1 0 - [0-9]+ boot ",
    "end": r"@VT1 [0-9]+ - [0-9]+ done ",
    "case": r"@VT1 [0-9]+ (?P<test_case_id>[a-z0-9_]+) [0-9]+ end status=(?P<result>[a-z-]+)",
}
# the VMM's end status -> LAVA's result (the model's verdict comes from lava-ingest)
FIXUP = {
    "ok": "pass",
    "guest-fail": "fail",
    "guest-timeout": "fail",
    "watchdog": "fail",
    "vmm-error": "fail",
    "vmm-crash": "fail",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Artifact:
    path: str  # under artifacts/
    url: str
    sha256: str | None
    what: str


def _kernel_artifact(cell: matrix_spec.Cell, out: Path, base_url: str, copy: bool) -> Artifact:
    """The cell's kernel under artifacts/kernels/<id>/ (copied only with copy)."""
    if cell.prebuilt:
        kid, name = cell.source, "Image"
        what = f"Debian {cell.source}:arm64, boot/vmlinuz-* (harness/build/debkernel.py)"
    else:
        bdir = kernel.build_dir(revmod.load(cell.revision), machmod.load(cell.machine), cell.source)
        kid, name = bdir.name, "Image"
        what = f"{cell.revision} on {cell.source} ({repo.rel(bdir)})"
    rel = f"kernels/{kid}/{name}"
    sha = None
    if copy:
        if cell.prebuilt:
            image = debkernel.fetch(cell.source, say=lambda m: None).image
        else:
            image = kernel.build(
                revmod.load(cell.revision),
                machmod.load(cell.machine),
                say=lambda m: print(f"# {m}"),
                source_package=cell.source,
            ).image
        dest = out / "artifacts" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, dest)
        sha = _sha256(dest)
    return Artifact(rel, f"{base_url}/{rel}", sha, what)


def _specs(cell: matrix_spec.Cell) -> list:
    """The cell's guest tests, each with the cell's timeout_s when it has one."""
    specs = guest_spec.select(guest_spec.load_all(), list(cell.tests))
    return guest_spec.with_timeout(specs, cell.timeout_s)


def _initrd_artifact(cell: matrix_spec.Cell, out: Path, base_url: str) -> Artifact:
    rev = revmod.load(cell.revision)
    specs = _specs(cell)
    runnable = tuple(s for s in specs if rev.abi.name in s.abis)
    plan = initramfs.SuitePlan(rev.abi.name, cell.policy, runnable)
    tmp = out / "artifacts" / "initramfs" / f".{cell.name}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    initramfs.build(plan, repo.VMM_BIN, tmp)
    sha = _sha256(tmp)
    rel = f"initramfs/{rev.abi.name}-{cell.policy}-{sha[:12]}.cpio.gz"
    tmp.replace(out / "artifacts" / rel)
    what = f"VMM + {len(runnable)} guest tests, ABI {rev.abi.name}, policy {cell.policy}"
    return Artifact(rel, f"{base_url}/{rel}", sha, what)


def job_for(
    cell: matrix_spec.Cell, matrix_name: str, kernel_art: Artifact, initrd_art: Artifact
) -> str:
    """The LAVA job definition (YAML text) of one cell."""
    mach = machmod.load(cell.machine)
    rev = revmod.load(cell.revision)
    specs = _specs(cell)
    suite_s = suite_bound([s for s in specs if rev.abi.name in s.abis])
    boot_min = 5 if cell.prebuilt else 3
    test_min = max(5, math.ceil((suite_s + 120) / 60))
    machine_arg = f"{mach.machine},virtualization={'on' if mach.virtualization else 'off'}"
    machine_arg += f",gic-version={mach.gic_version}"
    tags = (
        f"vtimer.cell={cell.name} vtimer.rev={cell.revision} "
        f"vtimer.policy={cell.policy} vtimer.machine={mach.name}"
    )
    metadata = {
        "vtimer.cell": cell.name,
        "vtimer.matrix": matrix_name,
        "vtimer.revision": cell.revision,
        "vtimer.source": cell.source,
        "vtimer.machine": mach.name,
        "vtimer.policy": cell.policy,
        "vtimer.tests": ",".join(cell.tests) or "all",
        "vtimer.expect": cell.expect,
    }
    return (
        templating.env()
        .get_template("lava-job.yaml.j2")
        .render(
            matrix=matrix_name,
            cell=cell,
            machine=mach,
            qemu_machine=machine_arg,
            extra_options=[f"-smp {mach.smp}", "-accel tcg", "-no-reboot", *mach.extra_args],
            cmdline=f"{mach.kernel_cmdline} {tags}",
            kernel={"url": kernel_art.url, "sha256": kernel_art.sha256},
            initrd={"url": initrd_art.url, "sha256": initrd_art.sha256},
            timeouts={
                "job": 10 + boot_min + test_min,
                "action": max(10, test_min),
                "boot": boot_min,
                "test": test_min,
            },
            metadata=metadata,
            monitor_name=f"vtimer-{cell.name}",
            patterns=PATTERNS,
            fixup=FIXUP,
        )
    )


def export(
    path: Path,
    out: Path,
    artifact_url: str,
    cells: list[str] | None = None,
    with_kernels: bool = False,
) -> list[Path]:
    """Write jobs/<cell>.yaml (+ artifacts/, artifacts.json) for a matrix file's cells."""
    m = matrix_spec.load(path).select(cells or [])
    if not re.match(r"^[a-z][a-z0-9+.-]*://", artifact_url):
        raise InputError(None, f"--artifact-url must be a URL (scheme://...), not {artifact_url!r}")
    base_url = artifact_url.rstrip("/")
    build_artifacts()
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    arts: dict[str, Artifact] = {}
    jobs = []
    for cell in m.cells:
        k = _kernel_artifact(cell, out, base_url, with_kernels)
        i = _initrd_artifact(cell, out, base_url)
        arts[k.path], arts[i.path] = k, i
        job = out / "jobs" / f"{cell.name}.yaml"
        resultsfile.write_atomic(job, job_for(cell, m.name, k, i))
        jobs.append(job)
    manifest = {
        "matrix": m.name,
        "artifact_url": base_url,
        "note": "upload artifacts/ to artifact_url; kernels without sha256 were not copied "
        "(export with --with-kernels, or copy each build's Image there)",
        "artifacts": [a.__dict__ for a in sorted(arts.values(), key=lambda a: a.path)],
    }
    resultsfile.write_json(out / "artifacts.json", manifest)
    return jobs
