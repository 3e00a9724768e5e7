"""Errors the harness reports as one line naming the file and what is wrong."""

from __future__ import annotations

from pathlib import Path


class HarnessError(Exception):
    """A failure of the harness or its inputs, not of the kernel under test."""

    def __init__(self, where: str | Path | None, message: str, line: int | None = None) -> None:
        self.where = str(where) if where is not None else None
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.where is None:
            return self.message
        loc = self.where if self.line is None else f"{self.where}:{self.line}"
        return f"{loc}: {self.message}"


def one_line(text: str) -> str:
    """text with line breaks and other unprintable characters escaped (\\n, \\x01)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class InputError(HarnessError):
    """Bad input (spec, config, profile, name): nothing runs. Always one line, whatever
    the bad value holds."""

    def __init__(self, where: str | Path | None, message: str, line: int | None = None) -> None:
        super().__init__(where, one_line(message), line=line)


class BuildError(HarnessError):
    """The kernel or an artifact did not build; the build dir is kept."""

    def __init__(self, where: str | Path | None, message: str, log_tail: str = "") -> None:
        super().__init__(where, message)
        self.log_tail = log_tail
