"""Command line: python -m harness <command>."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.boot import qemu_runner
from harness.core import signals
from harness.core.errors import HarnessError
from harness.inputs import guest_spec, machine, revision
from harness.inputs.options import FAULTS, POLICIES, VMMS, RunOptions
from harness.inputs.revision import DEFAULT_SOURCE
from harness.runs.run import boot_test


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _add_boot_test,
        _add_compare,
        _add_list,
        _add_matrix,
        _add_diff,
        _add_lava_export,
        _add_lava_ingest,
        _add_parse,
        _add_kcidb,
        _add_bisect,
    ):
        add(sub)
    return p


def _add_boot_test(sub: argparse._SubParsersAction) -> None:
    bt = sub.add_parser("boot-test", help="build the kernel, boot it, run the guest tests")
    bt.add_argument("--rev", default="upstream", help="revision under kernel_patches/")
    bt.add_argument("--machine", default="virt-gicv3", help="machine under qemu_configs/")
    bt.add_argument("--policy", default="every-exit", choices=POLICIES, help="VMM read policy")
    bt.add_argument("--test", action="append", default=[], help="run only this test (repeatable)")
    bt.add_argument(
        "--vmm",
        default="ours",
        choices=VMMS,
        help="the VMM under test: ours, or QEMU (kernel-irqchip=off) for guest_tests/qemu/",
    )
    bt.add_argument("--kernel", type=Path, help="boot this prebuilt Image instead of building")
    bt.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help=f"the Debian kernel source package to build (default {DEFAULT_SOURCE}; "
        "linux-source-6.12: each revision's 6.12 series)",
    )
    bt.add_argument("--jobs", type=int, help="parallel kernel build jobs")
    bt.add_argument("--fault", choices=FAULTS, help="inject a fault at each test's timer arming")
    bt.add_argument("--results", type=Path, help="base directory for results (default results/)")
    bt.add_argument(
        "--test-timeout",
        type=_test_timeout,
        metavar="S",
        help="every test's watchdog, in seconds, instead of its own timeout_s",
    )
    _add_source(bt)
    bt.add_argument(
        "--trace",
        action="append",
        default=None,
        help="QEMU trace event pattern (default arm_gt_*; repeatable, 'none' for none)",
    )


def _test_timeout(text: str) -> float:
    """--test-timeout's seconds: what /init's watchdog takes (guest_spec.timeout_problem)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if (why := guest_spec.timeout_problem(value)) is not None:
        raise argparse.ArgumentTypeError(why)
    return value


def _add_source(p: argparse.ArgumentParser) -> None:
    """--tree/--series: a developer's kernel, judged by the profile --rev (or --model) names."""
    g = p.add_argument_group(
        "a developer's kernel",
        "--tree builds a local source tree out of tree; --series applies an mbox or a "
        "directory of format-patch files (onto --tree, else onto Debian's source). The "
        "kernel is then judged as speaking --rev's ABI, by its model (default upstream: "
        "'this tree speaks upstream's ABI'); --rev's own series is not applied unless "
        "--rev-series.",
    )
    g.add_argument("--tree", type=Path, help="a kernel source tree (git work tree or unpacked)")
    g.add_argument("--series", type=Path, help="an mbox or a directory of git format-patch files")
    g.add_argument(
        "--model", help="the profile that judges --tree/--series (same as --rev for them)"
    )
    g.add_argument(
        "--rev-series", action="store_true", help="also apply --rev's series onto --tree"
    )


def _source_options(args: argparse.Namespace, rev: str) -> dict:
    """RunOptions' revision, tree, series and rev_series from --rev/--model/--tree/--series."""
    if args.model and not (args.tree or args.series):
        raise HarnessError(
            None, "--model names the profile of a --tree or --series (else see compare)"
        )
    if getattr(args, "kernel", None) and (args.tree or args.series):
        raise HarnessError(None, "--kernel boots a built Image: not with --tree or --series")
    if args.model and rev not in ("upstream", args.model):
        raise HarnessError(None, f"--rev {rev} and --model {args.model}: give one profile")
    return {
        "revision": args.model or rev,
        "tree": args.tree,
        "series": args.series,
        "rev_series": args.rev_series,
    }


def _add_compare(sub: argparse._SubParsersAction) -> None:
    cmp = sub.add_parser(
        "compare", help="run a revision's kernel once and judge its traces by several models"
    )
    cmp.add_argument("rev", help="the revision whose kernel runs")
    cmp.add_argument("--against", default="", help="comma-separated revisions whose models judge")
    cmp.add_argument("--machine", default="virt-gicv3")
    cmp.add_argument("--policy", default="every-exit", choices=POLICIES)
    cmp.add_argument("--test", action="append", default=[])
    _add_source(cmp)


def _add_list(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("list", help="list revisions, machines and guest tests")


def _add_matrix(sub: argparse._SubParsersAction) -> None:
    mx = sub.add_parser(
        "matrix", help="run a matrix file's cells (revision x kernel source x machine x policy)"
    )
    mx.add_argument("file", type=Path, help="the matrix file, e.g. matrix/nightly.yaml")
    mx.add_argument("--cell", action="append", default=[], help="run only this cell (repeatable)")
    mx.add_argument("--slots", type=int, help="CPU tokens for parallel boots (default: CPUs)")
    mx.add_argument("--jobs", type=int, help="parallel kernel build jobs")
    mx.add_argument("--results", type=Path, help="base directory for results (default results/)")
    mx.add_argument("--list", action="store_true", help="list the cells and exit")
    mx.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each cell N times and list the tests whose status changed (flake hunting)",
    )


def _add_diff(sub: argparse._SubParsersAction) -> None:
    df = sub.add_parser(
        "diff", help="compare two runs (or two matrix runs): status changes, metric changes"
    )
    df.add_argument("a", type=Path, help="the earlier run (results/<run-id> or a matrix run)")
    df.add_argument("b", type=Path, help="the later run")
    df.add_argument("--html", type=Path, help="write the HTML page here (default: in run b)")
    df.add_argument("--no-html", action="store_true", help="text only")
    df.add_argument("--all", action="store_true", help="also list unchanged cells and tests")


def _add_lava_export(sub: argparse._SubParsersAction) -> None:
    le = sub.add_parser("lava-export", help="write a LAVA job definition per matrix cell")
    le.add_argument("file", type=Path, help="the matrix file")
    le.add_argument("--out", type=Path, required=True, help="directory for the jobs (and files)")
    le.add_argument(
        "--artifact-url", required=True, help="base URL the kernels and initramfs are served from"
    )
    le.add_argument("--cell", action="append", default=[], help="only this cell (repeatable)")
    le.add_argument(
        "--with-kernels",
        action="store_true",
        help="also build/fetch the kernels and copy them under --out (else only the initramfs)",
    )


def _add_lava_ingest(sub: argparse._SubParsersAction) -> None:
    li = sub.add_parser("lava-ingest", help="judge a LAVA job's console log into our results")
    li.add_argument("log", type=Path, help="LAVA's job log (YAML/JSON) or the raw console log")
    li.add_argument("--out", type=Path, default=None, help="base directory (default results/)")
    li.add_argument("--job", type=Path, help="the job definition lava-export wrote (its metadata)")
    li.add_argument("--rev", help="the revision (default: from the log or --job)")
    li.add_argument("--machine", help="the machine (default: from the log or --job)")
    li.add_argument("--policy", choices=POLICIES, help="the VMM policy (default: from the log)")


def _add_parse(sub: argparse._SubParsersAction) -> None:
    pa = sub.add_parser(
        "parse",
        help="judge a saved console log offline, as the live run judged it",
        description="Judge a console log (a run's results/<run-id>/console.log, or any "
        "saved console) into a new results/<run-id>/. Next to a run's results.json the "
        "run's revision, machine, policy, tests and qemu-trace.log are the defaults.",
    )
    pa.add_argument("log", type=Path, help="the console log (may be .gz)")
    pa.add_argument("--rev", help="the revision whose model judges it (default: the run's)")
    pa.add_argument("--machine", help="the machine (default: the run's, else virt-gicv3)")
    pa.add_argument("--policy", choices=POLICIES, help="the VMM policy (default: the run's)")
    pa.add_argument("--test", action="append", default=[], help="only this test (repeatable)")
    pa.add_argument("--qemu-trace", type=Path, help="QEMU's trace log (layer 0)")
    pa.add_argument("--out", type=Path, default=None, help="base directory (default results/)")


def _add_kcidb(sub: argparse._SubParsersAction) -> None:
    kc = sub.add_parser(
        "kcidb",
        help="write a run's (or a matrix run's) results as KCIDB JSON (KernelCI's database)",
        description="Checkouts (kernel source + series), builds (kernels) and tests "
        "(vtimer.<test>, vtimer.<test>.<property>) of a results/<run-id>/ or a matrix run, "
        "validated against KCIDB's schema when kcidb-io is installed.",
    )
    kc.add_argument("run", type=Path, help="a run directory or a matrix run directory")
    kc.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")


def _kcidb(args: argparse.Namespace) -> int:
    import json

    from harness.core import resultsfile
    from harness.lab import kcidb

    data = kcidb.report(args.run)
    checked = kcidb.validate(data)
    text = json.dumps(data, indent=1) + "\n"
    if args.output:
        resultsfile.write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    n = {k: len(data[k]) for k in ("checkouts", "builds", "tests")}
    valid = f"valid KCIDB {checked}" if checked else "not validated: kcidb-io is not installed"
    where = f" -> {args.output}" if args.output else ""
    print(
        f"# kcidb: {n['checkouts']} checkouts, {n['builds']} builds, {n['tests']} tests"
        f"{where} ({valid})",
        file=sys.stderr,
    )
    return 0


def _add_bisect(sub: argparse._SubParsersAction) -> None:
    bi = sub.add_parser(
        "bisect",
        help="git bisect run a kernel tree with boot-test as the predicate",
        description="Find the first commit of --tree between --good and --bad whose kernel "
        "fails: each step builds the commit out of tree (incrementally), boots the named "
        "tests and is good (they pass), bad (FAIL; with --property P: P failed) or skipped "
        "(125: a build failure, an ERROR). Results: results/bisect-<id>/.",
    )
    bi.add_argument("--tree", type=Path, required=True, help="the kernel git work tree")
    bi.add_argument("--good", required=True, help="a commit known to pass")
    bi.add_argument("--bad", required=True, help="a commit known to fail")
    bi.add_argument("--test", action="append", default=[], help="the test(s) to run (repeatable)")
    bi.add_argument("--property", help="judge by this property only (e.g. wake)")
    bi.add_argument("--rev", default="upstream", help="the profile whose ABI the tree speaks")
    bi.add_argument("--machine", default="virt-gicv3")
    bi.add_argument("--policy", default="every-exit", choices=POLICIES)
    bi.add_argument("--jobs", type=int, help="parallel kernel build jobs")
    bi.add_argument("--results", type=Path, help="base directory for results (default results/)")


def _bisect(args: argparse.Namespace) -> int:
    from harness.runs import bisect

    revision.load(args.rev)  # a known profile, before anything runs
    spec = bisect.BisectSpec(
        tree=str(args.tree),
        good=args.good,
        bad=args.bad,
        tests=args.test,
        prop=args.property,
        revision=args.rev,
        machine=args.machine,
        policy=args.policy,
        jobs=args.jobs,
    )
    return bisect.run(spec, lambda line: print(line, flush=True), **(
        {"base": args.results} if args.results else {}
    ))  # fmt: skip


def _parse(args: argparse.Namespace) -> int:
    from harness.runs import offline

    return offline.parse(
        args.log,
        lambda line: print(line, flush=True),
        rev=args.rev,
        machine=args.machine,
        policy=args.policy,
        tests=args.test,
        qemu_trace_log=args.qemu_trace,
        **({"results_base": args.out} if args.out else {}),
    ).exit_code


def _matrix(args: argparse.Namespace) -> int:
    from harness.runs.matrix import scheduler, spec

    if args.list:
        m = spec.load(args.file).select(args.cell)
        for c in m.cells:
            extra = f" expect {c.expect}" + (f" ({c.expect_reason})" if c.expect_reason else "")
            tests = f" tests {','.join(c.tests)}" if c.tests else ""
            watchdog = f" timeout_s {c.timeout_s:g}" if c.timeout_s is not None else ""
            print(f"{c.name}:{extra}{tests}{watchdog}")
        return 0
    code, _ = scheduler.run(
        args.file,
        **({"results_base": args.results} if args.results else {}),
        slots=args.slots,
        build_jobs=args.jobs,
        cells=args.cell,
        repeat=args.repeat,
    )
    return code


def _diff(args: argparse.Namespace) -> int:
    from harness.runs import diff

    d = diff.compare(args.a, args.b)
    for line in diff.text(d, show_all=args.all):
        print(line)
    if not args.no_html:
        out = diff.write_html(d, args.html)
        print(f"# html: {out}")
    return 1 if d.regressions else 0


def _lava_export(args: argparse.Namespace) -> int:
    from harness.lab.lava import export as lava_export

    jobs = lava_export.export(
        args.file, args.out, args.artifact_url, cells=args.cell, with_kernels=args.with_kernels
    )
    for j in jobs:
        print(f"{j}")
    return 0


def _lava_ingest(args: argparse.Namespace) -> int:
    from harness.lab.lava import ingest as lava_ingest

    out = lava_ingest.ingest(
        args.log,
        **({"results_base": args.out} if args.out else {}),
        job=args.job,
        rev=args.rev,
        machine=args.machine,
        policy=args.policy,
    )
    return out.exit_code


def _compare(args: argparse.Namespace) -> int:
    from harness.judge import compare

    against = [m for m in args.against.split(",") if m and m != args.rev]
    opts = RunOptions(
        machine=args.machine,
        policy=args.policy,
        tests=args.test,
        models=against,
        **_source_options(args, args.rev),
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
    with signals.handled():  # SIGINT and SIGTERM, whatever this process inherited
        try:
            return _command(args)
        except signals.Interrupted as e:  # outside a run (a run keeps its results itself)
            print(f"# {e.reason}", file=sys.stderr)
            return e.exit_code
        finally:
            with signals.deferred():
                if n := qemu_runner.end_all():  # none, unless a run lost track of its QEMU
                    print(f"# killed {n} QEMU left running", file=sys.stderr)


def _command(args: argparse.Namespace) -> int:
    try:
        if args.command == "list":
            from harness.inputs import qemu_tests

            print("revisions:", " ".join(revision.available()))
            print("machines: ", " ".join(machine.available()))
            for t in guest_spec.load_all().values():
                print(f"test {t.name}: {t.description}")
            for t in qemu_tests.load_all().values():
                print(f"qemu test {t.name} (--vmm qemu): {t.description}")
            return 0
        if args.command == "compare":
            return _compare(args)
        if args.command == "matrix":
            return _matrix(args)
        if args.command == "diff":
            return _diff(args)
        if args.command == "lava-export":
            return _lava_export(args)
        if args.command == "lava-ingest":
            return _lava_ingest(args)
        if args.command == "parse":
            return _parse(args)
        if args.command == "kcidb":
            return _kcidb(args)
        if args.command == "bisect":
            return _bisect(args)
        traces = tuple(args.trace) if args.trace else ("arm_gt_*",)
        if traces == ("none",):
            traces = ()
        opts = RunOptions(
            machine=args.machine,
            policy=args.policy,
            tests=args.test,
            kernel_image=args.kernel,
            kernel_source=args.source,
            **_source_options(args, args.rev),
            trace_events=traces,
            jobs=args.jobs,
            fault=args.fault,
            vmm=args.vmm,
            test_timeout_s=args.test_timeout,
            **({"results_base": args.results} if args.results else {}),
        )
        return boot_test(opts).exit_code
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
