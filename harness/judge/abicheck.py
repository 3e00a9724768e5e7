"""The ABI self-check: does the booted kernel speak the revision profile's ABI?

Before the suite /init runs a probe VM (vmm/probe.c) that knows no revision:
it fires the virtual timer, then the physical one, and writes one record of
where each showed (format in the README, "Trace records"):

    abi v=1 status=ok cap=1 vtimer=w0b0+w1b0 vexit=INTR vfall=INTR ptimer=none pexit=- ...

A place is w<word>b<bit> (a 64-bit word of s.regs) or x<reason>b<bit> (the first
word of the exit union of a dedicated exit). The profile says where they must
be (abi.level_word/history_word/bits/exit_reason_value/user_irq). A kernel that
speaks another ABI, or a probe that failed, makes every test ERROR with one
reason: verdicts judged through the wrong ABI would be confident and wrong. A
boot with no abi record (a console from a VMM older than the check: recorded
logs, LAVA jobs) keeps its verdicts, each with the property "abi" not judged
and the reason, in results.json, junit.xml and KTAP alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import cache

from harness.core.errors import InputError
from harness.core.status import AbiStatus
from harness.inputs import revision as revmod
from harness.judge.model import NOT_JUDGED, PropertyResult
from harness.judge.verdict import ERROR, SKIPPED, TestResult
from harness.traces import records

KIND = "abi"
VERSION = "1"
TIMERS = ("vtimer", "ptimer")

MATCH, MISMATCH, FAILED, ABSENT, NOT_RUN = (
    AbiStatus.MATCH,
    AbiStatus.MISMATCH,
    AbiStatus.FAILED,
    AbiStatus.ABSENT,
    AbiStatus.NOT_RUN,
)
# the statuses that make every test ERROR; ABSENT marks each test's "abi" not judged
BLOCKING = (MISMATCH, FAILED)


@dataclass(frozen=True)
class Layout:
    """Where an ABI shows each timer's rise: the places per timer (empty: never)."""

    cap: int
    places: dict[str, frozenset[str]]

    @classmethod
    def of(cls, abi: revmod.Abi) -> Layout:
        if abi.exit_reason_value is not None:  # the probe reads the union's first word
            words = [f"x{abi.exit_reason_value}"]
        else:
            hist = [] if abi.history_word is None else [abi.history_word]
            words = [f"w{w}" for w in [abi.level_word, *hist]]
        places = {
            t: frozenset(f"{w}b{abi.bits[t]}" for w in words) if abi.reports(t) else frozenset()
            for t in TIMERS
        }
        return cls(abi.user_irq, places)


@cache
def _shipped() -> dict[str, tuple[revmod.Abi, Layout]]:
    """Every ABI a shipped revision speaks and its layout, by ABI name."""
    out: dict[str, tuple[revmod.Abi, Layout]] = {}
    for name in revmod.available():
        try:
            abi = revmod.load(name).abi
        except InputError:  # a broken profile is its own run's error, not this one's
            continue
        out.setdefault(abi.name, (abi, Layout.of(abi)))
    return out


@dataclass(frozen=True)
class Observed:
    """What the probe's record says."""

    cap: int | None
    places: dict[str, frozenset[str]]
    exits: dict[str, str] = field(default_factory=dict)  # vexit, vfall, pexit

    @classmethod
    def of(cls, rec: records.Record) -> Observed:
        places = {t: _places(rec.get(t, "none") or "none") for t in TIMERS}
        cap = rec.get("cap")
        exits = {k: rec.get(k, "-") or "-" for k in ("vexit", "vfall", "pexit")}
        return cls(int(cap) if cap and cap.lstrip("-").isdigit() else None, places, exits)


def _places(text: str) -> frozenset[str]:
    return frozenset() if text in ("none", "-") else frozenset(text.split("+"))


def describe(places: frozenset[str]) -> str:
    """w0b0+w1b0 -> 'word 0 bit 0 and word 1 bit 0 of s.regs'."""
    if not places:
        return "nowhere"
    words, union = [], []
    for p in sorted(places):
        where, _, bit = p[1:].partition("b")
        (words if p[0] == "w" else union).append((where, bit))
    parts = []
    if words:
        parts.append(" and ".join(f"word {w} bit {b}" for w, b in words) + " of s.regs")
    if union:
        parts.append(" and ".join(f"bit {b} of exit {r}'s union" for r, b in union))
    return " and ".join(parts)


def _where(abi: revmod.Abi, word: int | None, field_name: str | None, bit: int) -> str:
    if abi.exit_reason_value is not None:
        return f"{field_name} (bit {bit} of exit {abi.exit_reason_value}'s union)"
    return f"{field_name} (word {word} bit {bit})"


def promise(abi: revmod.Abi, timer: str, more_seen: bool = False) -> str:
    """Where abi shows timer's level, in the profile's words; more_seen: the
    kernel showed it in more places (so say that abi has no history word)."""
    if not abi.reports(timer):
        return f"{abi.name} does not report it"
    bit = abi.bits[timer]
    text = f"{abi.name} shows it in {_where(abi, abi.level_word, abi.level_field, bit)}"
    if abi.exit_reason_value is not None:
        return text
    if abi.history_word is None:
        return text + " with no history" if more_seen else text
    return text + f" and its history in {_where(abi, abi.history_word, abi.history_field, bit)}"


def _difference(abi: revmod.Abi, want: Layout, got: Observed) -> list[str]:
    out = []
    if got.cap != want.cap:
        out.append(f"KVM_CAP_ARM_USER_IRQ is {got.cap}, {abi.name}'s is {want.cap}")
    for t in TIMERS:
        w, g = want.places[t], got.places[t]
        if w == g:
            continue
        exit_ = got.exits.get("vexit" if t == "vtimer" else "pexit", "-")
        seen = f"showed in {describe(g)} (at a KVM_EXIT_{exit_})" if g else "never showed"
        out.append(f"the firing {t} {seen}, {promise(abi, t, bool(g - w))}")
    return out


def _like(got: Observed) -> str:
    same = [n for n, (abi, lay) in _shipped().items() if not _difference(abi, lay, got)]
    if not same:
        return "no shipped ABI's layout"
    return " or ".join(f"{n}'s" for n in same) + " layout"


@dataclass(frozen=True)
class AbiCheck:
    status: str
    reason: str = ""
    record: dict[str, str] | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _find(parsed: records.Parsed) -> records.Record | None:
    return next((r for r in parsed.of(records.SUITE) if r.kind == KIND), None)


def check(parsed: records.Parsed, rev: revmod.Revision) -> AbiCheck:
    """The booted kernel's ABI, as the probe's record shows it, against rev's profile."""
    rec = _find(parsed)
    ran = any(r.kind == "boot" for r in parsed.of(records.SUITE))
    if rec is None:
        if not ran:
            return AbiCheck(NOT_RUN, "/init did not start")
        return AbiCheck(
            ABSENT,
            f"the booted kernel's ABI was not checked against {rev.name}'s: /init wrote "
            "no abi record (a VMM older than the ABI self-check?)",
        )
    fields = dict(rec.fields)
    if rec.get("v") != VERSION:
        why = f"abi record version {rec.get('v')}, the harness reads {VERSION}"
        return AbiCheck(FAILED, f"the ABI self-check could not be read: {why}", fields)
    if rec.get("status") != "ok":
        why = rec.get("msg") or f"status {rec.get('status')}"
        return AbiCheck(FAILED, f"the ABI self-check failed: {why}", fields)
    got = Observed.of(rec)
    diff = _difference(rev.abi, Layout.of(rev.abi), got)
    if not diff:
        return AbiCheck(MATCH, "", fields)
    abi = "" if rev.abi.name == rev.name else f" ({rev.abi.name})"
    reason = (
        f"the booted kernel does not speak {rev.name}'s ABI{abi}: {'; '.join(diff)} ({_like(got)})"
    )
    return AbiCheck(MISMATCH, reason, fields)


def probe_vms(parsed: records.Parsed) -> int:
    """VMs the probe ran before the suite (they come first in QEMU's trace)."""
    rec = _find(parsed)
    return 1 if rec is not None and rec.int("exits", 0) > 0 else 0


class Gate:
    """Applies the check to results as they are closed; the check is made once
    its answer can no longer change (an abi record, or a test past the probe)."""

    def __init__(self, rev: revmod.Revision) -> None:
        self.rev = rev
        self.last = AbiCheck(NOT_RUN, "/init did not start")

    def apply(self, res: TestResult, parsed: records.Parsed, ended: bool = True) -> TestResult:
        """res, as ERROR with the check's reason if the kernel speaks another ABI
        or the probe failed; with an "abi" property not judged if the test ran
        (ended) and /init wrote no abi record."""
        if self.last.status not in (MATCH, MISMATCH, FAILED):
            self.last = check(parsed, self.rev)
        status = self.last.status
        if res.status == SKIPPED or status in (MATCH, NOT_RUN):
            return res
        if status in BLOCKING:
            return replace(res, status=ERROR, reasons=[self.last.reason], properties=[])
        if not ended:
            return res
        note = PropertyResult("abi", NOT_JUDGED, self.last.reason)
        return replace(res, properties=[note, *res.properties])
