"""Train and evaluate the study of a params file on one device, without MLflow.

For a machine that has the data stages' outputs (data/processed, data/splits)
but not the pipeline's tools (DVC, MLflow), e.g. a GPU node: it runs the same
`train` and `evaluate` as `multimix train` / `multimix evaluate` and prints,
per run, the wall time of training and of evaluation, the peak device memory
and the test scores.

`--suffix S` writes checkpoints, runs and evaluations into sibling folders
(`data/runs-S`, ...), so a second pass trains from scratch beside the first;
`--compare S` then compares each run's `history.csv` with its twin. On CUDA
the convolution kernels are not bitwise deterministic, so this measures how
far two identical runs drift apart, which a CPU run (byte-identical) never
does. Several such passes started at once (`--runs A` in one process, `--runs
B` in another) measure several trainings sharing one GPU.

    python bench/device_study.py [--params params.yaml] [--device cuda] [--runs NAME ...] [--suffix S]
    python bench/device_study.py --compare S
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import pandas as pd
import torch

from multimix.config import Config, load_config
from multimix.evaluation import evaluate
from multimix.study import run_names
from multimix.training.loop import train


def scores(summary: dict) -> str:
    parts = []
    for dataset, v in summary.items():
        if isinstance(v, dict) and "task" in v:
            main = f"Dice {v['dice']:.4f}" if v["task"] == "segmentation" else \
                f"acc {v['accuracy']:.4f} AUC {v['auc']:.4f}"
            parts.append(f"{dataset} {main}")
    return "; ".join(parts)


def with_suffix(cfg: Config, suffix: str) -> Config:
    """The same study with its checkpoints, runs and evaluations in `<folder>-<suffix>`."""
    if not suffix:
        return cfg
    train_cfg = dataclasses.replace(cfg.train, checkpoint_dir=f"{cfg.train.checkpoint_dir}-{suffix}",
                                    runs_dir=f"{cfg.train.runs_dir}-{suffix}")
    return dataclasses.replace(cfg, train=train_cfg,
                               evaluate=dataclasses.replace(cfg.evaluate, dir=f"{cfg.evaluate.dir}-{suffix}"))


def train_and_evaluate(cfg: Config, names: list[str], device: str) -> dict:
    out = {}
    for name in names:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        summary = train(cfg, name, device=device, show_progress=False, use_mlflow=False, log=lambda *_: None)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        result = evaluate(cfg, name, device=device, use_mlflow=False)
        eval_s = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
        row = out[name] = {"train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "peak_MiB": round(peak),
                           "best_epoch": summary["best_epoch"] + 1, "scores": scores(result)}
        print(f"{name:24s} train {train_s:7.1f} s  evaluate {eval_s:5.1f} s  peak {peak:7.0f} MiB  "
              f"best epoch {row['best_epoch']:3d}  {row['scores']}", flush=True)
    return out


def compare(cfg: Config, suffix: str) -> None:
    twin = with_suffix(cfg, suffix)
    for name in run_names(cfg):
        a, b = (c.runs_dir / name / "history.csv" for c in (cfg, twin))
        if not (a.is_file() and b.is_file()):
            print(f"{name:24s} not compared: {a if not a.is_file() else b} missing")
            continue
        ha, hb = pd.read_csv(a), pd.read_csv(b)
        numeric = [c for c in ha.select_dtypes("number").columns if c in hb.columns]
        diff = (ha[numeric] - hb[numeric]).abs().max()
        worst = diff.idxmax()
        verdict = "identical" if diff.max() == 0 else f"differ, most in {worst}: max |diff| {diff.max():.3g}"
        print(f"{name:24s} histories {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", nargs="+", help="a subset of the study's runs (default: all)")
    parser.add_argument("--suffix", default="", help="write into <folder>-SUFFIX (a pass beside the first)")
    parser.add_argument("--compare", metavar="SUFFIX", help="compare the histories with the SUFFIX pass; no training")
    args = parser.parse_args()
    cfg = load_config(args.params)
    if args.compare:
        compare(cfg, args.compare)
        return
    names = args.runs or run_names(cfg)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {device}; study {cfg.study.name!r}: {len(names)} runs", flush=True)
    result = train_and_evaluate(with_suffix(cfg, args.suffix), names, args.device)
    print(json.dumps({"device": device, "torch": torch.__version__, "runs": result}))


if __name__ == "__main__":
    main()
