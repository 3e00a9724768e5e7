"""A kernel build is never silent: the make command, then objects built (of the
last build's count) and the time, every few seconds, read from its log."""

from __future__ import annotations

import json

from harness.build import progress


def test_progress_counts_objects_across_reads_and_remembers_the_total(tmp_path, monkeypatch):
    log, counts = tmp_path / "build.log", tmp_path / "objects.json"
    log.write_bytes(b"$ make old\n  CC      old/ignored.o\n")  # before this build: not counted
    said: list[str] = []
    p = progress.BuildProgress(log, said.append, counts, "linux-source-6.1/virt-gicv3")
    p.command(["make", "ARCH=arm64", "Image"])
    assert said == ["kernel: $ make ARCH=arm64 Image"]
    with open(log, "ab") as f:
        f.write(b"  CC      kernel/fork.o\n  AS      arch/arm64/kernel/entry.o\n  CC      mm/sl")
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    p.poll()
    assert p.built == 2 and said[-1].startswith("kernel: 2 objects built, ")
    with open(log, "ab") as f:  # the line split across the two reads counts once
        f.write(b"ub.o\n  LD      vmlinux.o\n  CHK     include/generated/x.h\n")
    p.finished()
    assert p.built == 3
    assert json.loads(counts.read_text()) == {"linux-source-6.1/virt-gicv3": 3}
    again = progress.BuildProgress(log, said.append, counts, "linux-source-6.1/virt-gicv3")
    assert again.line().startswith("0 of ~3 objects built")


def test_an_incremental_rebuild_keeps_the_cold_builds_total(tmp_path):
    log, counts = tmp_path / "build.log", tmp_path / "objects.json"
    counts.write_text(json.dumps({"k": 2000}))
    log.write_bytes(b"")
    p = progress.BuildProgress(log, lambda _: None, counts, "k")
    log.write_bytes(b"  CC      kernel/fork.o\n")
    p.finished()
    assert p.built == 1 and json.loads(counts.read_text()) == {"k": 2000}
