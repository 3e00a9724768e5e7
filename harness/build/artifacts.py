"""The VMM and guest images, built by the Makefile under one lock per tree.

Every boot-test, every matrix worker and `lava-export` run `make artifacts`
first, often at the same moment; two makes writing one object or binary at
once leave a truncated file or fail to link. The harness takes
build/.artifacts.lock (flock) and runs the Makefile's artifacts-unlocked; the
Makefile's own `artifacts` target takes the same lock with flock(1), so a
user's `make artifacts` by hand waits for the harness and the other way
round. The Makefile writes each image to a temp file and renames it, so a
run that reads an image while another rebuilds it reads a whole one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from harness.core import locks, repo
from harness.core.errors import BuildError

LOCK = Path("build") / ".artifacts.lock"  # relative to the tree's root
# a cold build of every image takes ~30 s on two loaded cores; a holder past
# this deadline is stuck, not slow
WAIT_S = 600.0


def build_artifacts(
    root: Path = repo.ROOT, say: Callable[[str], None] | None = None, wait_s: float = WAIT_S
) -> None:
    """make artifacts in root under its lock (a no-op when the images are fresh). In a
    session of its own: a Ctrl-C to the harness's process group is the harness's to
    handle (a matrix's cell starting then ends 'interrupted', not as a failed build)."""
    with locks.locked(root / LOCK, deadline_s=wait_s, on_wait=say, what="make artifacts"):
        out = subprocess.run(
            ["make", "-s", "-C", str(root), "artifacts-unlocked"],
            capture_output=True,
            text=True,
            start_new_session=True,
        )
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
        raise BuildError("Makefile", f"building the VMM or guest images failed:\n{tail}")
