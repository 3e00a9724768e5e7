"""LAVA's own schema (lava_common, from Debian's lava-common package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from harness.build import kernel
from harness.core import repo
from harness.core.errors import HarnessError

LAVA_COMMON = repo.BUILD / "lava-common"


def lava_common_path() -> Path:
    """A directory to import lava_common from: Debian's lava-common, unpacked once."""
    top = LAVA_COMMON
    pkg = top / "x" / "usr" / "lib" / "python3" / "dist-packages"
    with kernel.locked(repo.BUILD / ".lava-common.lock"):
        if (pkg / "lava_common" / "schemas" / "__init__.py").is_file():
            return pkg
        shutil.rmtree(top, ignore_errors=True)
        top.mkdir(parents=True)
        r = subprocess.run(
            ["apt-get", "download", "-q", "lava-common"], cwd=top, capture_output=True, text=True
        )
        debs = sorted(top.glob("lava-common_*.deb"))
        if r.returncode or not debs:
            raise HarnessError(
                None, f"apt-get download lava-common failed: {r.stderr.strip()[-300:]}"
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(top / "x")], check=True)
    return pkg


def validate(job_text: str) -> None:
    """Validate a job with LAVA's own schema (strict); raises HarnessError naming the path."""
    try:
        from lava_common.schemas import validate as lava_validate
    except ImportError:
        sys.path.insert(0, str(lava_common_path()))
        from lava_common.schemas import validate as lava_validate
    import voluptuous

    data = yaml.safe_load(job_text)
    try:
        lava_validate(data, strict=True, extra_context_variables=[])
    except voluptuous.Invalid as e:
        raise HarnessError(None, f"LAVA schema: {e}") from None
