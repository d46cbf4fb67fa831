"""`python -m bench` / `bench`: list, run, score, compact, report, data, train, ablate."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.errors import BenchError

EPILOG = """examples:
  bench list
  bench run --suite synthref --model oracle
  bench run --suite refcoco refcoco+ --model genmask --data-root DATA --device cuda --batch-size 32
  bench run --suite synthref --model genmask --model-arg steps=4 --out runs/gm4 --resume
  bench score --suite synthref --split val --predictions runs/gm4/predictions.jsonl
  bench compact runs/gm4
  bench report --results results
  bench data synth --out /tmp/synth
  bench train --model genmask --preset tiny --stage dit
  bench ablate steps --budget small
"""


def _key_values(pairs: list[str], flag: str) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"{flag} expects KEY=VALUE, got {pair!r}")
        parsed[key] = value
    return parsed


def _add_protocol_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("protocol (recorded with every result; see docs/protocol-and-data.md)")
    group.add_argument("--empty-iou", type=float, default=1.0, choices=[0.0, 1.0],
                       help="IoU of a sample whose gt and prediction are both empty (LISA: 1.0, mmdetection: 0.0)")
    group.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (0: none)")
    group.add_argument("--suite-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="suite option, e.g. texts=all (ReasonSeg: score every text), split_by=google")


def _protocol(args: argparse.Namespace):
    from bench.metrics import Protocol

    return Protocol(empty_union_iou=args.empty_iou, bootstrap=args.bootstrap)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="show suites, models and their splits")

    run = sub.add_parser("run", help="evaluate a model on suites", formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="Data root: --data-root or $BENCH_DATA_ROOT (layout in docs/protocol-and-data.md). "
                                "Synthetic suites need none.")
    run.add_argument("--suite", nargs="+", required=True, help="one or more suites (see `bench list`)")
    run.add_argument("--model", required=True, help="a registered model (see `bench list`)")
    run.add_argument("--split", nargs="+", help="splits to evaluate (default: every split but train)")
    run.add_argument("--data-root", help="root of the real datasets (default: $BENCH_DATA_ROOT)")
    run.add_argument("--checkpoint", help="model checkpoint directory (default: the model's own)")
    run.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. steps=4")
    run.add_argument("--limit", type=int, help="evaluate only the first N samples of each split")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (bf16 where the model supports it)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", help="run directory (default: $BENCH_RUNS/<time>_<model>_<suites>, $BENCH_RUNS "
                                   "defaulting to runs/, which git ignores)")
    run.add_argument("--resume", action="store_true", help="finish the interrupted run in --out")
    run.add_argument("--strict", action="store_true", help="stop with exit code 3 at the first failed sample")
    run.add_argument("--label", help="display name in reports, e.g. genmask-4steps (default: the model name)")
    run.add_argument("--kind", default="leaderboard", choices=["leaderboard", "ablation", "diagnostic"],
                     help="where reports show the run: the leaderboard (default), an ablation's page, or diagnostics")
    run.add_argument("--group", help="the ablation (or diagnostic group) the run belongs to")
    run.add_argument("--workers", type=int, default=1,
                     help="processes reading images and targets ahead of the model (default 1; 0: none)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_protocol_args(run)

    score = sub.add_parser("score", help="score a predictions file without a model")
    score.add_argument("--suite", required=True)
    score.add_argument("--split", required=True)
    score.add_argument("--predictions", required=True, type=Path,
                       help="JSONL: sample_id + segmentation (COCO RLE); gzipped when the name ends in .gz")
    score.add_argument("--data-root")
    score.add_argument("--out", type=Path, help="output run directory (default: $BENCH_RUNS or runs/, "
                                                "<time>_score_...)")
    score.add_argument("--label", help="display name in reports (default: the predictions file's stem)")
    score.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    _add_protocol_args(score)

    compact = sub.add_parser(
        "compact", help="gzip a finished run's predictions files (predictions*.jsonl -> .jsonl.gz)",
        description="Gzips the merged predictions files of finished run directories in place (atomically, "
                    "deterministic bytes), e.g. before committing them. bench score, bench report and "
                    "bench run --resume read predictions.jsonl.gz transparently; a resumed run expands it back "
                    "to plain JSONL, which it appends to.")
    compact.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")

    report = sub.add_parser(
        "report", help="regenerate REPORT.md, tables and plots from run directories",
        description="Regenerates DIR/REPORT.md, its tables and plots. When DIR/runs.toml exists, only the runs it "
                    "declares are read ([[run]] entries: directory, relative to DIR; command, the exact command "
                    "that made it, checked against its run.json; optional label); otherwise every directory "
                    "below DIR holding a run.json. The committed results/ has a runs.toml.")
    report.add_argument("--results", type=Path, default=Path("results"), metavar="DIR")
    report.add_argument("--reference", metavar="LABEL",
                        help="the model every measured row is compared with (paired bootstrap differences of cIoU "
                             "and gIoU on the same samples): a run label or a model name (default: the run labelled "
                             "'genmask (tiny, 1 step)', else any run of genmask)")
    report.add_argument("--gallery", nargs="+", default=[], metavar="SUITE/SPLIT/SAMPLE_ID",
                        help="show these samples in the qualitative gallery of their suites instead of the automatic, "
                             "seeded selection (e.g. synthref/testA/3218); an id no model predicted is an error")

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="write the synthetic suites (refer + ReasonSeg formats) to a directory")
    synth.add_argument("--out", type=Path, required=True)

    train = sub.add_parser("train", help="train a model (arguments after --model go to its trainer; see --model M --help)",
                           add_help=False)
    train.add_argument("--model", help="the model to train (see `bench list`); `--model M --help` lists its options")

    ablate = sub.add_parser(
        "ablate", help="run an ablation (see `bench list`) and write its table, plots and report",
        description="Makes every cell (variant x seed) of the ablation NAME at a budget, reusing the cells already "
                    "evaluated, then writes OUT/table.csv, table.md, plots/ and report.md from the cells on disk.")
    ablate.add_argument("name", metavar="NAME", help="an ablation (bench/ablate/defs/NAME.toml), or all (every "
                        "ablation of the method; the recipe searches, marked in `bench list`, run only by name)")
    ablate.add_argument("--budget", default="smoke", choices=["smoke", "small", "full"],
                        help="smoke: minutes on a CPU (the tests); small: the committed results; full: paper scale")
    ablate.add_argument("--seeds", type=int, help="seeds of every variant (default: the budget's `seeds`, and its `variant_seeds` for the variants it names)")
    ablate.add_argument("--suite", nargs="+", help="evaluate on these suites (every split but train) instead")
    ablate.add_argument("--data-root", help="root of the real datasets (default: $BENCH_DATA_ROOT)")
    ablate.add_argument("--out", type=Path, help="output directory (default: $BENCH_RUNS/ablations/NAME, i.e. runs/ablations/NAME; committed pages pass --out results/ablations/NAME)")
    ablate.add_argument("--resume", action="store_true", help="finish the cells a crash left half done")
    ablate.add_argument("--only", metavar="VARIANT[:SEED]", help="make this one cell (or variant) and write no table")
    ablate.add_argument("--collect", action="store_true",
                        help="make no cell: assemble from the cells on disk and name the missing ones (exit 1); "
                             "only the regime check's context baseline is evaluated when missing (no model)")
    ablate.add_argument("--list-cells", action="store_true", help="print the cells, one VARIANT:SEED a line")
    ablate.add_argument("--vae", help="pca: a diffusers AutoencoderKLWan folder (default: the shipped tiny VAE)")
    ablate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base configuration key, e.g. checkpoint=/models/genmask (TOML value)")
    _add_cluster_args(ablate)
    return parser


def _add_cluster_args(ablate: argparse.ArgumentParser) -> None:
    group = ablate.add_argument_group("cells as jobs (submitit; see docs/ablations.md, Cluster)")
    group.add_argument("--executor", choices=["inline", "local", "slurm"], default="inline",
                       help="inline: in this process (default); local: local processes; slurm: one job array")
    group.add_argument("--max-parallel", type=int, default=2, metavar="N", help="local: cells at once (default 2)")
    group.add_argument("--wait", action="store_true",
                       help="slurm: follow the jobs with a progress bar, then write the table (local always waits)")
    group.add_argument("--slurm-partition", metavar="NAME")
    group.add_argument("--gpus-per-cell", type=int, default=0, metavar="N",
                       help="GPUs of each cell (more than 1: the cell runs under torchrun, one process per GPU)")
    group.add_argument("--cpus-per-cell", type=int, metavar="N")
    group.add_argument("--mem", metavar="SIZE", help="slurm: memory per cell, e.g. 64G")
    group.add_argument("--time", metavar="TIME",
                       help="time limit per cell (minutes, HH:MM:SS or D-HH:MM:SS); a cell that reaches it is "
                            "requeued and resumes")
    group.add_argument("--array-parallelism", type=int, metavar="N", help="slurm: cells running at once")
    group.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. account=proj or qos=high (KEY= for a bare flag)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return COMMANDS[args.command](args, rest, " ".join(["python -m bench", *map(shlex.quote, argv)]))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a path of the user's that cannot be read or written (the message names it)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # unknown registry names carry a "did you mean" message
        from bench.registry import UnknownNameError

        if isinstance(exc, UnknownNameError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


def cmd_list(args: argparse.Namespace, rest: list[str], command: str) -> int:
    from tabulate import tabulate

    from bench.ablate import ablation_names
    from bench.models import MODELS
    from bench.suites import SUITES
    from bench.training import TRAINERS

    rows = []
    for name in SUITES.names():
        suite = SUITES.get(name)
        rows.append([name, ", ".join(suite.splits), "synthetic (embedded)" if suite.synthetic else "real (--data-root)"])
    print(tabulate(rows, headers=["suite", "splits", "data"], tablefmt="simple"))
    print()
    trainable = set(TRAINERS.names())
    print(tabulate([[name, "yes" if name in trainable else ""] for name in MODELS.names()],
                   headers=["model", "bench train"], tablefmt="simple"))
    print()
    searches = set(ablation_names(tuning=True))
    rows = [[name, "recipe search (not in `all`)" if name in searches else "method"] for name in ablation_names()]
    print(tabulate(rows, headers=["ablation (bench ablate)", "asks about"], tablefmt="simple"))
    return 0


def cmd_run(args: argparse.Namespace, rest: list[str], command: str) -> int:
    from bench.run_command import Runner, RunSpec

    spec = RunSpec(
        suites=args.suite, model=args.model, splits=args.split, data_root=args.data_root,
        checkpoint=args.checkpoint, model_args=_key_values(args.model_arg, "--model-arg"),
        suite_args=_key_values(args.suite_arg, "--suite-arg"), limit=args.limit, batch_size=args.batch_size,
        device=args.device, seed=args.seed, out=args.out, resume=args.resume, strict=args.strict,
        protocol=_protocol(args), progress=not args.no_progress, label=args.label, kind=args.kind,
        group=args.group, workers=args.workers,
    )
    runner = Runner(spec, command=command)
    try:
        results = runner.run()
    finally:
        runner.proc.close()
    if runner.proc.is_main:
        for metrics in results.values():
            print_metrics(metrics, args.label)
        for warning in sorted(set(runner.run_warnings)):
            print(f"warning: {warning}", file=sys.stderr)
        print(f"wrote the run to {runner.rundir.path}")
    return 0


def cmd_score(args: argparse.Namespace, rest: list[str], command: str) -> int:
    from bench.score_command import score_file

    scored = score_file(args.suite, args.split, args.predictions, out=args.out, data_root=args.data_root,
                        suite_args=_key_values(args.suite_arg, "--suite-arg"), protocol=_protocol(args),
                        command=command, label=args.label, overwrite=args.overwrite)
    print_metrics(scored.metrics, scored.label)
    for note in scored.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in scored.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote the run to {scored.path}")
    return 0


def cmd_compact(args: argparse.Namespace, rest: list[str], command: str) -> int:
    from bench.rundir.predictions import compact_run

    for run in args.runs:
        for path in compact_run(run):
            print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace, rest: list[str], command: str) -> int:
    from bench.report import build_report
    from bench.report.compare import CompareOptions
    from bench.rundir.declared import DECLARED_RUNS, undeclared_runs

    path = build_report(args.results, CompareOptions(reference=args.reference, gallery=tuple(args.gallery)))
    ignored = undeclared_runs(args.results)
    if ignored:
        print(f"note: left out {len(ignored)} run directories that {args.results / DECLARED_RUNS} does not declare: "
              f"{', '.join(ignored)}", file=sys.stderr)
    print(f"wrote {path}")
    return 0


def cmd_data(args: argparse.Namespace, rest: list[str], command: str) -> int:
    from bench.synth.build import build_synth

    path = build_synth(args.out)
    print(f"wrote the synthetic suites to {path}")
    return 0


def cmd_train(args: argparse.Namespace, rest: list[str], command: str) -> int:
    from bench.training import TRAINERS

    if args.model is None:
        if not {"-h", "--help"} & set(rest):
            raise BenchError(f"bench train needs --model: one of {', '.join(TRAINERS.names())}")
        print(f"usage: bench train --model {{{','.join(TRAINERS.names())}}} [options]\n\n"
              "Trains a model; `bench train --model M --help` lists M's options and configuration keys.")
        return 0
    return TRAINERS.get(args.model).main(rest)


def cmd_ablate(args: argparse.Namespace, rest: list[str], command: str) -> int:
    import dataclasses
    import tomllib

    from bench.ablate import ablation_names, load_ablation
    from bench.ablate.driver import Options, run

    overrides = {}
    for key, value in _key_values(args.set, "--set").items():
        try:
            overrides[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = value  # a bare string, e.g. a path
    cluster = _cluster(args)
    names = ablation_names(tuning=False) if args.name == "all" else [args.name]
    if args.name == "all" and args.only:
        raise BenchError("--only names a cell of one ablation, not of all")
    codes = []
    for name in names:  # under "all", --suite and --vae go to the ablations that have such a key
        keys = {f.name for f in dataclasses.fields(load_ablation(name).config_class)} if args.name == "all" else None
        codes.append(run(Options(
            name=name, budget=args.budget, seeds=args.seeds, data_root=args.data_root, resume=args.resume,
            suites=args.suite if keys is None or "suites" in keys else None,
            vae=args.vae if keys is None or "vae" in keys else None,
            out=args.out / name if args.out and args.name == "all" else args.out, only=args.only,
            collect=args.collect, list_cells=args.list_cells, overrides=overrides, cluster=cluster)))
    return max(codes)


def _cluster(args: argparse.Namespace):
    """`bench ablate`'s --executor and resource flags, checked."""
    from bench.ablate.executors import Cluster, minutes

    if args.max_parallel < 1 or args.gpus_per_cell < 0 or (args.cpus_per_cell or 1) < 1 \
            or (args.array_parallelism or 1) < 1:
        raise BenchError("--max-parallel, --cpus-per-cell and --array-parallelism must be at least 1, "
                         "--gpus-per-cell at least 0")
    slurm_only = [flag for flag, value in [("--slurm-partition", args.slurm_partition), ("--mem", args.mem),
                                           ("--array-parallelism", args.array_parallelism),
                                           ("--slurm-arg", args.slurm_arg)] if value]
    if slurm_only and args.executor != "slurm":
        raise BenchError(f"{', '.join(slurm_only)} only apply with --executor slurm")
    if args.time:
        minutes(args.time)  # refuse a malformed limit before anything is submitted
    return Cluster(executor=args.executor, max_parallel=args.max_parallel, partition=args.slurm_partition,
                   gpus_per_cell=args.gpus_per_cell, cpus_per_cell=args.cpus_per_cell, mem=args.mem, time=args.time,
                   array_parallelism=args.array_parallelism, slurm_args=_key_values(args.slurm_arg, "--slurm-arg"),
                   wait=args.wait)


def print_metrics(metrics: dict, label: str | None = None) -> None:
    """A small table: one row per split, percentages, titled by suite and label (default: the model)."""
    from tabulate import tabulate

    rows = []
    for split, m in metrics["splits"].items():
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
        ci = m.get("ciou_ci95")
        rows.append([split, m["n"], m["n_failed"], pct(m["ciou"]), f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else "-",
                     pct(m["giou"]), *(pct(m.get(f"prec@{x}")) for x in (0.5, 0.7, 0.9))])
    print(f"\n{metrics['suite']} / {label or metrics['model']}")
    print(tabulate(rows, headers=["split", "n", "failed", "cIoU %", "95% CI", "gIoU %", "P@0.5", "P@0.7", "P@0.9"],
                   tablefmt="simple", disable_numparse=True))  # 100.0 stays 100.0 beside 29.4


COMMANDS = {"list": cmd_list, "run": cmd_run, "score": cmd_score, "compact": cmd_compact, "report": cmd_report,
            "data": cmd_data, "train": cmd_train, "ablate": cmd_ablate}
