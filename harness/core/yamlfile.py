"""Strict YAML loading: every mapping remembers the line of each key.

Whatever is wrong with a file (not UTF-8, a control character, a YAML syntax
error, a key that is a list, a tag, a number out of range) is one InputError
naming the file and the line.

A file parsed once is not parsed again while its bytes stay the same: its tree is
kept in build/yaml-cache/ (marshal), and PyYAML is imported only on a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import threading
from pathlib import Path
from typing import Any

from harness.core import repo
from harness.core.errors import InputError

INT_RANGE = (-(2**63), 2**64 - 1)  # what the C side (and any config) can hold


class LineDict(dict):
    """A dict that knows the 1-based line of each of its keys and of itself."""

    lines: dict[str, int]
    line: int


def _kind(value: object) -> str:
    """What a value is, in YAML's words: 'a mapping', 'a list', 'a string', ..."""
    if value is None:
        return "null"
    for kind, words in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list")):
        if isinstance(value, kind):
            return words
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(
            path, f"not UTF-8 text (byte 0x{raw[e.start]:02x} is not valid UTF-8)", line=line
        ) from None


# the parse cache: one file per YAML file (by its absolute path), holding the digest
# of its bytes and their tree; a changed file is parsed again, an unwritable cache ignored
CACHE_FORMAT = 1
CACHE_DIR = repo.BUILD / "yaml-cache"
# only the repository's own files are kept (one cache file each: the cache stays as
# small as the repository); a file elsewhere (a test's, a user's spec) is parsed each time
CACHED_UNDER = repo.ROOT


def _plain(v: Any) -> Any:
    """v with its LineDicts as (dict, lines, line) tuples, which marshal can write
    (a parsed file holds no tuples of its own: YAML sequences are lists)."""
    if isinstance(v, LineDict):
        return ({k: _plain(x) for k, x in v.items()}, v.lines, v.line)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _rich(v: Any) -> Any:
    if isinstance(v, tuple):
        items, lines, line = v
        out = LineDict((k, _rich(x)) for k, x in items.items())
        out.lines, out.line = lines, line
        return out
    if isinstance(v, list):
        return [_rich(x) for x in v]
    return v


def _cache_path(path: Path) -> Path:
    name = hashlib.blake2b(os.path.abspath(path).encode(), digest_size=16).hexdigest()
    return CACHE_DIR / name


def _cached(path: Path, digest: bytes) -> Any:
    """The parse of path's bytes from the cache, or None (none kept, another file's
    bytes, or a cache file that is not one: it is parsed again)."""
    try:
        fmt, kept, tree = marshal.loads(_cache_path(path).read_bytes())
        return _rich(tree) if fmt == CACHE_FORMAT and kept == digest else None
    except (OSError, EOFError, ValueError, TypeError, AttributeError):
        return None


def _keep(path: Path, digest: bytes, data: Any) -> None:
    out = _cache_path(path)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(marshal.dumps((CACHE_FORMAT, digest, _plain(data))))
        os.replace(tmp, out)
    except (OSError, ValueError):  # read-only, full, or a value marshal cannot write
        with contextlib.suppress(OSError):
            tmp.unlink()


def _parse(path: Path, raw: bytes) -> Any:
    """path's YAML tree: from the cache when its bytes are those parsed last time."""
    keep = os.path.abspath(path).startswith(os.path.join(CACHED_UNDER, ""))
    digest = hashlib.blake2b(raw, digest_size=16).digest()
    data = _cached(path, digest) if keep else None
    if data is None:
        from harness.core import yaml_loaders

        data = yaml_loaders.parse(path, _decode(path, raw))
        if keep:
            _keep(path, digest, data)
    return data


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror}") from None


def read_text(path: Path) -> str:
    """A UTF-8 text file's text; unreadable or not UTF-8 is one InputError line."""
    return _decode(path, _read(path))


def load(path: Path) -> LineDict:
    """Load a YAML file whose top level is a mapping; errors name file and line."""
    data = _parse(path, _read(path))
    if data is None:
        raise InputError(path, "the file is empty (a mapping of keys is wanted)")
    if not isinstance(data, LineDict):
        raise InputError(path, f"top level must be a mapping, not {_kind(data)}")
    return data


def check_keys(
    path: Path, data: LineDict, required: set[str], optional: set[str] = frozenset()
) -> None:
    """Reject unknown keys and missing required keys, naming the line."""
    for key in data:
        if key not in required and key not in optional:
            allowed = ", ".join(sorted(required | set(optional)))
            raise InputError(
                path, f"unknown key '{key}' (allowed: {allowed})", line=data.lines.get(str(key))
            )
    for key in sorted(required):
        if key not in data:
            raise InputError(path, f"missing key '{key}'", line=getattr(data, "line", None))


def expect_type(path: Path, data: LineDict, key: str, kind: type | tuple[type, ...]) -> Any:
    """Return data[key] if it has the given type, else a one-line error."""
    value = data[key]
    if isinstance(kind, tuple):
        names = " or ".join(k.__name__ for k in kind)
    else:
        names = kind.__name__
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise InputError(
            path, f"key '{key}' must be {names}, not {value!r}", line=data.lines.get(key)
        )
    return value


def expect_choice(path: Path, data: LineDict, key: str, choices: tuple[str, ...]) -> str:
    """Return data[key] if it is one of choices, else a one-line error listing them."""
    value = data[key]
    if value not in choices:
        raise InputError(
            path,
            f"key '{key}': unknown value '{value}' (allowed: {', '.join(choices)})",
            line=data.lines.get(key),
        )
    return value


def expect_name(path: Path, data: LineDict, key: str, forbidden: str = "/") -> str:
    """data[key] if it can name a file or directory: a non-empty string of printable
    characters that does not start with '.' and holds none of forbidden."""
    value = expect_type(path, data, key, str)
    bad = sorted({c for c in value if c in forbidden})
    if not value or value.startswith(".") or not value.isprintable() or bad:
        why = f"holds '{bad[0]}'" if bad else "is not a plain name"
        raise InputError(path, f"key '{key}': '{value}' {why}", line=data.lines.get(key))
    return value
