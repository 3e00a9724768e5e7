"""`harness kcidb`: a run's and a matrix run's results as KCIDB JSON, validated
with kcidb-io's own schema (PyPI), on a recorded run judged by `harness parse`,
on a recorded matrix run (tests/data/diff-nightly.tar.gz) and on one the
matrix runner writes with its boots faked (tests/test_matrix.py's fakes)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from conftest import DATA
from recorded import judged
from test_matrix import FakeBoots, fake_kernels, write  # noqa: F401  (fake_kernels: a fixture)

from harness import cli
from harness.core.errors import HarnessError
from harness.lab import kcidb
from harness.runs.matrix import scheduler, spec

kcidb_io = pytest.importorskip("kcidb_io")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _valid(data: dict) -> None:
    kcidb_io.schema.LATEST.validate(data)
    assert kcidb_io.schema.LATEST.is_compatible_exactly(data)


def _by_path(data: dict) -> dict[str, dict]:
    return {t["path"]: t for t in data["tests"]}


def test_a_recorded_run_is_valid_kcidb_with_a_test_per_test_and_property(tmp_path, capsys):
    run_dir = judged(tmp_path, "upstream-nointr")
    out = tmp_path / "kcidb.json"
    assert cli.main(["kcidb", str(run_dir), "-o", str(out)]) == 0
    assert "(valid KCIDB v" in capsys.readouterr().err
    data = json.loads(out.read_text())
    _valid(data)
    results = json.loads((run_dir / "results.json").read_text())
    ((checkout,), (build,)) = data["checkouts"], data["builds"]
    ident = results["identity"]
    assert checkout["misc"]["revision"] == "upstream-nointr"
    assert checkout["misc"]["patches"] == ident["patches"] and len(ident["patches"]) == 1
    assert checkout["patchset_hash"] == kcidb.patchset_hash(ident["patches"]) != ""
    assert build["checkout_id"] == checkout["id"]
    assert build["misc"]["release"] == ident["kernel"]["release"]
    tests = _by_path(data)
    assert len(tests) == len(data["tests"])  # paths (and so ids) unique
    for t in results["tests"]:
        kt = tests[f"vtimer.{t['name']}"]
        assert kt["status"] == t["status"] and kt["build_id"] == build["id"]
        assert kt["environment"]["misc"]["machine"] == ident["machine"]["name"]
        assert kt.get("comment", "") == "; ".join(t["reasons"])
        for p in t["properties"]:
            kp = tests[f"vtimer.{t['name']}.{p['prop']}"]
            assert kp["status"] == kcidb.PROP_STATUS[p["status"]]
            assert kp["misc"]["status"] == p["status"]
    tval = "vtimer.oneshot_tval"
    assert tests[tval]["status"] == "FAIL" and tests[f"{tval}.visible"]["status"] == "FAIL"
    # not judged is never a pass: MISS, above PASS in KCIDB's order; n/a is DONE
    assert tests[f"{tval}.abi"]["status"] == "MISS"
    assert "not checked" in tests[f"{tval}.abi"]["comment"]
    assert tests[f"{tval}.history"]["status"] == "DONE"


def test_the_layer0_run_and_its_passes(tmp_path):
    data = kcidb.report(judged(tmp_path, "upstream-every-exit"))
    _valid(data)
    tests = _by_path(data)
    assert tests["vtimer.oneshot_wfi"]["status"] == "PASS"
    assert tests["vtimer.oneshot_wfi.truthful"]["status"] == "PASS"
    assert data["checkouts"][0]["patchset_hash"] == ""  # upstream: no series


def test_a_recorded_matrix_run_is_valid_kcidb(tmp_path):
    with tarfile.open(DATA / "diff-nightly.tar.gz") as t:
        t.extractall(tmp_path, filter="data")
    matrix = json.loads((tmp_path / "b" / "matrix.json").read_text())
    data = kcidb.report(tmp_path / "b")
    _valid(data)
    runs = [_json(tmp_path / "b" / c["run_dir"] / "results.json") for c in matrix["cells"]]
    assert sum(len(r["tests"]) + sum(len(t["properties"]) for t in r["tests"]) for r in runs) == (
        len(data["tests"])
    )
    assert len({t["id"] for t in data["tests"]}) == len(data["tests"])
    # one build per kernel: the cells that share upstream's 6.1 kernel share its build
    keys = {(r["identity"].get("kernel") or {}).get("key") for r in runs} - {None}
    assert len(keys) == 5
    assert {b["id"] for b in data["builds"]} >= {f"{kcidb.ORIGIN}:build:{k}" for k in keys}
    # the series that did not apply: an invalid checkout, its build no status, its tests ERROR
    bad = next(c for c in data["checkouts"] if c.get("valid") is False)
    assert "does not apply" in bad["log_excerpt"]
    build = next(b for b in data["builds"] if b["checkout_id"] == bad["id"])
    assert "status" not in build
    # (the tests its ABI cannot express stay SKIP: their verdict came before the build)
    assert {t["status"] for t in data["tests"] if t["build_id"] == build["id"]} == {"ERROR", "SKIP"}
    cells = {t["environment"]["misc"]["cell"] for t in data["tests"]}
    assert cells == {c["name"] for c in matrix["cells"]}


def test_a_matrix_run_of_the_runner_is_valid_kcidb(tmp_path, fake_kernels):  # noqa: F811
    p = write(tmp_path, "name: fake\ncells:\n  - revision: [upstream, v4]\n")
    boots = FakeBoots({"v4-every-exit": ["PASS", "FAIL"]})
    m = spec.load(p)
    runner = scheduler.Runner(m, tmp_path / "res", slots=2, out=lambda _: None, boot=boots)
    runner.run()
    data = kcidb.report(runner.dir)
    _valid(data)
    statuses = sorted(t["status"] for t in data["tests"])
    assert statuses == ["FAIL", "PASS", "PASS"]
    assert {t["path"] for t in data["tests"]} == {"vtimer.t0", "vtimer.t1"}


def test_not_a_run(tmp_path):
    with pytest.raises(HarnessError, match="neither a run"):
        kcidb.report(tmp_path)
    assert cli.main(["kcidb", str(tmp_path)]) == 2


def test_an_invalid_report_is_one_error(tmp_path):
    data = kcidb.report(judged(tmp_path, "v4-every-exit"))
    data["tests"][0]["status"] = "OK"
    with pytest.raises(HarnessError, match="not valid at tests/0/status"):
        kcidb.validate(data)


def test_patchset_hash_is_kcidbs():
    # sha256 over the patches' sha256s, newline-terminated ("sha256sum *.patch | cut -c-64 |
    # sha256sum"), empty for none
    import hashlib

    hashes = {"a.patch": "1" * 64, "b.patch": "2" * 64}
    want = hashlib.sha256(("1" * 64 + "\n" + "2" * 64 + "\n").encode()).hexdigest()
    assert kcidb.patchset_hash(hashes) == want and kcidb.patchset_hash({}) == ""
