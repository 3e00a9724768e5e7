"""LAVA's own schema (lava_common, from Debian's lava-common package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from harness.build import kernel
from harness.core import repo
from harness.core.errors import HarnessError

LAVA_COMMON = repo.BUILD / "lava-common"


def unpacked_deb(package: str, top: Path, ready: Callable[[Path], bool]) -> Path:
    """Debian's package, downloaded (apt-get download, never installed) and unpacked
    once under top/x; ready(top/x) says an earlier unpacking is whole."""
    root = top / "x"
    with kernel.locked(repo.BUILD / f".{package}.lock"):
        if ready(root):
            return root
        shutil.rmtree(top, ignore_errors=True)
        top.mkdir(parents=True)
        r = subprocess.run(
            ["apt-get", "download", "-q", package], cwd=top, capture_output=True, text=True
        )
        debs = sorted(top.glob(f"{package}_*.deb"))
        if r.returncode or not debs:
            raise HarnessError(
                None, f"apt-get download {package} failed: {r.stderr.strip()[-300:]}"
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    return root


_DIST = Path("usr/lib/python3/dist-packages")


def lava_common_path() -> Path:
    """A directory to import lava_common from: Debian's lava-common, unpacked once."""

    def ready(root: Path) -> bool:
        return (root / _DIST / "lava_common" / "schemas" / "__init__.py").is_file()

    return unpacked_deb("lava-common", LAVA_COMMON, ready) / _DIST


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
