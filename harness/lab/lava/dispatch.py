"""A local stand-in for LAVA's dispatcher (qemu device type): run an exported job
with the QEMU command LAVA would, and its monitor's test cases."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from harness.inputs import machine as machmod


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
