"""The VMM's trace records (format @VT1), parsed and checked for loss.

    @VT1 <seq> <test> <t_ns> <kind> key=value ... *<crc32>

seq numbers every record of a boot, crc32 covers the text before " *". A
record that fails its checksum, or a gap in seq, is an integrity problem
for the test it falls in: such a test can never pass silently.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

VERSION = "@VT1"
_RECORD = re.compile(r"(@VT\d+) (\d+) (\S+) (\d+) (\S+)(.*) \*([0-9a-f]{8})\s*$")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')
SUITE = "-"  # the test name of suite-level records


@dataclass(frozen=True)
class Record:
    seq: int
    test: str
    t_ns: int
    kind: str
    fields: dict[str, str]
    line_no: int
    text: str = field(default="", compare=False, repr=False)  # as written, less " *<crc32>"

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)

    def int(self, key: str, default: int = 0, base: int = 10) -> int:
        value = self.fields.get(key)
        if value is None or value == "-":
            return default
        return int(value, base)


# where records come from: the console (console.log), or the records port (records.log)
CONSOLE, PORT = "console", "records"


@dataclass(frozen=True)
class Problem:
    """A line that should have been a record and was not, or a lost record."""

    line_no: int  # in its source's log
    what: str
    seq: int | None = None
    test: str = SUITE  # the test it falls in
    source: str = CONSOLE


# problems kept per test: a garbled console can make one per line; the rest are counted
MAX_PROBLEMS = 100
# a gap in seq longer than this is one problem, not one per lost record
_GAP_DETAIL = 20


@dataclass
class Parsed:
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    problems_dropped: dict[str, int] = field(default_factory=dict)  # per test, over MAX_PROBLEMS
    began: list[str] = field(default_factory=list)  # the tests in the order they began
    _by_test: dict[str, list[Record]] = field(default_factory=dict, repr=False)
    _problems_by_test: dict[str, list[Problem]] = field(default_factory=dict, repr=False)

    def add(self, r: Record) -> None:
        self.records.append(r)
        self._by_test.setdefault(r.test, []).append(r)
        if r.kind == "begin":
            self.began.append(r.test)

    def add_problem(self, p: Problem) -> None:
        kept = self._problems_by_test.setdefault(p.test, [])
        if len(kept) >= MAX_PROBLEMS:
            self.problems_dropped[p.test] = self.problems_dropped.get(p.test, 0) + 1
            return
        kept.append(p)
        self.problems.append(p)

    def by_test(self) -> dict[str, list[Record]]:
        return self._by_test

    def of(self, test: str) -> list[Record]:
        return self._by_test.get(test, [])

    def problems_for(self, test: str) -> list[Problem]:
        kept = list(self._problems_by_test.get(test, []))
        if self.problems_dropped.get(test):
            n = self.problems_dropped[test]
            what = f"{n} more console problems not listed"
            kept.append(Problem(kept[-1].line_no, what, None, test, kept[-1].source))
        return kept


def parse_line(line: str, line_no: int) -> Record | Problem | None:
    """A record, a problem (a damaged record), or None for an ordinary console line."""
    start = line.find("@VT")
    if start < 0:
        return None
    text = line[start:].rstrip("\r\n")
    m = _RECORD.match(text)
    if not m:
        return Problem(line_no, f"malformed record: {text[:80]!r}")
    version, seq, test, t_ns, kind, rest, crc = m.groups()
    body = text[: text.rfind(" *")]
    if zlib.crc32(body.encode(errors="replace")) != int(crc, 16):
        return Problem(line_no, f"checksum mismatch in record seq {seq}", seq=int(seq))
    if version != VERSION:
        return Problem(line_no, f"record version {version}, expected {VERSION}", seq=int(seq))
    fields = {k: v.strip('"') for k, v in _FIELD.findall(rest)}
    return Record(int(seq), test, int(t_ns), kind, fields, line_no, body)


def _owner(prev: Record | None, nxt: Record | None) -> str:
    """The test a problem between two good records falls in."""
    if prev is None:
        return nxt.test if nxt else SUITE
    if nxt is None or prev.test == nxt.test:
        return prev.test
    # between two tests: after a finished test it is the next one's, else the unfinished one's
    return nxt.test if prev.kind == "end" or prev.test == SUITE else prev.test


def split_line(line: str) -> list[str]:
    """A console line holding several records (a write cut short by a kill, or
    interleaved output) split at each record marker."""
    starts = [m.start() for m in re.finditer(r"@VT\d+ ", line)]
    if len(starts) <= 1:
        return [line]
    return [line[a:b] for a, b in zip(starts, [*starts[1:], len(line)], strict=True)]


class Stream:
    """Parses lines as they come from the console and the records port (one seq
    for both); records and problems collect in .parsed."""

    def __init__(self) -> None:
        self.parsed = Parsed()
        self._pending: list[Problem] = []
        self._pending_dropped = 0
        self._prev: Record | None = None
        self._expected = 0
        self._line_no = {CONSOLE: 0, PORT: 0}

    def _lost(self, item: Record, source: str) -> None:
        """The records between the one expected and item never arrived."""
        first, last = self._expected, item.seq - 1
        if last - first >= _GAP_DETAIL:
            what = f"records seq {first}..{last} lost or damaged ({last - first + 1} records)"
            self._pending.append(Problem(item.line_no, what, first, source=source))
            return
        known = {p.seq for p in self._pending}
        self._pending.extend(
            Problem(item.line_no, f"record seq {s} lost", s, source=source)
            for s in range(first, last + 1)
            if s not in known
        )

    def _settle(self, nxt: Record | None) -> None:
        owner = _owner(self._prev, nxt)
        if self._pending_dropped:
            dropped = self.parsed.problems_dropped
            dropped[owner] = dropped.get(owner, 0) + self._pending_dropped
            self._pending_dropped = 0
        for p in self._pending:
            self.parsed.add_problem(replace(p, test=owner))
        self._pending.clear()

    def feed(self, line: str, source: str = CONSOLE) -> list[Record]:
        """Take one line of source; returns the good records it held."""
        self._line_no[source] += 1
        got = []
        for part in split_line(line):
            item = parse_line(part, self._line_no[source])
            if item is None:
                continue
            if isinstance(item, Problem):
                if source != CONSOLE:
                    item = replace(item, source=source)
                if len(self._pending) < MAX_PROBLEMS:
                    self._pending.append(item)
                else:
                    self._pending_dropped += 1
                continue
            if item.seq > self._expected:
                self._lost(item, source)
            elif item.seq < self._expected:
                self._pending.append(
                    Problem(
                        item.line_no,
                        f"record seq {item.seq} out of order (expected {self._expected})",
                        item.seq,
                        source=source,
                    )
                )
            self._settle(item)
            self._expected = max(self._expected, item.seq + 1)
            self.parsed.add(item)
            self._prev = item
            got.append(item)
        return got

    def close(self) -> Parsed:
        self._settle(None)
        return self.parsed


def parse(lines: Iterable[str]) -> Parsed:
    stream = Stream()
    for line in lines:
        stream.feed(line)
    return stream.close()
