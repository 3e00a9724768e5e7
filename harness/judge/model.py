"""Executable semantics models of the revisions, checked over one test's trace.

A model is a revision's rules (kernel_patches/<rev>/profile.yaml): which
timers its ABI reports, whether a notice may ride on another exit
(coalesce) and whether a VMM that reads the line only on the ABI's own
notice exits sees every change (eintr-suffices). The same trace can be
checked against several models; that is how revisions are compared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.inputs.revision import Revision
from harness.judge.properties import (
    abi_rules,
    notices,
    once,
    progress,
    prompt,
    truthful,
    visible,
    wake,
)
from harness.judge.property import (  # noqa: F401  (re-exported: the statuses and the result)
    ALWAYS,
    FAIL,
    NA,
    NOT_JUDGED,
    PASS,
    SKIP,
    PropertyResult,
    evidence,
)
from harness.traces.test_trace import TestTrace


@dataclass(frozen=True)
class Model:
    name: str
    timers: tuple[str, ...]
    coalesce: bool
    eintr_suffices: bool
    history: bool = False  # v5: kernel-written history of the last forced notice
    dedicated_exit: bool = False  # v4: an exit reason of its own carries the line

    @classmethod
    def of(cls, rev: Revision) -> Model:
        timers = tuple(t for t in ("vtimer", "ptimer") if rev.abi.reports(t))
        return cls(
            rev.model,
            timers,
            rev.coalesce,
            rev.eintr_suffices,
            history=rev.abi.history_field is not None,
            dedicated_exit=rev.abi.exit_reason is not None,
        )

    # -- properties --------------------------------------------------------
    def judge(self, prop: str, tr: TestTrace) -> PropertyResult:
        """One property's verdict on tr (its check in judge/properties/)."""
        return PROPERTIES[prop](self, tr)

    # -- properties --------------------------------------------------------
    def check(self, tr: TestTrace, props: tuple[str, ...]) -> list[PropertyResult]:
        """The verdicts of props and of ALWAYS on tr, progress first in an exit storm;
        each not judged where its evidence was dropped."""
        wanted = list(props) + [p for p in ALWAYS if p not in props]
        if tr.storm is not None:  # an exit storm breaks progress, whatever the test exercises
            wanted = ["progress"] + [p for p in wanted if p != "progress"]
        return [evidence(tr, self.judge(p, tr)) for p in wanted if p in PROPERTIES]


# the properties by name: each a function of the model and one test's trace
PROPERTIES: dict[str, Callable[[Model, TestTrace], PropertyResult]] = {
    "visible": visible.visible,
    "once": once.once,
    "coalesce": notices.coalesce_rule,
    "eintr-suffices": notices.eintr_rule,
    "wake": wake.wake,
    "truthful": truthful.truthful,
    "progress": progress.progress,
    "prompt": prompt.prompt,
    "history": abi_rules.history_rule,
    "dedicated-exit": abi_rules.dedicated_exit_rule,
}
