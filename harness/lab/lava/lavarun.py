"""LAVA's own dispatcher (lava-run, Debian's lava-dispatcher) on an exported job.

The device configuration is what a LAVA server would hand its worker for a qemu
device: LAVA's own device-type template (qemu.jinja2 and its base.jinja2, from
Debian's lava-server package: apt-get download, dpkg-deb -x into
build/lava-server/, never installed) rendered with the job's context, as the
server does (a sandboxed jinja2 environment, trim_blocks). lava-run then deploys the
job's images (file:// URLs resolve locally), boots QEMU and runs the monitor; its
job log (stderr) is JSON lines, {dt, lvl, msg} each, which lava-ingest reads.

Run as root (lava-run refuses otherwise). Each run has its own dispatcher prefix, so
runs side by side do not share lava-run's /var/lib/lava/dispatcher/tmp/<id>/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from jinja2 import FileSystemLoader
from jinja2.sandbox import SandboxedEnvironment

from harness.core import repo
from harness.core.errors import HarnessError
from harness.lab.lava import ingest
from harness.lab.lava import schema as lava_schema

LAVA_SERVER = repo.BUILD / "lava-server"
_TEMPLATES = Path("usr/share/lava-server/device-types")
# the margin past the job's own timeout (lava-run enforces that one) before we kill it
MARGIN_S = 60
# after SIGTERM, how long lava-run has to cancel the job (end QEMU, clean up)
CANCEL_S = 15


def device_types_dir() -> Path:
    """LAVA's device-type templates: Debian's lava-server, downloaded and unpacked once."""

    def ready(root: Path) -> bool:
        return all((root / _TEMPLATES / f).is_file() for f in ("qemu.jinja2", "base.jinja2"))

    return lava_schema.unpacked_deb("lava-server", LAVA_SERVER, ready) / _TEMPLATES


def device_config(job: dict, device_type: str | None = None) -> str:
    """The device configuration (YAML text) a LAVA server renders for this job: the
    device type's template with the job's context as its variables."""
    dtype = device_type or job.get("device_type", "qemu")
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(device_types_dir())), autoescape=False, trim_blocks=True
    )
    # a device dictionary that only extends its type, as a lab's qemu device does
    text = env.from_string(f"{{% extends '{dtype}.jinja2' %}}\n").render(**job.get("context", {}))
    yaml.safe_load(text)  # LAVA loads it too: a template error shows here, not in lava-run
    return text


def lava_run_binary() -> str:
    """lava-run's path; a one-line error when lava-dispatcher is not installed."""
    path = shutil.which("lava-run")
    if path is None:
        raise HarnessError(
            None,
            "lava-run not found: install Debian's lava-dispatcher "
            "(apt-get install lava-dispatcher, or scripts/install-deps.sh)",
        )
    return path


@dataclass
class LavaRun:
    """One lava-run of a job: its JSON-lines log, and what LAVA made of it."""

    log: Path  # lava-run's job log (JSON lines)
    device: Path  # the device configuration it ran with
    returncode: int | None  # None: killed at our deadline
    elapsed_s: float
    cases: list[dict] = field(default_factory=list)  # the job's test cases, in order
    job_result: str | None = None  # LAVA's own: the 'job' case of definition 'lava'
    error: str | None = None  # the job's error, as LAVA logged it

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.job_result == "pass"


def _deadline(job: dict) -> float:
    minutes = ((job.get("timeouts") or {}).get("job") or {}).get("minutes", 30)
    return float(minutes) * 60 + MARGIN_S


def _descendants(pid: int) -> list[int]:
    """pid's descendants (from /proc): QEMU runs in a session of its own (pexpect's
    pty), out of reach of a signal to lava-run's process group."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _wait(proc: subprocess.Popen, deadline_s: float) -> int | None:
    """lava-run's exit code, or None when it outlived deadline_s: then SIGTERM (LAVA
    cancels the job: ends QEMU, cleans up), and SIGKILL for all of them if it hangs."""
    try:
        return proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=CANCEL_S)
        return None
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *_descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return None


def run(
    job_path: Path, out: Path, timeout_s: float | None = None, job_id: int | None = None
) -> LavaRun:
    """lava-run the job with the device configuration its context renders, under out/
    (device.yaml, dispatcher.yaml, lava-run/ (its output dir), job-log.jsonl). Killed
    (with its QEMU) past timeout_s (default: the job's own timeout and a minute)."""
    binary = lava_run_binary()
    job = yaml.safe_load(job_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    device = out / "device.yaml"
    device.write_text(device_config(job))
    dispatcher = out / "dispatcher.yaml"
    dispatcher.write_text(yaml.safe_dump({"prefix": f"vtimer-{os.getpid()}-{time.time_ns()}-"}))
    log = out / "job-log.jsonl"
    jid = job_id if job_id is not None else 1
    argv = [binary, "--job-id", str(jid), "--output-dir", str(out / "lava-run")]
    argv += ["--device", str(device), "--dispatcher", str(dispatcher), str(job_path)]
    deadline_s = timeout_s if timeout_s is not None else _deadline(job)
    t0 = time.monotonic()
    with log.open("wb") as f:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True
        )
        code = _wait(proc, deadline_s)
    elapsed = time.monotonic() - t0
    result = LavaRun(log, device, code, elapsed)
    if code is None:
        entry = {"dt": "", "lvl": "error", "msg": f"killed after {deadline_s:g} s (deadline)"}
        with log.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        result.error = entry["msg"]
    for e in ingest.log_entries(log.read_text(errors="replace")):
        msg = e.get("msg")
        if e["lvl"] == "results" and isinstance(msg, dict):
            if msg.get("definition") == "lava":
                if msg.get("case") == "job":
                    result.job_result = msg.get("result")
                    result.error = result.error or (msg.get("extra") or {}).get("error_msg")
            else:
                result.cases.append(
                    {"suite": msg["definition"], "name": msg["case"], "result": msg["result"]}
                )
    return result


def main(argv: list[str] | None = None) -> int:
    """python -m harness.lab.lava.lavarun JOB OUT: lava-run a job, print its test cases."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.lab.lava.lavarun JOB.yaml OUT-DIR", file=sys.stderr)
        return 2
    try:
        r = run(Path(args[0]), Path(args[1]))
    except HarnessError as e:
        print(f"lavarun: {e}", file=sys.stderr)
        return 2
    for c in r.cases:
        print(f"{c['result']:5} {c['name']}")
    print(f"# lava-run: job {r.job_result} in {r.elapsed_s:.1f} s, log {r.log}")
    if r.error:
        print(f"# lava-run: {r.error}")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
