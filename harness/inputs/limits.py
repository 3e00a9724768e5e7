"""The VMM's limits, read from its headers: vmm/vt_limits.h (what /init accepts
on a manifest line, what it keeps of a test), VT_MAX_VCPUS from
guest_tests/runtime/vt_ports.h and the guests' VT_BEAT_MS from guest.h. One
source of truth for the C and the Python side: the spec loader accepts exactly
what /init accepts."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from harness.core import repo
from harness.core.errors import HarnessError

HEADERS = (
    repo.ROOT / "vmm" / "vt_limits.h",
    repo.GUEST_TESTS / "runtime" / "vt_ports.h",
    repo.GUEST_TESTS / "runtime" / "guest.h",  # VT_BEAT_MS, the guests' heartbeat
)
_DEFINE = re.compile(r"^#define\s+(VT_\w+)\s+(\d+)\b", re.MULTILINE)


@cache
def _all() -> dict[str, int]:
    out: dict[str, int] = {}
    for path in HEADERS:
        try:
            text = path.read_text()
        except OSError as e:
            raise HarnessError(path, f"cannot read the VMM's limits: {e.strerror}") from None
        out |= {name: int(value) for name, value in _DEFINE.findall(text)}
    return out


def get(name: str) -> int:
    """The value of #define name (e.g. VT_TIMEOUT_MS_MAX)."""
    values = _all()
    if name not in values:
        raise HarnessError(Path(HEADERS[0]), f"no numeric #define {name}")
    return values[name]
