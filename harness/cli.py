"""Command line: python -m harness <command>."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import compare, guest_spec, machine, revision
from harness.errors import HarnessError
from harness.run import FAULTS, POLICIES, RunOptions, boot_test


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    bt = sub.add_parser("boot-test", help="build the kernel, boot it, run the guest tests")
    bt.add_argument("--rev", default="upstream", help="revision under kernel_patches/")
    bt.add_argument("--machine", default="virt-gicv3", help="machine under qemu_configs/")
    bt.add_argument("--policy", default="every-exit", choices=POLICIES, help="VMM read policy")
    bt.add_argument("--test", action="append", default=[], help="run only this test (repeatable)")
    bt.add_argument("--kernel", type=Path, help="boot this prebuilt Image instead of building")
    bt.add_argument("--jobs", type=int, help="parallel kernel build jobs")
    bt.add_argument("--fault", choices=FAULTS, help="inject a fault at each test's timer arming")
    bt.add_argument("--results", type=Path, help="base directory for results (default results/)")
    bt.add_argument(
        "--trace",
        action="append",
        default=None,
        help="QEMU trace event pattern (default arm_gt_*; repeatable, 'none' for none)",
    )
    cmp = sub.add_parser(
        "compare", help="run a revision's kernel once and judge its traces by several models"
    )
    cmp.add_argument("rev", help="the revision whose kernel runs")
    cmp.add_argument("--against", default="", help="comma-separated revisions whose models judge")
    cmp.add_argument("--machine", default="virt-gicv3")
    cmp.add_argument("--policy", default="every-exit", choices=POLICIES)
    cmp.add_argument("--test", action="append", default=[])
    sub.add_parser("list", help="list revisions, machines and guest tests")
    return p


def _compare(args: argparse.Namespace) -> int:
    against = [m for m in args.against.split(",") if m and m != args.rev]
    opts = RunOptions(
        revision=args.rev,
        machine=args.machine,
        policy=args.policy,
        tests=args.test,
        models=against,
    )
    out = boot_test(opts)
    by_model = {args.rev: out.results, **out.by_model}
    print(f"# compare: kernel {args.rev}, VMM policy {args.policy}; '*' marks rows that differ")
    for line in compare.table(by_model):
        print(f"# {line}")
    for line in compare.first_failures(by_model):
        print(f"#   {line}")
    return out.exit_code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            print("revisions:", " ".join(revision.available()))
            print("machines: ", " ".join(machine.available()))
            for t in guest_spec.load_all().values():
                print(f"test {t.name}: {t.description}")
            return 0
        if args.command == "compare":
            return _compare(args)
        traces = tuple(args.trace) if args.trace else ("arm_gt_*",)
        if traces == ("none",):
            traces = ()
        opts = RunOptions(
            revision=args.rev,
            machine=args.machine,
            policy=args.policy,
            tests=args.test,
            kernel_image=args.kernel,
            trace_events=traces,
            jobs=args.jobs,
            fault=args.fault,
            **({"results_base": args.results} if args.results else {}),
        )
        return boot_test(opts).exit_code
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
