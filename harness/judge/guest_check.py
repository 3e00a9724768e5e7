"""A failed guest check, decoded from the guest's reports (guest_tests/runtime/guest.h).

A failed VT_CHECK(cond) reports VT_FAIL; a failed VT_CHECK_<OP>(observed, expected)
reports VT_EXPECTED and VT_OBSERVED first. The VT_FAIL value holds the line, the file
(the test's source or runtime.c), which comparison failed, whether its operands compared
as signed, and a 16-bit hash of the check's text as the preprocessor stringified it. The
check's text is taken from the source only when that line still holds a check with this
hash, so a record judged against a later source never names the wrong check. Guests
built before VT_CHECK_<OP> left bits 40-63 zero: only the line is known.

The bit positions and the comparisons come from guest_tests/runtime/vt_ports.h
(VT_FAIL_*, VT_CMPS), as the VMM's port names do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from harness.core import repo
from harness.core.errors import HarnessError
from harness.inputs import limits
from harness.traces.test_trace import Exit, TestTrace

PORTS_H = repo.GUEST_TESTS / "runtime" / "vt_ports.h"
RUNTIME_C = repo.GUEST_TESTS / "runtime" / "runtime.c"
_CMP = re.compile(r"X\(\s*(\w+)\s*,\s*(\d+)\s*,\s*([=!<>]+)\s*\)")
_CHECK = re.compile(r"\bVT_CHECK(?:_([A-Z]{2}))?\s*\(")
# values up to this are shown in decimal (counts, iterations), larger ones in hex
# (counter values, as the records show cnt)
_DECIMAL_BELOW = 1 << 20
_MAX_LINES = 5  # a check's text may run on over this many lines


@cache
def comparisons() -> dict[int, tuple[str, str]]:
    """VT_CMPS of vt_ports.h: code -> (name, C operator), e.g. 1 -> ("EQ", "==")."""
    try:
        text = PORTS_H.read_text()
    except OSError as e:
        raise HarnessError(PORTS_H, f"cannot read the guest ports: {e.strerror}") from None
    start = text.find("#define VT_CMPS(X)")
    if start < 0:
        raise HarnessError(PORTS_H, "no VT_CMPS(X) list of comparisons")
    body = re.split(r"(?<!\\)\n", text[start:], maxsplit=1)[0]
    return {int(nr): (name, op) for name, nr, op in _CMP.findall(body)}


def check_hash(text: str) -> int:
    """vt_check_hash() of runtime.c: FNV-1a, folded to 16 bits, never 0."""
    h = 2166136261
    for b in text.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    h = (h ^ h >> 16) & 0xFFFF
    return h or 1


def _stringified(arg: str) -> str:
    """An argument as the preprocessor's # makes it: comments and runs of white space
    one space, none at the ends."""
    return re.sub(r"\s+", " ", re.sub(r"/\*.*?\*/", " ", arg)).strip()


def _args(text: str, start: int) -> list[str] | None:
    """The top-level comma-separated arguments of the call whose '(' is at start, or
    None when its parentheses do not close in text."""
    depth, args, cur = 0, [], start + 1
    for i in range(start, len(text)):
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return [*args, text[cur:i]]
        elif c == "," and depth == 1:
            args.append(text[cur:i])
            cur = i + 1
    return None


def source_text(lines: list[str], line: int, cmp: int, want: int) -> str | None:
    """The check at line (1-based) of a source with this comparison and hash, written as
    C ("vt_irqs >= 1"), or None when that line holds no such check."""
    if not 1 <= line <= len(lines):
        return None
    text = "\n".join(lines[line - 1 : line - 1 + _MAX_LINES])
    first = len(lines[line - 1])
    names = comparisons()
    for m in _CHECK.finditer(text):
        if m.start() > first:
            break
        name = m.group(1)
        if (name is None) != (cmp == 0) or (name and names.get(cmp, ("",))[0] != name):
            continue
        args = _args(text, m.end() - 1)
        if args is None:
            continue
        args = [_stringified(a) for a in args]
        if cmp == 0 and len(args) == 1 and check_hash(args[0]) == want:
            return args[0]
        if cmp and len(args) == 2 and check_hash(f"{args[0]}, {args[1]}") == want:
            return f"{args[0]} {names[cmp][1]} {args[1]}"
    return None


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _shown(values: list[int]) -> list[str]:
    """The values in one base: decimal when all are small, else hex."""
    if all(abs(v) < _DECIMAL_BELOW for v in values):
        return [str(v) for v in values]
    return [f"-{-v:#x}" if v < 0 else f"{v:#x}" for v in values]


@dataclass(frozen=True)
class GuestCheck:
    source: str  # the file, as the verdict names it
    line: int
    cmp: int | None  # VT_CMPS code, 0 for VT_CHECK(cond); None: a guest from before
    text: str | None = None  # the check as written, when the source still holds it
    source_differs: bool = False  # the line read holds no check with the guest's hash
    expected: int | None = None
    observed: int | None = None

    def describe(self) -> str:
        """'guest check at line 30 of oneshot_tval.c: vt_irqs >= 1 failed: expected >= 1,
        observed 0'."""
        out = f"guest check at line {self.line} of {self.source}"
        if not self.cmp:
            if self.text:
                out += f": {self.text} failed"
            elif self.source_differs:
                out += " (the line holds another check now)"
            return out
        name, op = comparisons().get(self.cmp, (f"#{self.cmp}", "?"))
        out += f": {self.text or f'VT_CHECK_{name}'} failed"
        if self.source_differs:
            out += " (the line holds another check now)"
        if self.expected is None or self.observed is None:
            return out + ": its values were not recorded"
        exp, obs = _shown([self.expected, self.observed])
        return out + f": expected {exp if op == '==' else f'{op} {exp}'}, observed {obs}"


def _values(tr: TestTrace, fail: Exit) -> tuple[int | None, int | None]:
    """The VT_EXPECTED and VT_OBSERVED values fail's vCPU reported just before it."""
    expected = observed = None
    before = [e for e in tr.by_vcpu().get(fail.vcpu, []) if e.seq < fail.seq]
    for e in reversed(before):
        if e.port in ("FAIL", "EXIT") or expected is not None:
            break
        if e.port == "OBSERVED" and observed is None:
            observed = e.value
        elif e.port == "EXPECTED" and observed is not None:
            expected = e.value
    return expected, observed


def _lines(path: Path) -> list[str] | None:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return None


def first_failed(tr: TestTrace, test_source: Path) -> GuestCheck | None:
    """The test's first failed guest check (by record order), or None."""
    fails = tr.ports("FAIL")
    if not fails:
        return None
    fail = fails[0]
    value = fail.value or 0
    line = value & 0xFFFFFFFF
    in_runtime = (value >> limits.get("VT_FAIL_FILE_SHIFT")) & 0xFF == 1
    path = RUNTIME_C if in_runtime else test_source
    name = "runtime/runtime.c" if in_runtime else test_source.name
    want = value >> limits.get("VT_FAIL_HASH_SHIFT")
    if not want:  # a guest from before VT_CHECK_<OP>
        return GuestCheck(name, line, None)
    cmp = (value >> limits.get("VT_FAIL_OP_SHIFT")) & 0xF
    lines = _lines(path)
    text = source_text(lines, line, cmp, want) if lines is not None else None
    expected = observed = None
    if cmp:
        expected, observed = _values(tr, fail)
        if (value >> limits.get("VT_FAIL_SIGNED_SHIFT")) & 1:
            expected = None if expected is None else _signed(expected)
            observed = None if observed is None else _signed(observed)
    return GuestCheck(
        name,
        line,
        cmp,
        text=text,
        source_differs=lines is not None and text is None,
        expected=expected,
        observed=observed,
    )
