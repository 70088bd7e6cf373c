"""`multimix <stage>`: the one entry point DVC stages, Snakemake rules and
people all call. Each sub-command reads `params.yaml` (or `--params`),
does one stage, and turns bad input into a one-line error (exit 2).
`--log FILE` copies everything the command prints into FILE as well (the
pipelines keep one log per stage and run under data/logs/)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from multimix import __version__
from multimix.config import DATASETS, Config, load_config
from multimix.errors import InputError
from multimix.methods import plugins


class Tee:
    """A text stream that writes to the console and to a log file, flushing both."""

    def __init__(self, console, log):
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        self.console.write(text)
        self.log.write(text)
        self.console.flush()
        self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def __getattr__(self, name):
        return getattr(self.console, name)


class ProgressBars:
    """tqdm bars created on demand by a stage's progress callbacks, all closed at the end."""

    def __init__(self, quiet: bool):
        self.quiet, self.bars = quiet, []

    def new(self, desc: str, total: int):
        from tqdm import tqdm

        self.bars.append(tqdm(total=total, desc=desc, unit="img", disable=self.quiet))
        return self.bars[-1].update

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars:
            bar.close()


def _datasets(cfg: Config, chosen: list[str] | None) -> list[str]:
    return list(chosen) if chosen else list(cfg.data.datasets)


def cmd_code(args, cfg: Config) -> None:
    from multimix import codedeps

    out = Path(args.out)
    n = codedeps.write_manifests(out)
    print(f"code: {n} manifests of the source files each stage runs -> {out}/")


def _phantom_writer_memory() -> None:
    # A phantom allocates and frees the same native-size arrays (up to 4892 x 4020) image after
    # image; keeping freed memory for reuse spares the page faults: 1.17x on MCU and CheX
    # phantoms (one process, 3 rounds each way, 2026-12-07), the same files. Workers inherit it.
    from multimix.runtime import keep_freed_memory

    keep_freed_memory()


def cmd_acquire(args, cfg: Config) -> None:
    from multimix.data.acquire import acquire

    if cfg.data.source == "synthetic":
        _phantom_writer_memory()
    receipt = acquire(cfg, show_progress=not args.quiet)
    for name, info in receipt["datasets"].items():
        print(f"{name}: {info['files']} files ({info['bytes'] / 1e6:.1f} MB, {info['origin']})")
    print(f"wrote {cfg.raw_dir / 'acquired.json'}")


def cmd_synth(args, cfg: Config) -> None:
    from multimix.data.acquire import synthesise

    _phantom_writer_memory()
    written = synthesise(cfg, _datasets(cfg, args.datasets), show_progress=not args.quiet)
    for name, n in written.items():
        print(f"{name}: {n} synthetic images in {cfg.raw_dir / name}")


def cmd_download(args, cfg: Config) -> None:
    from multimix.data.download import download

    report = download(cfg.raw_dir, _datasets(cfg, args.datasets),
                      allow_unpinned=args.allow_unpinned or cfg.download.allow_unpinned,
                      registry=args.registry or cfg.download.registry, show_progress=not args.quiet)
    print(f"downloaded {len(report['downloaded'])} archive(s), {len(report['skipped'])} already in place")
    for line in report["manual_missing"]:
        print(f"manual step needed — {line}")


def cmd_harmonise(args, cfg: Config) -> None:
    from multimix.data.harmonise import harmonise, write_outputs

    with ProgressBars(args.quiet) as bars:
        manifest, rejected, summaries = harmonise(cfg, lambda dataset, total: bars.new(f"harmonise {dataset}", total))
    out = Path(args.out) if args.out else cfg.interim_dir
    write_outputs(out, manifest, rejected, summaries)
    for s in summaries:
        print(s.line())
    print(f"manifest: {len(manifest)} images -> {out / 'manifest.csv'}; rejected: {len(rejected)} -> {out / 'rejected.csv'}")


def cmd_preprocess(args, cfg: Config) -> None:
    from multimix.data.preprocess import preprocess

    with ProgressBars(args.quiet) as bars:
        summary = preprocess(cfg, progress_factory=lambda total: bars.new("preprocess", total))
    per = ", ".join(f"{d} {n}" for d, n in summary["per_dataset"].items())
    print(f"preprocess: {summary['images']} images ({per}) in {summary['seconds']}s, {summary['rejected']} rejected "
          f"-> {cfg.processed_dir}/")


def cmd_split(args, cfg: Config) -> None:
    from multimix.data.split import describe, digest, write_splits
    from multimix.methods import describe_subsets, method_subsets

    splits = write_splits(cfg, lambda partitions: method_subsets(cfg, partitions))
    for line in describe(splits, describe_subsets):
        print(line)
    print(f"wrote {cfg.split_dir / 'splits.json'} (sha256 of canonical form {digest(splits)[:16]}…)")


def _runs(args, cfg: Config) -> list[str]:
    """The runs named by --run (each checked before torch is imported), else all of the study."""
    from multimix.study import find_run, run_names

    return [find_run(cfg, name).name for name in args.run] if args.run else run_names(cfg)


def cmd_train(args, cfg: Config) -> None:
    names = _runs(args, cfg)
    from multimix.runtime import keep_freed_memory, memory_mode, pick_device
    from multimix.training.loop import train

    if memory_mode(cfg.train.memory, pick_device(args.device or cfg.train.device), cfg.preprocess.size) == "fast":
        keep_freed_memory()
    for name in names:
        summary = train(cfg, name, device=args.device, show_progress=not args.quiet)
        print(f"{name}: best epoch {summary['best_epoch'] + 1} (val_score {summary['best_val_score']:.4f}), "
              f"{summary['parameters']:,} parameters, {summary['device']}, MLflow run {summary['mlflow_run_id']}")


def cmd_evaluate(args, cfg: Config) -> None:
    names = _runs(args, cfg)
    from multimix.evaluation import evaluate
    from multimix.methods import plugin_of
    from multimix.study import find_run

    for name in names:
        summary = evaluate(cfg, name, device=args.device)
        for line in plugin_of(find_run(cfg, name)).summary_lines(name, summary):
            print(line)


def cmd_study(args, cfg: Config) -> None:
    from multimix.study import expand

    runs = expand(cfg)
    tc = cfg.train
    if args.names:
        print("\n".join(spec.name for spec in runs))
        return
    print(f"study {cfg.study.name!r}: {len(runs)} runs, each {tc.epochs} x {tc.steps_per_epoch} = "
          f"{tc.epochs * tc.steps_per_epoch:,} optimiser steps at {cfg.preprocess.size}² "
          f"({len(runs) * tc.epochs * tc.steps_per_epoch:,} steps in all)")
    for spec in runs:
        print(f"  {spec.name:28s} preset {spec.preset:11s} |D_l^s| {spec.segmentation_labels or '—':5s} "
              f"|D_l^c| {spec.classification_labels or '—':5s} repeat {spec.repeat}")


def cmd_report(args, cfg: Config) -> None:
    from multimix.reporting import report

    written = report(cfg)
    print(f"report: {len(written)} files in {cfg.report.dir}/ (tables: table2_in_domain.md, table3_cross_domain.md)")


def cmd_calibrate(args, cfg: Config) -> None:
    from multimix.calibration import REPEATS, calibrate
    from multimix.data import difficulty

    out = Path(args.out) if args.out else Path(difficulty.__file__).with_name(difficulty.CALIBRATION_FILE)
    sweep = {task: tuple(levels) for task, levels in (("segmentation", args.seg_sweep),
                                                       ("classification", args.cls_sweep)) if levels}
    calibrate(Path(args.params), out, Path(args.work), sweep=sweep,  # the defaults fill in the rest
              repeats=tuple(args.repeats or REPEATS), headroom=not args.no_headroom)


def cmd_phantoms(args, cfg: Config) -> None:
    from multimix.data import realism
    from multimix.data.acquire import synth_level

    level = synth_level(cfg)
    real = Path(args.real) if args.real else None
    if real is not None and not real.is_dir():
        raise InputError(f"{real}: not a folder (expected real radiographs as PNG, e.g. ../shared/data/nih/images)")
    slopes = realism.figure(Path(args.out), level, real)
    print(f"wrote {args.out} (phantoms at segmentation level {level.segmentation:.3f}, classification level "
          f"{level.classification:.3f})")
    for name, beta in slopes.items():
        print(f"  {name:16s} power-spectrum slope beta {beta:.2f}")


def cmd_compare(args, cfg: Config) -> None:
    from multimix.compare import compare

    compare(args.experiment, args.preset, args.seg, args.cls, csv=args.csv, all_metrics=args.all)


def cmd_paired(args, cfg: Config | None) -> None:
    from multimix.paired import paired

    paired(Path(args.a), Path(args.b), csv=args.csv)


def cmd_predict(args, cfg: Config | None) -> None:
    from multimix import serving
    from multimix.predict import predict

    if bool(args.run) == bool(args.model):
        raise InputError("predict: give one of --run NAME (a run of this project) or --model URI (an MLflow model)")
    if args.run:
        if cfg is None:
            raise InputError(f"{args.params}: parameter file not found (--run reads the project's runs)")
        from multimix.runtime import pick_device

        bundle = serving.Bundle.from_run(cfg, args.run, pick_device(args.device or "cpu"))
    else:
        bundle = serving.load_model(args.model)
    out = Path(args.out)
    predictions, rejected = predict(bundle, args.inputs, out)
    print(f"predict ({bundle.spec.name}, {bundle.plugin.name}): {len(predictions)} images predicted, "
          f"{len(rejected)} rejected -> {out}/predictions.csv, {out}/rejected.csv")


def cmd_register(args, cfg: Config) -> None:
    from multimix import serving

    experiment = args.experiment or cfg.study.name
    version, run = serving.register(experiment, args.name, args.alias, run=args.run, preset=args.preset)
    print(f"registered model {args.name!r} version {version} from run {run} (experiment {experiment!r})"
          + (f" as @{args.alias}: models:/{args.name}@{args.alias}" if args.alias else ""))


def build_parser() -> argparse.ArgumentParser:
    # --params, -q and --log are accepted before or after the sub-command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=argparse.SUPPRESS, help="parameter file (default: params.yaml)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    common.add_argument("--log", default=argparse.SUPPRESS, metavar="FILE",
                        help="also write everything printed to FILE (its folder is created)")
    parser = argparse.ArgumentParser(prog="multimix", description=__doc__, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"multimix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, parents=[common], **k)

    p = sub.add_parser("code", help="pipeline stage 0: the source files each stage runs (import graph) -> data/code/")
    p.add_argument("--out", default="data/code", help="folder of the manifests (default: data/code)")
    p.set_defaults(func=cmd_code)

    p = sub.add_parser("acquire", help="pipeline stage 1: put raw files in place per data.source, write the receipt")
    p.set_defaults(func=cmd_acquire)

    p = sub.add_parser("synth", help="write synthetic phantoms in each source's official layout")
    p.add_argument("--datasets", nargs="+", choices=DATASETS)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("download", help="fetch, verify and unpack the public archives")
    p.add_argument("--datasets", nargs="+", choices=DATASETS)
    p.add_argument("--allow-unpinned", action="store_true", help="accept archives with no pinned checksum (records it)")
    p.add_argument("--registry", help="alternative sources YAML (mirrors)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("harmonise", help="raw files -> data/interim/manifest.csv + rejected.csv")
    p.add_argument("--out", help="output folder (default: data.interim_dir)")
    p.set_defaults(func=cmd_harmonise)

    p = sub.add_parser("preprocess", help="manifest -> one 256x256 HDF5 file per dataset in data/processed/")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("split", help="train/val/test partitions and labelled subsets -> data/splits/splits.json")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("study", help="list the runs the study in params.yaml expands to, and its budget")
    p.add_argument("--names", action="store_true", help="run names only, one per line")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("train", help="train the study's runs with MLflow tracking; resumable")
    p.add_argument("--run", action="append", help="run name (`multimix study` lists them; repeatable; default: all)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="best checkpoints on the in-domain and cross-domain test sets")
    p.add_argument("--run", action="append", help="run name (`multimix study` lists them; repeatable; default: all)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
    p.set_defaults(func=cmd_evaluate)

    for plugin in plugins():  # the methods' own stages (seed 004: pseudolabel)
        plugin.add_commands(sub)

    p = sub.add_parser("report", help="Table 2/3-style tables, t-tests and figures for all runs -> reports/")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("calibrate", help="fit the phantoms' `paper` difficulty on the paper's baselines "
                       "(hours: sweeps, confirmation, headroom) -> data/phantom_calibration.json")
    p.add_argument("--work", default="data/calibration", help="folder of the calibration projects (resumable)")
    p.add_argument("--out", help="calibration file to write (default: the package's data/phantom_calibration.json)")
    p.add_argument("--seg-sweep", nargs="+", type=float, help="segmentation levels (default 0.5 … 3.0)")
    p.add_argument("--cls-sweep", nargs="+", type=float, help="classification levels (default 0 … 1.0)")
    p.add_argument("--repeats", nargs="+", type=int, help="repeat seeds per level (default 0 1 2)")
    p.add_argument("--no-headroom", action="store_true", help="skip the all-labels, 5x-budget headroom runs")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("phantoms", help="a figure of phantoms at synth.difficulty beside real radiographs "
                       "(histograms, power spectra)")
    p.add_argument("--out", default="reports/figures/phantoms_vs_real.png", help="figure file")
    p.add_argument("--real", help="folder of real radiographs (PNG), e.g. ../shared/data/nih/images")
    p.set_defaults(func=cmd_phantoms)

    p = sub.add_parser("predict", help="a trained run or MLflow model on new images (PNG, JPEG, TIFF, DICOM): "
                       "masks, class probabilities, saliency overlays")
    p.add_argument("inputs", nargs="+", help="image files or folders (walked recursively)")
    p.add_argument("--run", help="a run of this project's study (its best.pt)")
    p.add_argument("--model", help="an MLflow model: models:/NAME@ALIAS (registered), models:/<id>, or a folder")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="for --run (default: cpu)")
    p.set_defaults(func=cmd_predict, needs_params=False)

    p = sub.add_parser("register", help="register a study's best run (by validation score) as an MLflow model "
                       "version, with an alias")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", help="alias to point at the new version (e.g. champion)")
    p.add_argument("--run", help="this run instead of the best one")
    p.add_argument("--preset", help="the best among this preset's runs")
    p.add_argument("--experiment", help="MLflow experiment (default: study.name)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("compare", help="table of MLflow runs grouped over repeats (best per column starred)")
    p.add_argument("--experiment", action="append", help="MLflow experiment name (repeatable; default: all)")
    p.add_argument("--preset", help="only this preset")
    p.add_argument("--seg", help="only this |D_l^s| (e.g. 10, 50, full)")
    p.add_argument("--cls", help="only this |D_l^c| (e.g. 100, 1000, full)")
    p.add_argument("--csv", action="store_true", help="CSV on stdout, for scripts")
    p.add_argument("--all", action="store_true", help="every test metric, not only the main ones")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("paired", help="two evaluations compared image by image (paired t, McNemar, AUC)")
    p.add_argument("a", metavar="A", help="an evaluation folder data/eval/<run>/ or its per_image.csv")
    p.add_argument("b", metavar="B", help="the other arm, scored on the same test images")
    p.add_argument("--csv", action="store_true", help="CSV on stdout, for scripts")
    p.set_defaults(func=cmd_paired, needs_params=False)
    return parser


def _interrupt(signum, frame):
    # DVC, Snakemake and SLURM stop a job with SIGTERM: unwind like Ctrl-C, so a
    # training run records itself as KILLED and temporary files are cleaned up.
    raise KeyboardInterrupt


COMMON_DEFAULTS = {"params": "params.yaml", "quiet": False, "log": None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # The common options' actions are shared by the main parser and every sub-parser, so
    # their defaults are filled in here rather than set on either (a default set on the main
    # parser would make a sub-parser overwrite a value given before the sub-command).
    args = build_parser().parse_args(argv)
    for name, value in COMMON_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    log = None
    if args.log:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        log = open(args.log, "w", buffering=1)
        sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
        print(f"multimix {__version__} {' '.join(argv if argv is not None else sys.argv[1:])} "
              f"({time.strftime('%Y-%m-%d %H:%M:%S')})")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # `predict --model` and `paired` need no project: the model carries its parameters, and
        # two per_image.csv files carry everything `paired` reads
        optional = not getattr(args, "needs_params", True) and not Path(args.params).is_file()
        cfg = None if optional else load_config(args.params)
        args.func(args, cfg)
    except InputError as exc:
        print(f"multimix: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `multimix study | head`: the reader left, nothing is wrong (before
        # `except Exception`, which would re-raise it)
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as exc:
        if not type(exc).__module__.startswith("mlflow."):
            raise
        # the tracking server refused (401 without credentials, 403 without permission) or is
        # unreachable: one line, not MLflow's traceback
        from multimix import tracking

        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        hint = (" (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)" if " 401" in first
                or "401 " in first else "")
        print(f"multimix: error: MLflow at {tracking.tracking_uri()}: {first}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("multimix: interrupted", file=sys.stderr)
        return 130
    finally:
        if log:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            log.close()
    if not args.quiet:
        print(f"multimix {args.command}: done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
