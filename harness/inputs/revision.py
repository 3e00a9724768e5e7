"""Revisions: kernel_patches/<rev>/ holds a quilt series, its patches and profile.yaml."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core import repo, yamlfile
from harness.core.errors import InputError

# the Debian source package a revision's series applies to unless told otherwise
DEFAULT_SOURCE = "linux-source-6.1"
# the sources a profile's `series` map may name (harness/build/kernel.py builds these)
SOURCES = ("linux-source-6.1", "linux-source-6.12")
# the default series file of a revision: the series of every source its profile's
# `series` map does not name
SERIES = "series"
_SERIES_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
PROVENANCES = ("seed", "reconstructed", "merged-4.12", "negative-control")
ABI_NAMES = ("upstream", "v4", "v5", "v6")
ABI_KEYS = {"name", "level_field", "history_field", "exit_reason", "exit_reason_value", "bits"}
# the ABI self-check's keys (harness/judge/abicheck.py). Every shipped profile gives them;
# level_word and user_irq default to what every ABI so far has (0, 1), history_word
# must be given exactly when history_field is (null otherwise)
ABI_CHECK_KEYS = {"level_word", "history_word", "user_irq"}
# s.regs is 2048 bytes; the exit union 256
_MAX_WORD = 255


@dataclass(frozen=True)
class Abi:
    name: str
    level_field: str
    history_field: str | None
    exit_reason: str | None
    exit_reason_value: int | None
    bits: dict[str, int]
    # the 64-bit word of s.regs (of the exit union, with exit_reason_value) that
    # holds level_field, and the one that holds history_field (the ABI self-check)
    level_word: int = 0
    history_word: int | None = None
    user_irq: int = 1  # what KVM_CHECK_EXTENSION(KVM_CAP_ARM_USER_IRQ) returns

    def reports(self, timer: str) -> bool:
        return timer in self.bits


@dataclass(frozen=True)
class Rule:
    rule: str
    source: str


@dataclass(frozen=True)
class Revision:
    name: str
    title: str
    provenance: str
    model: str
    abi: Abi
    coalesce: bool
    eintr_suffices: bool
    rules: tuple[Rule, ...]
    patches: tuple[Path, ...]  # the series for DEFAULT_SOURCE
    directory: Path = field(repr=False)
    # the profile's `series` map: (source, its series file, its patches), None for a
    # source the revision has no series for; a source not named uses SERIES
    series: tuple[tuple[str, str | None, tuple[Path, ...] | None], ...] = ()
    default_series: tuple[Path, ...] | None = None  # the `series` file's (None: `patches`)

    def patch_hashes(self) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.patches}

    def series_file(self, source: str) -> str | None:
        """The name of source's series file in the revision's directory; None: no series."""
        return next((name for src, name, _ in self.series if src == source), SERIES)

    def patches_for(self, source: str) -> tuple[Path, ...]:
        """The series kernel source `source` is patched with (InputError: it has none)."""
        for src, _, patches in self.series:
            if src == source:
                if patches is None:
                    raise InputError(
                        self.directory / "profile.yaml",
                        f"revision '{self.name}' has no series for {source}",
                    )
                return patches
        return self.patches if self.default_series is None else self.default_series

    def for_source(self, source: str) -> Revision:
        """This revision with `patches` the series for source (what kernel.build builds)."""
        return dataclasses.replace(self, patches=self.patches_for(source))


def available() -> list[str]:
    return sorted(p.parent.name for p in repo.KERNEL_PATCHES.glob("*/profile.yaml"))


def _series(directory: Path, name: str = SERIES) -> tuple[Path, ...]:
    series = directory / name
    if not series.is_file():
        raise InputError(series, "missing series file")
    patches = []
    for n, line in enumerate(yamlfile.read_text(series).splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        patch = directory / name.split()[0]
        if not repo.inside(directory, patch):
            raise InputError(series, f"patch '{name}' lies outside {repo.rel(directory)}", line=n)
        if not patch.is_file():
            raise InputError(series, f"patch '{name}' does not exist", line=n)
        patches.append(patch)
    return tuple(patches)


def _optional(path: Path, data: yamlfile.LineDict, key: str, kind: type) -> Any:
    """data[key] if it has the given type or is null."""
    return None if data[key] is None else yamlfile.expect_type(path, data, key, kind)


def _bits(path: Path, data: yamlfile.LineDict) -> dict[str, int]:
    bits = data["bits"]
    ok = isinstance(bits, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 64
        for k, v in bits.items()
    )
    if not ok:
        raise InputError(
            path,
            f"abi.bits must map timer names to bit numbers (0..63), not {bits!r}",
            line=data.lines["bits"],
        )
    return dict(bits)


def _word(path: Path, data: yamlfile.LineDict, key: str, default: int | None) -> int | None:
    """data[key], a word index; default when absent; null only if default is."""
    if key not in data:
        return default
    if default is None:
        value = _optional(path, data, key, int)
    else:
        value = yamlfile.expect_type(path, data, key, int)
    if value is not None and not 0 <= value <= _MAX_WORD:
        raise InputError(
            path, f"key '{key}' must be a word index 0..{_MAX_WORD}", line=data.lines[key]
        )
    return value


def _history_word(path: Path, data: yamlfile.LineDict) -> int | None:
    word = _word(path, data, "history_word", None)
    if (word is None) != (data["history_field"] is None):
        raise InputError(
            path,
            "key 'history_word' must be given exactly when history_field is",
            line=data.lines.get("history_word", data.lines["history_field"]),
        )
    return word


def _user_irq(path: Path, data: yamlfile.LineDict) -> int:
    return yamlfile.expect_type(path, data, "user_irq", int) if "user_irq" in data else 1


def _abi(path: Path, profile: yamlfile.LineDict) -> Abi:
    data = profile["abi"]
    if not isinstance(data, yamlfile.LineDict):
        raise InputError(path, "key 'abi' must be a mapping", line=profile.lines["abi"])
    yamlfile.check_keys(path, data, ABI_KEYS, ABI_CHECK_KEYS)
    return Abi(
        name=yamlfile.expect_choice(path, data, "name", ABI_NAMES),
        level_field=yamlfile.expect_type(path, data, "level_field", str),
        history_field=_optional(path, data, "history_field", str),
        exit_reason=_optional(path, data, "exit_reason", str),
        exit_reason_value=_optional(path, data, "exit_reason_value", int),
        bits=_bits(path, data),
        level_word=_word(path, data, "level_word", 0) or 0,  # never None: its default is 0
        history_word=_history_word(path, data),
        user_irq=_user_irq(path, data),
    )


def _rules(path: Path, data: yamlfile.LineDict) -> tuple[Rule, ...]:
    rules = []
    for item in yamlfile.expect_type(path, data, "rules", list):
        if not isinstance(item, yamlfile.LineDict):
            raise InputError(
                path, f"each rule must be a mapping, not {item!r}", line=data.lines["rules"]
            )
        yamlfile.check_keys(path, item, {"rule", "source"})
        text = [yamlfile.expect_type(path, item, key, str) for key in ("rule", "source")]
        rules.append(Rule(*text))
    return tuple(rules)


def _series_map(
    path: Path, data: yamlfile.LineDict
) -> tuple[tuple[str, str | None, tuple[Path, ...] | None], ...]:
    """The profile's optional `series`: {source: series file name, or null for none}."""
    if "series" not in data:
        return ()
    where = data.lines["series"]
    entries = data["series"]
    if not isinstance(entries, yamlfile.LineDict) or not entries:
        raise InputError(
            path,
            f"key 'series' must map kernel sources ({', '.join(SOURCES)}) to series files",
            line=where,
        )
    out = []
    for source, name in entries.items():
        line = entries.lines.get(str(source), where)
        if source not in SOURCES:
            raise InputError(
                path,
                f"series: unknown kernel source {source!r} (valid: {', '.join(SOURCES)})",
                line=line,
            )
        if name is None:
            if source == DEFAULT_SOURCE:
                raise InputError(
                    path, f"series: {source} is the default source and needs a series", line=line
                )
            out.append((source, None, None))
            continue
        if not isinstance(name, str) or not _SERIES_NAME.fullmatch(name):
            raise InputError(
                path,
                f"series: {source} must name a series file in {repo.rel(path.parent)} "
                f"(a plain file name) or be null, not {name!r}",
                line=line,
            )
        if not (path.parent / name).is_file():
            raise InputError(
                path, f"series: {source}'s series file '{name}' does not exist", line=line
            )
        out.append((source, name, _series(path.parent, name)))
    return tuple(out)


def load(name: str) -> Revision:
    """A revision by name (kernel_patches/<name>/), or by the path of its directory."""
    given = Path(name)
    if "/" in name and (given / "profile.yaml").is_file():
        directory, name = given, given.resolve().name
    else:
        directory = repo.KERNEL_PATCHES / name
        if not repo.inside(repo.KERNEL_PATCHES, directory):
            directory = repo.KERNEL_PATCHES / "-"
    path = directory / "profile.yaml"
    if not path.is_file():
        raise InputError(None, f"unknown revision '{name}' (valid: {', '.join(available())})")
    data = yamlfile.load(path)
    yamlfile.check_keys(
        path,
        data,
        {"revision", "title", "provenance", "model", "abi", "semantics", "rules"},
        {"series"},
    )
    if yamlfile.expect_type(path, data, "revision", str) != name:
        raise InputError(
            path,
            f"revision '{data['revision']}' must match the directory name '{name}'",
            line=data.lines["revision"],
        )
    yamlfile.expect_choice(path, data, "provenance", PROVENANCES)
    sem = data["semantics"]
    if not isinstance(sem, yamlfile.LineDict):
        raise InputError(path, "key 'semantics' must be a mapping", line=data.lines["semantics"])
    yamlfile.check_keys(path, sem, {"coalesce", "eintr_suffices"})
    for key in ("coalesce", "eintr_suffices"):
        yamlfile.expect_type(path, sem, key, bool)
    series = _series_map(path, data)
    default = _series(directory)
    return Revision(
        name=name,
        title=yamlfile.expect_type(path, data, "title", str),
        provenance=data["provenance"],
        model=yamlfile.expect_type(path, data, "model", str),
        abi=_abi(path, data),
        coalesce=sem["coalesce"],
        eintr_suffices=sem["eintr_suffices"],
        rules=_rules(path, data),
        patches=next((p for src, _, p in series if src == DEFAULT_SOURCE and p), default),
        directory=directory,
        series=series,
        default_series=default,
    )
