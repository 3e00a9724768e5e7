"""results/<run-id>/: a private run directory and atomic writes into it."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path

from harness.core import repo
from harness.core.errors import InputError

FORMAT = "vtimer-harness-results/1"


def new_run_dir(label: str, base: Path = repo.RESULTS) -> Path:
    """A fresh directory no other run shares (mkdir is the lock). A base that cannot
    hold it (a file there, no permission) is an InputError naming it."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        if not base.is_dir():
            raise NotADirectoryError(f"'{base}' is not a directory")
    except OSError as e:
        raise InputError(base, f"cannot keep results here: {e.strerror or e}") from None
    while True:
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{secrets.token_hex(2)}"
        path = base / run_id
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Write via a temp file in the same directory, fsync and rename: a reader (or a
    crash) never sees half a file, only the old one or the new one. Not durable: no
    fsync (a killed process loses nothing; only a machine's crash could)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide a cache from others
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict, durable: bool = True) -> None:
    """data as JSON at path; durable (the last save of a file): fsynced and indented
    for readers, else one line (json's C encoder: indenting takes its Python one)."""
    text = json.dumps(data, indent=1) if durable else json.dumps(data, separators=(",", ":"))
    write_atomic(path, text + "\n", durable)
