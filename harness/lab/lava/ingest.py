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

TAG = re.compile(r"\bvtimer\.(cell|rev|policy|machine)=(\S+)")


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
