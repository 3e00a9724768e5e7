"""Cache stamps: the small JSON files that say a cache entry is complete.

Written atomically (a temp file in the same directory, fsync, rename), so a
reader sees the old stamp or the new one, never half of one. A stamp that
does not parse or lacks a field anyway (a crash of an older harness, a full
disk, a hand edit) raises Corrupt, which names the file: the caches treat it
as a stale entry and build or fetch it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from harness.core import repo, resultsfile
from harness.core.errors import HarnessError


class Corrupt(HarnessError):
    """A stamp that exists but cannot be used."""


def write(path: Path, data: dict | list) -> None:
    resultsfile.write_atomic(path, json.dumps(data, indent=1) + "\n")


def load(path: Path, required: Iterable[str] = ()) -> dict:
    """The stamp at path, a JSON object holding every required key.

    FileNotFoundError when there is none; Corrupt when it is unusable.
    """
    text = path.read_bytes()
    try:
        data = json.loads(text)
    except ValueError as e:  # UnicodeDecodeError is one too
        why = "empty" if not text.strip() else f"not JSON: {e}"
        raise Corrupt(repo.rel(path), f"corrupt cache stamp ({why})") from None
    if not isinstance(data, dict):
        raise Corrupt(repo.rel(path), f"corrupt cache stamp (a {type(data).__name__})")
    missing = [k for k in required if k not in data]
    if missing:
        raise Corrupt(repo.rel(path), f"corrupt cache stamp (no {', '.join(missing)})")
    return data


def load_list(path: Path) -> list:
    """A stamp holding a JSON list (FileNotFoundError, Corrupt as load())."""
    text = path.read_bytes()
    try:
        data = json.loads(text)
    except ValueError as e:
        raise Corrupt(repo.rel(path), f"corrupt cache stamp (not JSON: {e})") from None
    if not isinstance(data, list):
        raise Corrupt(repo.rel(path), f"corrupt cache stamp (a {type(data).__name__})")
    return data
