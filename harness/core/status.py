"""Every status the harness gives, as enums (StrEnum: each is its JSON string).

Status: a test's verdict. PropStatus: one property's. BootStatus: how a boot
ended. Outcome: a matrix cell's. AbiStatus: the boot's ABI self-check.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A test's verdict (KTAP: ok, not ok # FAIL/ERROR/MISS, ok # SKIP)."""

    PASS = "PASS"
    FAIL = "FAIL"  # the kernel broke a promise
    ERROR = "ERROR"  # the harness could not judge (a VMM error, a bad record)
    SKIP = "SKIP"  # the ABI cannot express the test
    MISS = "MISS"  # the test never ran


class PropStatus(StrEnum):
    """One property's verdict on one test."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"  # not exercised by this test
    NOT_JUDGED = "not-judged"  # its evidence is absent or was dropped
    NA = "n/a"  # the model does not promise it: what the kernel did is said


class BootStatus(StrEnum):
    COMPLETED = "completed"
    PANIC = "panic"
    HANG = "hang"
    QEMU_DIED = "qemu-died"
    INTERRUPTED = "interrupted"


class Outcome(StrEnum):
    """A matrix cell's outcome; a cell passes when it is the one it expects."""

    PENDING = "pending"
    RUNNING = "running"
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    INTERRUPTED = "interrupted"


class AbiStatus(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"  # the booted kernel speaks another ABI: every test ERROR
    FAILED = "failed"  # the probe itself failed: every test ERROR
    ABSENT = "absent"  # no abi record: each test's "abi" not judged
    NOT_RUN = "not-run"
