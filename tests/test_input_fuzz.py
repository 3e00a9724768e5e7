"""Fuzzing the input loaders: every shipped YAML file, mutated a few hundred ways (fixed
seeds), loaded with its real loader. A mutant loads, or raises a HarnessError whose text
is one printable line starting with the file's name; anything else (a traceback) fails
with the seed and the mutant, so it can be replayed: mutate(original, seed)."""

from __future__ import annotations

import functools
import random
import re
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.core import repo, yamlfile
from harness.core.errors import HarnessError
from harness.inputs import guest_spec, machine, qemu_tests, revision
from harness.runs.matrix import spec as matrix_spec

MUTANTS = 200  # per file
MATRIX_MUTANTS = 120  # a matrix loads the machines of all its cells: slower
LINE = re.compile(rb"^(?P<lead>[ \t]*(?:- )?)(?P<key>[A-Za-z_][\w-]*):(?P<value>.*)$")
VALUES = [
    b"[a, b]", b"[]", b"{x: 1}", b"{}", b"null", b"~", b"", b"0", b"-1", b"-99999",
    b"99999999999999999999999", b"18446744073709551615", b"3.5", b"-0.0", b"1e9",
    b".inf", b".nan", b"true", b"false", b"yes", b"'text'", b'"a\\nb"', b'"a\\0b"',
    b"'../../../etc/passwd'", b"/etc/passwd", b"sub/x.c", b"x.h", b"2020-13-45",
    b"0b_", b"0x_", b"*nowhere", b"&a x", b"!!int x", b"!!python/name:os.system",
    b"|\n  a\n  b", b"[[1]]", b"{[1]: 2}", b"[{a: 1}]", b"=", b"'<<'", b"? a",
    b"virt-gicv3", b"upstream", b"v4", b"oneshot_wfi", b"linux-image-6.1.0-56-arm64",
    b"eintr-only", b"fail", b"\"\\u2028\"", b"'a#1'", b".", b"..",
]  # fmt: skip
SNIPPETS = [
    b"- x", b"? ", b"---", b"...", b"%YAML 1.1", b"&a", b"<<: *a", b"[a]: 1", b"? [a, b]\n: 1",
    b"{[1]: 2}: 3", b"{{a: 1}: 2}: 3", b"'x", b'"x', b"\tx: 1", b"x: {", b"x: [", b": 1",
    b"x: 1\nx: 2", b"#", b"a: b: c",
]  # fmt: skip
ITEMS = [b"[x]", b"{a: 1}", b"null", b"5", b"''", b"true", b"../x", b"[[1]]", b"3.5"]
FLOW_LIST = re.compile(rb"\[([^\[\]]*)\]")
BAD_BYTES = [b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xe9", b"\xed\xa0\x80", b"\xf5", b"\xc0\xaf"]
CONTROLS = [*(chr(c) for c in range(0x20) if c != 0x0A), "\x7f", "\x85", "\u2028", "\ufffe"]


# -- mutations: each takes and gives the file's bytes ---------------------------------


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _keyed(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if LINE.match(line)] or [0]


def flip_bytes(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def delete_line(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


def duplicate_line(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"\n".join(lines)


def replace_value(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    lines = _lines(data)
    i = rng.choice(_keyed(lines))
    m = LINE.match(lines[i])
    if m:
        lines[i] = m["lead"] + m["key"] + b": " + rng.choice(VALUES)
    return b"\n".join(lines)


def replace_item(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    """One item of a flow list ([a, b]) or of a block list (- a) becomes another type."""
    lines = _lines(data)
    flows = [(i, m) for i, line in enumerate(lines) for m in FLOW_LIST.finditer(line)]
    blocks = [i for i, line in enumerate(lines) if line.lstrip().startswith(b"- ")]
    item = rng.choice(ITEMS)
    if flows and (not blocks or rng.random() < 0.7):
        i, m = rng.choice(flows)
        items = m[1].split(b",")
        items[rng.randrange(len(items))] = b" " + item
        lines[i] = lines[i][: m.start(1)] + b",".join(items) + lines[i][m.end(1) :]
    elif blocks:
        i = rng.choice(blocks)
        lead = lines[i][: lines[i].index(b"- ") + 2]
        lines[i] = lead + item
    return b"\n".join(lines)


def swap_values(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    """Two keys swap their values: right types in the wrong places."""
    lines = _lines(data)
    i, j = rng.choice(_keyed(lines)), rng.choice(_keyed(lines))
    a, b = LINE.match(lines[i]), LINE.match(lines[j])
    if a and b:
        lines[i] = a["lead"] + a["key"] + b":" + b["value"]
        lines[j] = b["lead"] + b["key"] + b":" + a["value"]
    return b"\n".join(lines)


def rename_key(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    lines = _lines(data)
    i = rng.choice(_keyed(lines))
    m = LINE.match(lines[i])
    if m:
        key = rng.choice([*keys, m["key"] + b"x", m["key"].upper(), b"", b"1", b"null", b"<<"])
        lines[i] = m["lead"] + key + b":" + m["value"]
    return b"\n".join(lines)


def unhashable_key(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    lines = _lines(data)
    i = rng.choice(_keyed(lines))
    m = LINE.match(lines[i])
    if m:
        key = rng.choice([b"[" + m["key"] + b"]", b"{" + m["key"] + b": 1}", b"[a, [b]]"])
        lines[i] = m["lead"] + key + b":" + m["value"]
    return b"\n".join(lines)


def insert_bad_bytes(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.choice(BAD_BYTES) + data[i:]


def insert_control(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.choice(CONTROLS).encode() + data[i:]


def insert_snippet(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    lines = _lines(data)
    indent = b" " * rng.choice([0, 0, 2, 4])
    lines.insert(rng.randrange(len(lines) + 1), indent + rng.choice(SNIPPETS))
    return b"\n".join(lines)


def reindent(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines[i] = b" " * rng.choice([1, 2, 4]) + lines[i] if rng.random() < 0.5 else lines[i].lstrip()
    return b"\n".join(lines)


def truncate(rng: random.Random, data: bytes, keys: list[bytes]) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


MUTATIONS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    flip_bytes, delete_line, duplicate_line, replace_value, replace_value, replace_value,
    replace_item, replace_item, swap_values, rename_key, unhashable_key, insert_bad_bytes,
    insert_control, insert_snippet, reindent, truncate,
]  # fmt: skip


def mutate(original: bytes, seed: str) -> tuple[bytes, list[str]]:
    """The mutant of original for this seed, and the names of the mutations made."""
    rng = random.Random(seed)
    keys = sorted({m["key"] for line in _lines(original) if (m := LINE.match(line))})
    data, done = original, []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.choice(MUTATIONS)
        data = op(rng, data, keys)
        done.append(op.__name__)
    return data, done


# -- the files and their loaders --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One shipped file: where its mutant goes (with what it references) and its loader."""

    original: Path
    stage: Callable[[Path], Path]  # the tmp dir -> the mutant's path (references copied)
    load: Callable[[Path], object]
    mutants: int = MUTANTS
    setup: Callable[[pytest.MonkeyPatch], None] | None = None


def _beside(original: Path, names: list[str]) -> Callable[[Path], Path]:
    def stage(tmp: Path) -> Path:
        for name in names:
            if (original.parent / name).is_file():
                shutil.copy(original.parent / name, tmp / name)
        return tmp / original.name

    return stage


def _source_of(spec: Path) -> list[str]:
    return [str(yamlfile.load(spec)["source"])]


def _revision_dir(original: Path) -> Callable[[Path], Path]:
    def stage(tmp: Path) -> Path:
        shutil.copytree(original.parent, tmp / original.parent.name)
        return tmp / original.parent.name / original.name

    return stage


def _references_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A matrix checks its cells against the suite and the machines, none of them mutated
    in its case: load each once, not per mutant (the fuzzer's time goes to mutants)."""
    suite = SUITE
    monkeypatch.setattr(guest_spec, "load_all", lambda directory=repo.GUEST_TESTS: suite)
    monkeypatch.setattr(machine, "load", functools.lru_cache(machine.load))


def _cases() -> list[Case]:
    guests = SUITE
    cases = [
        Case(p, _beside(p, _source_of(p)), guest_spec.load)
        for p in sorted(repo.GUEST_TESTS.glob("*.yaml"))
    ]
    cases += [
        Case(p, _beside(p, _source_of(p)), lambda path: qemu_tests.load(path, guests))
        for p in sorted(qemu_tests.QEMU_TESTS.glob("*.yaml"))
    ]
    cases += [
        Case(p, _beside(p, []), lambda path: machine.load(str(path)))
        for p in sorted(repo.QEMU_CONFIGS.glob("*.yaml"))
    ]
    cases += [
        Case(p, _revision_dir(p), lambda path: revision.load(str(path.parent)))
        for p in sorted(repo.KERNEL_PATCHES.glob("*/profile.yaml"))
    ]
    cases += [
        Case(p, _beside(p, []), matrix_spec.load, MATRIX_MUTANTS, _references_once)
        for p in sorted((repo.ROOT / "matrix").glob("*.yaml"))
    ]
    return cases


SUITE = guest_spec.load_all()
CASES = _cases()


def _problem(case: Case, path: Path, seed: str) -> str | None:
    """None if the mutant at path loads or fails with a proper one-line error."""
    try:
        case.load(path)
    except HarnessError as e:
        text = str(e)
        if text.isprintable() and text.startswith(str(path)):
            return None
        return f"not one line naming {path}: {text!r}"
    except Exception as e:  # the point of the fuzzer: any other exception is a bug
        where = traceback.extract_tb(e.__traceback__)[-1]
        return f"{type(e).__name__}: {e} (at {where.filename}:{where.lineno})"
    return None


@pytest.mark.parametrize("case", CASES, ids=[repo.rel(c.original) for c in CASES])
def test_mutants_load_or_give_one_line_naming_the_file(tmp_path, monkeypatch, case):
    if case.setup:
        case.setup(monkeypatch)
    path = case.stage(tmp_path)
    original = case.original.read_bytes()
    path.write_bytes(original)
    assert _problem(case, path, "original") is None, "the shipped file itself must load"
    failures: dict[str, str] = {}  # one example of each distinct problem
    for i in range(case.mutants):
        seed = f"{repo.rel(case.original)}#{i}"
        data, ops = mutate(original, seed)
        path.write_bytes(data)
        problem = _problem(case, path, seed)
        if problem is not None:
            kind = problem.split(":", 1)[0] + problem.rsplit("(at", 1)[-1]
            failures.setdefault(kind, f"seed {seed!r} ({', '.join(ops)}): {problem}\n{data!r}")
    assert not failures, "\n\n".join(failures.values())


def test_mutations_are_reproducible():
    original = (repo.GUEST_TESTS / "rearm_n.yaml").read_bytes()
    assert mutate(original, "x#1") == mutate(original, "x#1")
    assert len({mutate(original, f"x#{i}")[0] for i in range(50)}) > 40
