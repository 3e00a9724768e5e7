from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data() -> Path:
    return DATA


def console(name: str) -> list[str]:
    return (DATA / name).read_text(errors="replace").splitlines()
