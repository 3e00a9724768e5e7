"""KCIDB (KernelCI's common report database) JSON of a run or a matrix run.

`harness kcidb <run dir or matrix run dir>`: a checkout per kernel source and
patch series (the revision's `series`: `patchset_hash` as KCIDB defines it, the
sha256 over each patch's sha256, newline-terminated, in order), a build per
kernel (its cache key; a prebuilt Debian kernel by package and version; a build
that failed by its run: FAIL, or no status when the series did not apply and
the checkout is not `valid`), and a test per guest test (`vtimer.<test>`) and per
property (`vtimer.<test>.<property>`), each with the machine and the VMM policy
as its environment. Statuses, honestly: a test's PASS/FAIL/ERROR/SKIP/MISS are
KCIDB's own; a property's pass is PASS, fail FAIL, skip SKIP (not exercised:
not applicable), not-judged MISS (the check did not run for want of evidence:
the code's status is unknown, and KCIDB ranks MISS above PASS, so a summary is
never a pass for it), n/a DONE (the model promises nothing: what the kernel did
is recorded, no verdict). The reasons are each test's `comment` and
`log_excerpt`; `misc` keeps the harness's own words (status, metrics, record).

The schema is KCIDB's own, from kcidb-io (PyPI): validate() checks a report
against it when kcidb-io is installed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.status import PropStatus, Status

ORIGIN = "vtimer_harness"
VERSION = {"major": 5, "minor": 3}  # the KCIDB I/O schema written (kcidb-io's LATEST)
LOG_EXCERPT_CHARS = 16384  # KCIDB's maxLength of a log_excerpt

TEST_STATUS = {s: str(s) for s in Status}  # KCIDB has the same five
PROP_STATUS = {
    PropStatus.PASS: "PASS",
    PropStatus.FAIL: "FAIL",
    PropStatus.SKIP: "SKIP",
    PropStatus.NOT_JUDGED: "MISS",
    PropStatus.NA: "DONE",
}


@dataclass(frozen=True)
class Run:
    """One run's results.json, and the matrix cell it was (None: a lone run)."""

    results: dict
    cell: dict | None = None

    @property
    def identity(self) -> dict:
        return self.results.get("identity") or {}

    @property
    def kernel(self) -> dict:
        return self.identity.get("kernel") or (self.cell or {}).get("kernel") or {}


def runs(path: Path) -> Iterator[Run]:
    """The runs of a run directory (results.json) or a matrix run (matrix.json)."""
    if (path / "matrix.json").is_file():
        matrix = _json(path / "matrix.json")
        for cell in matrix.get("cells", []):
            if cell.get("run_dir"):
                yield Run(_json(path / cell["run_dir"] / "results.json"), cell)
        return
    if (path / "results.json").is_file():
        yield Run(_json(path / "results.json"))
        return
    raise HarnessError(str(path), "neither a run (results.json) nor a matrix run (matrix.json)")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise HarnessError(str(path), f"cannot read: {e}") from e


def _id(*parts: object) -> str:
    return f"{ORIGIN}:" + ":".join(str(p) for p in parts)


def _path_part(name: str) -> str:
    """A KCIDB path component: letters, digits, '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "_"


def _excerpt(lines: list[str]) -> str:
    return "\n".join(lines)[:LOG_EXCERPT_CHARS]


def patchset_hash(patches: dict[str, str]) -> str:
    """KCIDB's patchset_hash: sha256 over each patch's sha256 and a newline, in
    series order; empty for no patches."""
    if not patches:
        return ""
    return hashlib.sha256("".join(f"{h}\n" for h in patches.values()).encode()).hexdigest()


def _source(run: Run) -> str:
    return run.kernel.get("source") or (run.cell or {}).get("source") or "unknown"


def checkout(run: Run) -> dict:
    ident = run.identity
    patches = ident.get("patches") or run.kernel.get("patches") or {}
    source = _source(run)
    phash = patchset_hash(patches)
    rev = ident.get("revision") or (run.cell or {}).get("revision") or "unknown"
    out = {
        "id": _id("checkout", source.replace(" ", "_"), phash[:16] or "no-patches"),
        "origin": ORIGIN,
        "tree_name": source.split()[0],
        "patchset_hash": phash,
        "comment": f"{source} + {rev}'s series ({len(patches)} patch(es))",
        "misc": {
            "revision": rev,
            "provenance": ident.get("provenance"),
            "model": ident.get("model"),
            "kernel_source": source,
            "patches": patches,
        },
    }
    error = ident.get("error") or ""
    if "does not apply" in error:
        out["valid"] = False
        out["log_excerpt"] = error[:LOG_EXCERPT_CHARS]
    elif run.kernel.get("image") or run.kernel.get("release"):
        out["valid"] = True
    return out


def build(run: Run, checkout_id: str) -> dict:
    k, ident = run.kernel, run.identity
    if k.get("key"):
        bid = _id("build", k["key"])
    elif k.get("package"):
        bid = _id("build", k["package"], k.get("version", ""))
    else:
        bid = _id("build", run.results.get("run_id", "unknown"))
    frags = ident.get("machine", {}).get("kernel_fragments") or k.get("config_fragments") or []
    out = {
        "id": bid,
        "checkout_id": checkout_id,
        "origin": ORIGIN,
        "architecture": "arm64",
        "config_name": "debian"
        if k.get("prebuilt") and k.get("package")
        else ("+".join(Path(f).stem for f in frags) or "unknown"),
        "misc": {
            key: k[key]
            for key in ("release", "source", "key", "image", "cached", "prebuilt", "package")
            if key in k
        },
    }
    if k.get("release"):
        out["comment"] = f"Linux {k['release']} ({k.get('source', '?')})"
    if k.get("build_seconds") is not None:
        out["duration"] = k["build_seconds"]
    if k.get("image") or k.get("release"):
        out["status"] = "PASS"
    elif error := ident.get("error"):
        # a series that does not apply never built (the checkout is not valid): no status
        if "does not apply" not in error:
            out["status"] = "FAIL"
        out["log_excerpt"] = error[:LOG_EXCERPT_CHARS]
    return out


def _environment(run: Run) -> dict:
    ident = run.identity
    mach = ident.get("machine") or {}
    name = mach.get("name") or (run.cell or {}).get("machine") or "unknown"
    policy = ident.get("policy") or (run.cell or {}).get("policy")
    misc = {"machine": name, "policy": policy, "vmm": ident.get("vmm")}
    if run.cell:
        misc["cell"] = run.cell.get("name")
    comment = f"QEMU {name} ({mach.get('description', '?')}), VMM policy {policy}"
    return {"comment": comment, "misc": misc}


def tests(run: Run, build_id: str) -> list[dict]:
    """A KCIDB test per guest test and per property of it."""
    out = []
    run_id = run.results.get("run_id") or (run.cell or {}).get("run_dir") or "unknown"
    env = _environment(run)
    for t in run.results.get("tests", []):
        name = _path_part(t["name"])
        reasons = t.get("reasons") or []
        test = {
            "id": _id("test", run_id, name),
            "build_id": build_id,
            "origin": ORIGIN,
            "path": f"vtimer.{name}",
            "status": TEST_STATUS.get(t["status"], "ERROR"),
            "environment": env,
            "misc": {
                "run_id": run_id,
                "status": t["status"],
                "metrics": t.get("metrics") or {},
                "dropped": t.get("dropped") or {},
            },
        }
        if reasons:
            test["comment"] = "; ".join(reasons)
            test["log_excerpt"] = _excerpt(reasons)
        out.append(test)
        for p in t.get("properties") or []:
            out.append(_property(run_id, name, build_id, env, p))
    return out


def _property(run_id: str, test: str, build_id: str, env: dict, p: dict) -> dict:
    prop = _path_part(p["prop"])
    line = f"{p['prop']}: {p.get('detail', '')}"
    if p.get("expected") is not None:
        line += f": expected {p['expected']}, observed {p.get('observed')}"
    return {
        "id": _id("test", run_id, test, prop),
        "build_id": build_id,
        "origin": ORIGIN,
        "path": f"vtimer.{test}.{prop}",
        "status": PROP_STATUS.get(p["status"], "ERROR"),
        "environment": env,
        "comment": line,
        "log_excerpt": line[:LOG_EXCERPT_CHARS],
        "misc": {k: p.get(k) for k in ("status", "seq", "expected", "observed")},
    }


def report(path: Path) -> dict:
    """The KCIDB report of a run or matrix run directory."""
    data: dict = {"version": dict(VERSION), "checkouts": [], "builds": [], "tests": []}
    seen: set[str] = set()
    for run in runs(path):
        c = checkout(run)
        b = build(run, c["id"])
        for kind, obj in (("checkouts", c), ("builds", b)):
            if obj["id"] not in seen:
                seen.add(obj["id"])
                data[kind].append(obj)
        data["tests"] += tests(run, b["id"])
    return data


def validate(data: dict) -> str | None:
    """Check data against KCIDB's own schema (kcidb-io); the version checked, or
    None when kcidb-io is not installed. Raises on an invalid report."""
    try:
        from kcidb_io import schema
    except ImportError:
        return None
    import jsonschema

    try:
        schema.LATEST.validate(data)
    except jsonschema.exceptions.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        raise HarnessError(None, f"the KCIDB report is not valid at {where}: {e.message}") from e
    return f"v{schema.LATEST.major}.{schema.LATEST.minor}"
