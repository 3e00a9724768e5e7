"""A path to a lab: matrix cells as LAVA jobs, and LAVA's logs judged by our own verdict.

lava-export writes, per cell, a LAVA job (device type qemu; jinja2 template
templates/lava-job.yaml.j2) that deploys the cell's kernel and initramfs
from --artifact-url to tmpfs, boots them with the machine's QEMU arguments
(context: machine, cpu, memory, extra_options) and watches the console with
a monitor test action: one LAVA test case per guest test, from the VMM's
`end` record. The kernel command line carries vtimer.cell/rev/policy/machine
(dotted, so Linux ignores them), so a console log names its own cell. Under
--out: jobs/<cell>.yaml, artifacts/ (the initramfs of each cell; with
--with-kernels the kernels too) and artifacts.json (what to upload where).

lava-ingest takes the job's log as LAVA stores it (its YAML/JSON job log,
a list of {dt, lvl, msg}: the lvl 'target' lines are the console) or a raw
console log, and runs our record parser and the revision's model over it,
exactly as a local run would: results/<run-id>/ gets results.json, junit.xml,
ktap.txt, report.html. Layer 0 (QEMU's trace) does not exist in a lab.

Validation: LAVA's own schema (lava_common.schemas.validate). lava-common is
not on PyPI; Debian packages it (lava-common, bookworm 2023.01), so
lava_common_path() fetches it like the prebuilt kernels (apt-get download,
dpkg-deb -x into build/lava-common/) and imports it from there; its one
dependency, voluptuous, comes from PyPI (pyproject's lava/dev extras).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.boot.suite import suite_bound
from harness.build import debkernel, initramfs, kernel
from harness.build.artifacts import build_artifacts
from harness.core import repo, resultsfile, yamlfile
from harness.core.errors import HarnessError, InputError
from harness.inputs import guest_spec
from harness.inputs import machine as machmod
from harness.inputs import revision as revmod
from harness.inputs.options import RunOptions
from harness.outputs import templating
from harness.runs import offline
from harness.runs.matrix import spec as matrix_spec

LAVA_COMMON = repo.BUILD / "lava-common"
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
TAG = re.compile(r"\bvtimer\.(cell|rev|policy|machine)=(\S+)")


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


def _initrd_artifact(cell: matrix_spec.Cell, out: Path, base_url: str) -> Artifact:
    rev = revmod.load(cell.revision)
    specs = guest_spec.select(guest_spec.load_all(), list(cell.tests))
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
    specs = guest_spec.select(guest_spec.load_all(), list(cell.tests))
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
    return templating.ENV.get_template("lava-job.yaml.j2").render(
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


# -- LAVA's own schema -----------------------------------------------------------


def lava_common_path() -> Path:
    """A directory to import lava_common from: Debian's lava-common, unpacked once."""
    top = LAVA_COMMON
    pkg = top / "x" / "usr" / "lib" / "python3" / "dist-packages"
    with kernel.locked(repo.BUILD / ".lava-common.lock"):
        if (pkg / "lava_common" / "schemas" / "__init__.py").is_file():
            return pkg
        shutil.rmtree(top, ignore_errors=True)
        top.mkdir(parents=True)
        r = subprocess.run(
            ["apt-get", "download", "-q", "lava-common"], cwd=top, capture_output=True, text=True
        )
        debs = sorted(top.glob("lava-common_*.deb"))
        if r.returncode or not debs:
            raise HarnessError(
                None, f"apt-get download lava-common failed: {r.stderr.strip()[-300:]}"
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(top / "x")], check=True)
    return pkg


def validate(job_text: str) -> None:
    """Validate a job with LAVA's own schema (strict); raises HarnessError naming the path."""
    try:
        from lava_common.schemas import validate as lava_validate
    except ImportError:
        sys.path.insert(0, str(lava_common_path()))
        from lava_common.schemas import validate as lava_validate
    import voluptuous

    data = yaml.safe_load(job_text)
    try:
        lava_validate(data, strict=True, extra_context_variables=[])
    except voluptuous.Invalid as e:
        raise HarnessError(None, f"LAVA schema: {e}") from None


# -- ingest ----------------------------------------------------------------------


def console_lines(path: Path) -> tuple[list[str], str]:
    """The console lines of a LAVA job log (YAML or JSON list of {dt, lvl, msg}) or of a
    raw console log, either maybe gzip'ed (.gz); returns (lines, what the file was)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", errors="replace") as f:
            text = f.read()
    else:
        text = path.read_text(errors="replace")
    data = None
    if text.lstrip().startswith(("-", "[")):
        try:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            data = yaml.load(text, Loader=loader)
        except yaml.YAMLError:
            data = None
    if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        if any("lvl" in d and "msg" in d for d in data):
            lines = []
            for d in data:
                if d.get("lvl") == "target":
                    msg = d.get("msg", "")
                    lines += msg.splitlines() if isinstance(msg, str) else [str(msg)]
            return lines, "LAVA job log"
        if any("result" in d for d in data):
            raise InputError(
                path,
                "this is LAVA's list of test results: lava-ingest needs the job's log "
                "(its output.yaml) or the raw console log, to judge the records itself",
            )
    return text.splitlines(), "console log"


def _job_metadata(job: Path | None) -> dict:
    if job is None:
        return {}
    data = yamlfile.load(job) if job.suffix in (".yaml", ".yml") else json.loads(job.read_text())
    return dict(data.get("metadata") or {})


def ingest(
    log: Path,
    results_base: Path = repo.RESULTS,
    job: Path | None = None,
    rev: str | None = None,
    machine: str | None = None,
    policy: str | None = None,
    say=None,
):
    """Judge a LAVA job's console into results/<run-id>/ as a local run would."""
    lines, kind = console_lines(log)
    console = offline.Console.of(lines, log)
    meta = _job_metadata(job)
    tags: dict[str, str] = {}
    for line in lines:
        if "Kernel command line:" in line:
            tags |= dict(TAG.findall(line))
    first_begin = console.first_begin
    rev = rev or meta.get("vtimer.revision") or tags.get("rev") or first_begin.get("abi")
    if not rev:
        raise InputError(log, "no revision: give --rev or --job (the log names none)")
    policy = policy or meta.get("vtimer.policy") or tags.get("policy")
    policy = policy or first_begin.get("policy") or "every-exit"
    machine = machine or meta.get("vtimer.machine") or tags.get("machine") or "virt-gicv3"
    tests = meta.get("vtimer.tests", "all")
    names = [] if tests == "all" else tests.split(",")
    if not names and console.done and not meta:  # a subset ran: judge what the suite ran
        names = list(dict.fromkeys(console.began))
    emit = say or (lambda text: print(text, flush=True))
    opts = RunOptions(
        revision=rev, machine=machine, policy=policy, tests=names, results_base=results_base
    )
    ident = {
        "lava": {
            "log": log.name,
            "log_kind": kind,
            "cell": meta.get("vtimer.cell") or tags.get("cell"),
            "job_metadata": meta,
        },
        "kernel": {"release": None, "prebuilt": True, "source": "LAVA"},
    }
    return offline.judge(
        console,
        opts,
        emit,
        identity=ident,
        header=f" (ingested from LAVA: {log.name})",
        copies=[(log, f"lava-{log.name}")],
    )


# -- a local stand-in for LAVA's dispatcher (qemu device type) ---------------------


def qemu_argv(job: dict, files: dict[str, Path]) -> list[str]:
    """The QEMU command LAVA's qemu device type runs for job (etc/dispatcher-config/
    device-types/qemu.jinja2 for arm64: -cpu, -machine, -nographic, a user-mode NIC,
    -m, -monitor none, the context's extra_options, then each image's image_arg),
    with each image's URL replaced by the local file in files."""
    import shlex

    ctx = job["context"]
    argv = [
        machmod.QEMU_BINARY,
        "-cpu", str(ctx.get("cpu", "cortex-a57")),
        "-machine", str(ctx.get("machine", "virt")),
        "-nographic",
        "-net", "nic,model=virtio,macaddr=52:54:00:12:34:58",
        "-net", "user",
        "-m", str(ctx.get("memory", 512)),
        "-monitor", "none",
    ]  # fmt: skip
    for opt in ctx.get("extra_options", []):
        argv += shlex.split(str(opt))
    deploy = next(a["deploy"] for a in job["actions"] if "deploy" in a)
    paths = {name: str(files[img["url"]]) for name, img in deploy["images"].items()}
    for img in deploy["images"].values():
        argv += shlex.split(img["image_arg"].format(**paths))
    return argv


def monitor_cases(job: dict, lines: list[str]) -> list[dict]:
    """The test cases LAVA's monitor action would record from these console lines."""
    test = next(a["test"] for a in job["actions"] if "test" in a)
    cases = []
    for mon in test["monitors"]:
        started = False
        for line in lines:
            if not started:
                started = re.search(mon["start"], line) is not None
                continue
            if re.search(mon["end"], line):
                break
            if m := re.search(mon["pattern"], line):
                result = mon.get("fixupdict", {}).get(m["result"], m["result"])
                cases.append({"suite": mon["name"], "name": m["test_case_id"], "result": result})
    return cases


def run_job_locally(
    job_text: str, files: dict[str, Path], log: Path, timeout_s: float = 300
) -> list[dict]:
    """Run a job's QEMU as LAVA's dispatcher would and write the job log as LAVA keeps
    it (a YAML list of {dt, lvl, msg}; the console at lvl target). Returns the monitor's
    test cases. For checking an exported job end to end without a lab."""
    import datetime

    job = yaml.safe_load(job_text)
    argv = qemu_argv(job, files)

    def now() -> str:
        return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")

    entries = [
        {"dt": now(), "lvl": "info", "msg": f"start: local dispatch of {job['job_name']}"},
        {"dt": now(), "lvl": "debug", "msg": "qemu: " + " ".join(argv)},
    ]
    try:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s)
        console = out.stdout.decode(errors="replace")
        end = f"qemu exited with {out.returncode}"
    except subprocess.TimeoutExpired as e:
        console = (e.stdout or b"").decode(errors="replace")
        end = f"timed out after {timeout_s} s"
    lines = [line.rstrip("\r") for line in console.splitlines()]
    entries += [{"dt": now(), "lvl": "target", "msg": line} for line in lines]
    cases = monitor_cases(job, lines)
    entries += [
        {"dt": now(), "lvl": "results", "msg": {"definition": c["suite"], **c}} for c in cases
    ]
    entries.append({"dt": now(), "lvl": "info", "msg": end})
    log.write_text(yaml.safe_dump(entries, sort_keys=False, width=1 << 16))
    return cases
