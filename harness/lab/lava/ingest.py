"""lava-ingest: a LAVA job's log (or a raw console) judged as a local run would."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import yaml

from harness.core import repo, yamlfile
from harness.core.errors import InputError
from harness.inputs.options import RunOptions
from harness.runs import offline

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TAG = re.compile(r"\bvtimer\.(cell|rev|policy|machine)=(\S+)")


def log_entries(text: str) -> list[dict]:
    """lava-run's job log, one {dt, lvl, msg} a line (JSON; YAML flow where LAVA's dumper
    tags a value, e.g. `"size": ! "5498888"`); other lines (a traceback on lava-run's
    stderr) are left out."""
    entries = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            try:
                d = yaml.load(line, Loader=_LOADER)
            except yaml.YAMLError:
                continue
        if isinstance(d, dict) and "lvl" in d:
            entries.append(d)
    return entries


def _target_lines(entries: list) -> list[str]:
    """The console: the lvl 'target' messages, and 'feedback' ones (what the serial
    said after the test action ended, read while the job finalizes: on a loaded
    host the suite's last records, its done record among them, come there).

    LAVA's dispatcher escapes each '"' of the console as '\\"'
    (lava_dispatcher/shell.py ShellLogger, "for YAML syntax") and the log keeps it
    so; every '\\"' of a message is such a '"' (an inserted backslash precedes
    each '"'), so replacing them all undoes it exactly, and the VMM's records
    (msg="..." of a kt record) keep their CRC. ('\r' and ESC it drops for good.)"""
    lines = []
    for d in entries:
        if d.get("lvl") in ("target", "feedback"):
            msg = d.get("msg", "")
            msg = msg.replace('\\"', '"') if isinstance(msg, str) else str(msg)
            lines += msg.splitlines()
    return lines


def console_lines(path: Path) -> tuple[list[str], str]:
    """The console lines of a LAVA job log (the server's YAML or JSON list of {dt, lvl,
    msg}, or lava-run's JSON lines) or of a raw console log, either maybe gzip'ed (.gz);
    returns (lines, what the file was)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", errors="replace") as f:
            text = f.read()
    else:
        text = path.read_text(errors="replace")
    head = text.lstrip()
    if head.startswith("{") and (entries := log_entries(text)):
        return _target_lines(entries), "lava-run job log"
    if head.startswith("- {"):  # the server's output.yaml: a flow mapping a line
        flows = "\n".join(x[2:] for x in text.splitlines() if x.startswith("- {"))
        if entries := log_entries(flows):
            return _target_lines(entries), "LAVA job log"
    data = None
    if head.startswith(("-", "[")):
        try:
            data = yaml.load(text, Loader=_LOADER)
        except yaml.YAMLError:
            data = None
    if isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        if any("lvl" in d and "msg" in d for d in data):
            return _target_lines(data), "LAVA job log"
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
