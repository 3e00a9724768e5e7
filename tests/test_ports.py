"""The Python side knows guest_tests/runtime/vt_ports.h only through the header:
the port names the harness matches are the header's, and the bit layouts it
decodes are read from it."""

from __future__ import annotations

import re

from harness.core import repo
from harness.inputs import limits
from harness.judge.properties import wake

HEADER = repo.GUEST_TESTS / "runtime" / "vt_ports.h"
# how the harness names a port: tr.ports("IRQ"), e.port == "HBEAT", get("port") == "ARM"
_USES = re.compile(r'ports\("(\w+)"\)|\.port == "(\w+)"|get\("port"\) == "(\w+)"')


def _port_names() -> set[str]:
    text = HEADER.read_text()
    block = text[text.index("#define VT_PORTS(X)") :].split("\n\n", 1)[0]
    return set(re.findall(r"X\((\w+),", block))


def test_every_port_name_the_harness_matches_is_in_the_header():
    names = _port_names()
    assert {"EXIT", "IRQ", "ARM", "HBEAT", "WAKE", "EXPECTED", "OBSERVED"} <= names
    used = {}
    for path in (repo.ROOT / "harness").rglob("*.py"):
        for m in _USES.finditer(path.read_text()):
            used[next(g for g in m.groups() if g)] = path
    assert used, "the pattern finds the harness's port uses"
    unknown = {n: str(p.relative_to(repo.ROOT)) for n, p in used.items() if n not in names}
    assert not unknown, f"ports the VMM never names: {unknown}"


def test_the_bit_layouts_come_from_the_header():
    text = HEADER.read_text()
    assert "(_VT_UL(1) << VT_WAKE_EARLY_BIT)" in text
    assert wake._WAKE_EARLY == 1 << limits.get("VT_WAKE_EARLY_BIT") == 1 << 32
    assert wake._WAKE_IRQS == wake._WAKE_EARLY - 1
    runtime = (repo.GUEST_TESTS / "runtime" / "runtime.c").read_text()
    assert "now << VT_IRQ_CNT_SHIFT | pending" in runtime
    assert limits.get("VT_IRQ_CNT_SHIFT") == 4
