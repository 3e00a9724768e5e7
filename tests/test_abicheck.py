"""The ABI self-check (harness/judge/abicheck.py) on records: the probe's abi record
against each revision's profile, and how a mismatch closes every test."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import pytest
from conftest import console

from harness.core import repo
from harness.core.errors import InputError
from harness.inputs import revision as revmod
from harness.judge import abicheck
from harness.judge.model import NOT_JUDGED
from harness.judge.verdict import ERROR, MISSED, PASSED, SKIPPED, TestResult
from harness.lab.lava import ingest as lava_ingest
from harness.traces import records

# what the probe wrote on each shipped revision's kernel (console.log of real boots)
SEEN = {
    "upstream": "cap=1 vtimer=w0b0 vexit=INTR vfall=INTR ptimer=w0b1 pexit=INTR exits=6 ms=118",
    "v4": "cap=1 vtimer=x64b0 vexit=ARM_TIMER vfall=ARM_TIMER ptimer=none pexit=- exits=909",
    "v5": "cap=1 vtimer=w0b0+w1b0 vexit=INTR vfall=INTR ptimer=none pexit=- exits=1191",
    "v6": "cap=1 vtimer=w0b0 vexit=INTR vfall=INTR ptimer=none pexit=- exits=961 ms=265",
    # upstream-nointr: no forced exit, the rise rides on the guest's MMIO exit
    "upstream-nointr": "cap=1 vtimer=w0b0 vexit=MMIO vfall=MMIO ptimer=w0b1 pexit=MMIO exits=6",
    # v5-coalesce: v5's layout (it writes the history on every return: the probe's
    # first notice shows it all the same)
    "v5-coalesce": "cap=1 vtimer=w0b0+w1b0 vexit=INTR vfall=INTR ptimer=none pexit=- exits=1643",
    # v5-nohist: the history rewritten on every return shows at the forced notice too
    "v5-nohist": "cap=1 vtimer=w0b0+w1b0 vexit=INTR vfall=INTR ptimer=none pexit=- exits=1543",
    # v4-dupexit: v4's layout (its repeated exit comes only after a KVM_IRQ_LINE)
    "v4-dupexit": "cap=1 vtimer=x64b0 vexit=ARM_TIMER vfall=ARM_TIMER ptimer=none pexit=- "
    "exits=1545",
    # upstream-imask: a masked timer stays high, so the probe never sees the fall
    "upstream-imask": "cap=1 vtimer=w0b0 vexit=INTR vfall=none ptimer=w0b1 pexit=INTR exits=1635",
}


def line(seq: int, test: str, kind: str, rest: str) -> str:
    body = f"@VT1 {seq} {test} {1000 + seq} {kind} {rest}"
    return f"{body} *{zlib.crc32(body.encode()):08x}"


def parsed(*suite: tuple[str, str]) -> records.Parsed:
    """A boot whose suite records are the (kind, fields) given, then one test."""
    lines = [line(i, "-", k, f) for i, (k, f) in enumerate(suite)]
    n = len(lines)
    lines += [line(n, "t", "begin", "vcpus=1"), line(n + 1, "t", "end", "status=ok")]
    return records.parse(lines)


BOOT = ("boot", "release=6.1.192 frq=62500000 kt=1 kvm=1 user_irq=1")


def probe(fields: str, v: str = "1", status: str = "ok") -> tuple[str, str]:
    return ("abi", f"v={v} status={status} {fields}")


def check(rev: str, fields: str) -> abicheck.AbiCheck:
    return abicheck.check(parsed(BOOT, probe(fields)), revmod.load(rev))


@pytest.mark.parametrize("rev", revmod.available())
def test_every_shipped_revision_matches_what_its_own_kernel_showed(rev):
    seen = SEEN.get(rev, SEEN["upstream"] if rev.startswith("upstream") else None)
    assert check(rev, seen).status == abicheck.MATCH


@pytest.mark.parametrize(
    ("kernel", "profile", "words"),
    [
        ("v5", "v6", ["with no history", "word 0 bit 0 and word 1 bit 0", "(v5's layout)"]),
        ("v6", "v5", ["its history in s.regs.user_timer_pending (word 1 bit 0)", "(v6's layout)"]),
        ("upstream", "v6", ["the firing ptimer showed in word 0 bit 1", "(upstream's layout)"]),
        ("v6", "upstream", ["ptimer never showed", "device_irq_level (word 0 bit 1) (v6's"]),
        ("v4", "v5", ["bit 0 of exit 64's union (at a KVM_EXIT_ARM_TIMER)", "(v4's layout)"]),
        ("v5", "v4", ["arm_timer.timer_pending (bit 0 of exit 64's union)", "(v5's layout)"]),
        ("v6", "upstream-storm", ["upstream-storm's ABI (upstream)", "(v6's layout)"]),
    ],
)
def test_another_revisions_kernel_is_a_mismatch_naming_both(kernel, profile, words):
    got = check(profile, SEEN[kernel])
    assert got.status == abicheck.MISMATCH
    assert got.reason.startswith(f"the booted kernel does not speak {profile}'s ABI")
    for w in words:
        assert w in got.reason, got.reason


def test_a_layout_no_shipped_abi_has():
    got = check("v6", "cap=1 vtimer=w2b0 vexit=INTR vfall=INTR ptimer=none pexit=-")
    assert got.status == abicheck.MISMATCH
    assert "word 2 bit 0 of s.regs" in got.reason and "(no shipped ABI's layout)" in got.reason


def test_a_timer_that_never_fired_and_a_wrong_capability():
    got = check("v5", "cap=0 vtimer=none vexit=- vfall=- ptimer=none pexit=-")
    assert got.status == abicheck.MISMATCH
    assert "KVM_CAP_ARM_USER_IRQ is 0, v5's is 1" in got.reason
    assert "the firing vtimer never showed" in got.reason


def test_a_failed_probe_and_an_unknown_record_version():
    failed = abicheck.check(
        parsed(BOOT, probe('cap=1 exits=3 msg="KVM_RUN ret=-1 errno=14"', status="error")),
        revmod.load("v5"),
    )
    assert failed.status == abicheck.FAILED
    assert failed.reason == "the ABI self-check failed: KVM_RUN ret=-1 errno=14"
    newer = abicheck.check(parsed(BOOT, probe(SEEN["v5"], v="2")), revmod.load("v5"))
    assert newer.status == abicheck.FAILED and "abi record version 2" in newer.reason


def test_no_abi_record_after_boot_is_absent_and_before_boot_not_run():
    absent = abicheck.check(parsed(BOOT), revmod.load("v5"))
    assert absent.status == abicheck.ABSENT and "no abi record" in absent.reason
    assert abicheck.check(records.parse([]), revmod.load("v5")).status == abicheck.NOT_RUN


def _gate(rev: str, *suite: tuple[str, str]) -> tuple[abicheck.Gate, records.Parsed]:
    return abicheck.Gate(revmod.load(rev)), parsed(*suite)


def test_gate_makes_a_pass_error_with_the_one_reason_and_no_properties():
    gate, p = _gate("v6", BOOT, probe(SEEN["v5"]))
    res = TestResult("t", PASSED, [], metrics={"irqs": 1})
    out = gate.apply(res, p)
    assert out.status == ERROR and out.reasons == [gate.last.reason] and out.properties == []
    assert out.metrics == {"irqs": 1}
    assert gate.last.record and gate.last.record["vtimer"] == "w0b0+w1b0"
    missed = gate.apply(TestResult("u", MISSED, ["never ran: x"]), p, ended=False)
    assert missed.status == ERROR
    skipped = TestResult("s", SKIPPED, ["the v6 ABI cannot express it"])
    assert gate.apply(skipped, p) is skipped


def test_gate_lets_a_matching_kernel_through():
    gate, p = _gate("v5", BOOT, probe(SEEN["v5"]))
    res = TestResult("t", PASSED)
    assert gate.apply(res, p) is res and gate.last.status == abicheck.MATCH


def test_gate_absent_record_marks_abi_not_judged_on_a_test_that_ran():
    gate, p = _gate("v5", BOOT)
    lost = TestResult("u", MISSED, ["never ran: boot panic"])
    assert gate.apply(lost, p, ended=False) is lost
    out = gate.apply(TestResult("t", PASSED), p)
    assert out.status == PASSED
    assert [(q.prop, q.status) for q in out.not_judged()] == [("abi", NOT_JUDGED)]
    assert "no abi record" in out.properties[0].line()


def test_the_probe_vm_is_skipped_in_qemus_trace_only_if_it_ran():
    assert abicheck.probe_vms(parsed(BOOT, probe(SEEN["v5"]))) == 1
    assert abicheck.probe_vms(parsed(BOOT, probe('cap=-1 exits=0 msg="x"', status="error"))) == 0
    assert abicheck.probe_vms(parsed(BOOT)) == 0


def _profile_copy(tmp_path: Path, rev: str, old: str, new: str) -> str:
    d = tmp_path / rev
    shutil.copytree(repo.KERNEL_PATCHES / rev, d)
    prof = d / "profile.yaml"
    text = prof.read_text()
    assert old in text
    prof.write_text(text.replace(old, new))
    return str(d)


@pytest.mark.parametrize(
    ("rev", "old", "new", "message"),
    [
        ("v6", "  history_word: null", "  history_word: 1", "exactly when history_field is"),
        ("v5", "  history_word: 1", "  history_word: null", "exactly when history_field is"),
        ("v5", "  level_word: 0", "  level_word: 256", "word index 0..255"),
        ("v5", "  user_irq: 1", "  user_irq: one", "key 'user_irq' must be int"),
        ("v5", "  history_word: 1\n", "", "exactly when history_field is"),
        ("v5", "  level_word: 0", "  level_word: null", "key 'level_word' must be int"),
    ],
)
def test_profile_abi_words_are_checked(tmp_path, rev, old, new, message):
    with pytest.raises(InputError) as e:
        revmod.load(_profile_copy(tmp_path, rev, old, new))
    assert message in str(e.value)


def test_level_word_and_user_irq_default_to_what_every_abi_so_far_has(tmp_path):
    d = _profile_copy(tmp_path, "v6", "  user_irq: 1\n", "")
    prof = Path(d) / "profile.yaml"
    prof.write_text("\n".join(ln for ln in prof.read_text().splitlines()
                             if not ln.startswith("  level_word:")) + "\n")  # fmt: skip
    abi = revmod.load(d).abi
    assert (abi.level_word, abi.history_word, abi.user_irq) == (0, None, 1)


def with_probe(lines: list[str], fields: str) -> list[str]:
    """A recorded console with an abi record after boot: later records renumbered."""
    out, shift = [], 0
    for ln in lines:
        rec = records.parse_line(ln, 0)
        if not isinstance(rec, records.Record):
            out.append(ln)
            continue
        out.append(_renum(ln[ln.index("@VT1") : ln.rfind(" *")], shift))
        if rec.kind == "boot":
            shift = 1
            out.append(line(rec.seq + 1, "-", "abi", f"v=1 status=ok {fields}"))
    return out


def without_probe(lines: list[str]) -> list[str]:
    """A recorded console with its abi record taken out (as a VMM older than the
    self-check wrote it): later records renumbered."""
    out, shift = [], 0
    for ln in lines:
        rec = records.parse_line(ln, 0)
        if not isinstance(rec, records.Record):
            out.append(ln)
        elif rec.kind == "abi":
            shift = -1
        else:
            out.append(_renum(ln[ln.index("@VT1") : ln.rfind(" *")], shift))
    return out


def _renum(body: str, shift: int) -> str:
    head, seq, rest = body.split(" ", 2)
    text = f"{head} {int(seq) + shift} {rest}"
    return f"{text} *{zlib.crc32(text.encode()):08x}"


def _ingest(tmp_path: Path, lines: list[str], rev: str) -> tuple[dict, str, str]:
    tmp_path.mkdir(exist_ok=True)
    log = tmp_path / "console.log"
    log.write_text("\n".join(lines) + "\n")
    out = lava_ingest.ingest(log, tmp_path / "results", rev=rev, say=lambda _: None)
    data = json.loads((out.run_dir / "results.json").read_text())
    return data, (out.run_dir / "junit.xml").read_text(), (out.run_dir / "ktap.txt").read_text()


def test_an_ingested_v5_console_judged_as_v6_errors_every_test(tmp_path):
    lines = with_probe(without_probe(console("v5-every-exit.console.log")), SEEN["v5"])
    assert not records.parse(lines).problems  # renumbered and checksummed whole
    data, junit, ktap = _ingest(tmp_path, lines, "v6")
    reason = data["abi_check"]["reason"]
    assert data["abi_check"]["status"] == abicheck.MISMATCH and "(v5's layout)" in reason
    ran = [t for t in data["tests"] if t["status"] != SKIPPED]
    assert ran and all(t["status"] == ERROR and t["reasons"] == [reason] for t in ran)
    assert junit.count("<error ") == len(ran) and ktap.count(f": {reason}") == len(ran)


def test_an_ingested_console_with_its_own_kernels_record_keeps_its_verdicts(tmp_path):
    # the recorded console has its own kernel's record (the probe ran at boot)
    lines = console("v5-every-exit.console.log")
    plain_lines = without_probe(lines)
    assert not records.parse(plain_lines).problems and len(plain_lines) == len(lines) - 1
    plain, _, _ = _ingest(tmp_path / "a", plain_lines, "v5")
    probed, _, ktap = _ingest(tmp_path / "b", lines, "v5")
    assert probed["abi_check"]["status"] == abicheck.MATCH and "abi not judged" not in ktap
    assert [t["status"] for t in probed["tests"]] == [t["status"] for t in plain["tests"]]
    # without the record: the same verdicts, each test's abi not judged
    assert plain["abi_check"]["status"] == abicheck.ABSENT
    for t in plain["tests"]:
        if t["status"] != SKIPPED:
            assert t["properties"][0]["prop"] == "abi", t
