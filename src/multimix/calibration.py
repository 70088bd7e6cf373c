"""`multimix calibrate`: the phantoms' `paper` difficulty, fitted on the paper's baselines only.

The MultiMix paper's baselines (Table 2, `shared/seeds/002_…`) reach Dice 0.634 (U-Net at 10
labelled JSRT images) and accuracy 0.732 (Enc at 100 labelled CheX images). `paper` is the
difficulty at which the same two baselines, trained by this pipeline at the default's budget
and image size (`params.yaml`'s train and preprocess sections), land in the ranges

  segmentation    U-Net-10  Dice 0.63-0.75
  classification  Enc-100   accuracy 0.70-0.78, AUC >= 0.75, both classes predicted

Nothing else is looked at: no multi-task model is trained here, and no study's test set is
used. Every image comes from a calibration seed (`CALIBRATION_SEED`) that no study uses; each
baseline is selected on its project's validation images, as in the studies, and scored on the
seed's held-out images (the partition `multimix split` calls test, here the calibration's own
validation data).

The steps, each a real run of the pipeline's stages (acquire, harmonise, preprocess, split,
train, evaluate) in a project folder of its own under `--work`:
  1. segmentation sweep: U-Net-10, 3 repeats, at each level of `--seg-sweep` (JSRT only: its
     phantoms carry no pneumonia, so the classification level does not matter);
  2. the fit: an isotonic (non-increasing) fit of the mean Dice over the levels, and the level
     where it crosses the centre of the range (linear between sweep points);
  3. classification sweep at that segmentation level: Enc-100, 3 repeats (CheX only); its fit;
  4. confirmation at the chosen pair: both baselines again, 3 repeats: the calibration table;
  5. headroom at the chosen pair: the same baselines with all labels of a larger training pool
     and 5x the budget must reach Dice >= 0.88 and accuracy >= 0.85, or the difficulty comes
     from destroyed information that no method can recover.
The raw results of every run, the fits and the chosen levels go into the calibration file
(`data/phantom_calibration.json`, package data read by `difficulty.resolve`). A finished project
is not run again when the command is repeated (its `result.json` is reused while its params and
its phantoms' bytes are unchanged), so a killed calibration resumes. Freeze the file before any
multi-task run; never retune after seeing a multi-task model's score — recalibrate from scratch
and report both.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from multimix.config import load_config

TARGETS = {"segmentation": (0.63, 0.75), "classification": (0.70, 0.78)}
AUC_MIN = 0.75
HEADROOM = {"segmentation": 0.88, "classification": 0.85}
PAPER = {"segmentation": 0.634, "classification": 0.732}  # Table 2: U-Net-10 Dice, Enc-100 accuracy
CALIBRATION_SEED = 1000
# The segmentation level reaches past the literature's end (only variability widens there, see
# `difficulty.py`); the classification level is swept from 0, since at a hard segmentation level
# (harder images) Enc-100 may cross low (it was near chance at (1, 1) in a probe).
SWEEP = {"segmentation": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0), "classification": (0.0, 0.25, 0.5, 0.75, 1.0)}
REPEATS = (0, 1, 2)
HEADROOM_BUDGET = 5
# Calibration projects: the default's training images and more held-out ones (for a tight score).
COUNTS = {
    "segmentation": {"jsrt": {"nodule": 40, "non_nodule": 40}},   # fold 1: 36 train, 4 val; fold 2: 40
    "classification": {"chex": {"train_normal": 40, "train_pneumonia": 110, "val_normal": 4, "val_pneumonia": 4,
                                "test_normal": 90, "test_pneumonia": 150}},  # Kermany's test ratio
}
HEADROOM_COUNTS = {
    "segmentation": {"jsrt": {"nodule": 154, "non_nodule": 93}},  # Table 1: 111 train (all labelled)
    "classification": {"chex": {"train_normal": 260, "train_pneumonia": 740, "val_normal": 4, "val_pneumonia": 4,
                                "test_normal": 90, "test_pneumonia": 150}},
}
BASELINE = {"segmentation": ("unet", "jsrt", 10), "classification": ("enc", "chex", 100)}


def _paths(folder: Path) -> dict:
    return {
        "data": {"raw_dir": str(folder / "raw"), "interim_dir": str(folder / "interim")},
        "preprocess": {"processed_dir": str(folder / "processed")},
        "split": {"split_dir": str(folder / "splits")},
        "train": {"runs_dir": str(folder / "runs"), "checkpoint_dir": str(folder / "checkpoints")},
        "evaluate": {"dir": str(folder / "eval")},
        "report": {"dir": str(folder / "reports")},
        "seed004": {"pseudo_dir": str(folder / "pseudo")},
    }


def project_params(base: dict, task: str, levels: dict, folder: Path, repeats, headroom: bool = False) -> dict:
    """The params of one calibration project: the base file's budget and image size, one
    source, the calibration seed, the difficulty numbers, one baseline preset."""
    preset, dataset, labels = BASELINE[task]
    p = json.loads(json.dumps(base))  # a deep copy
    for section, values in _paths(folder).items():
        p.setdefault(section, {}).update(values)
    p["data"]["datasets"] = [dataset]
    p["synth"].update(seed=CALIBRATION_SEED, preset="small", chex_layout="mendeley",
                      counts=(HEADROOM_COUNTS if headroom else COUNTS)[task],
                      difficulty={k: float(v) for k, v in levels.items()})
    size = "full" if headroom else labels
    p["split"].update(segmentation_dataset="jsrt", classification_dataset="chex", repeats=list(repeats),
                      segmentation_sizes=[10, "full"], classification_sizes=[100, "full"])
    study = {"name": f"calibration-{task}", "repeats": list(repeats),
             "presets": {"segmentation": [preset] if task == "segmentation" else [],
                         "classification": [preset] if task == "classification" else [], "multitask": []},
             "segmentation_labels": [size] if task == "segmentation" else [10],
             "classification_labels": [size] if task == "classification" else [100],
             "multitask_labels": [], "chexseg": base["study"]["chexseg"]}
    p["study"] = study
    if headroom:
        p["train"].update(epochs=p["train"]["epochs"] * HEADROOM_BUDGET,
                          lr_step_epochs=p["train"]["lr_step_epochs"] * HEADROOM_BUDGET)
    return p


def run_project(params: dict, folder: Path, log=print) -> list[dict]:
    """Run one calibration project's stages (or reuse its finished result) -> one row per run.

    A result is reused only when its params are the same and the phantoms they generate now are
    the same bytes (the acquire receipt's content digests): a change of the phantom code that
    moves any pixel reruns the project, one that moves none (e.g. beyond the levels swept) does
    not."""
    from multimix.data.acquire import acquire
    from multimix.data.harmonise import harmonise, write_outputs
    from multimix.data.preprocess import preprocess
    from multimix.data.split import write_splits
    from multimix.evaluation import evaluate
    from multimix.methods import method_subsets
    from multimix.study import run_names
    from multimix.training.loop import train

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_config(path)
    started = time.time()
    receipt = acquire(cfg, show_progress=False, log=log)
    raw = {dataset: entry.get("sha256") for dataset, entry in receipt["datasets"].items()}
    result = folder / "result.json"
    if result.is_file():
        done = json.loads(result.read_text())
        if done.get("params") == params and done.get("raw") == raw:
            return done["rows"]
    manifest, rejected, summaries = harmonise(cfg)
    write_outputs(cfg.interim_dir, manifest, rejected, summaries)
    preprocess(cfg)
    write_splits(cfg, lambda partitions: method_subsets(cfg, partitions))
    rows = []
    for run in run_names(cfg):
        summary = train(cfg, run, show_progress=False, log=log, use_mlflow=False)
        scores = evaluate(cfg, run, use_mlflow=False)
        per_image = pd.read_csv(Path(cfg.evaluate.dir) / run / "per_image.csv")
        task = next(iter(scores.values()))["task"]
        row = {"run": run, "repeat": int(run.rsplit("-r", 1)[1]), "best_epoch": summary["best_epoch"] + 1,
               "steps": cfg.train.epochs * cfg.train.steps_per_epoch, "images": int(len(per_image))}
        values = next(iter(scores.values()))
        if task == "segmentation":
            row |= {"dice": values["dice"]}
        else:
            predicted = set(per_image["predicted"].astype(int))
            row |= {"accuracy": values["accuracy"], "auc": values["auc"], "both_classes": predicted == {0, 1},
                    "predicted_pneumonia": float(per_image["predicted"].mean())}
        log(f"calibration {folder.name} {run}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                            for k, v in row.items() if k != "run"))
        rows.append(row)
    result.write_text(json.dumps({"params": params, "raw": raw, "rows": rows, "seconds": round(time.time() - started)},
                                 indent=1) + "\n")
    return rows


def isotonic_fit(levels, means) -> np.ndarray:
    """Non-increasing least-squares fit of `means` over increasing `levels` (pool adjacent
    violators): the baseline's score can only fall as the phantoms get harder."""
    blocks = [[m, 1.0] for m in means]
    merged: list[list[float]] = []
    for value, weight in blocks:
        merged.append([value, weight, 1])
        while len(merged) > 1 and merged[-2][0] < merged[-1][0]:
            v2, w2, n2 = merged.pop()
            v1, w1, n1 = merged.pop()
            merged.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([[v] * int(n) for v, _, n in merged])


def choose_level(levels, fitted, target: float) -> float | None:
    """The level where the fitted curve crosses `target` (linear between sweep points); None
    when the whole sweep is above or below it."""
    levels, fitted = np.asarray(levels, float), np.asarray(fitted, float)
    if fitted[0] < target or fitted[-1] > target:
        return None
    for i in range(len(levels) - 1):
        a, b = fitted[i], fitted[i + 1]
        if a >= target >= b:
            return float(levels[i] if a == b else levels[i] + (a - target) / (a - b) * (levels[i + 1] - levels[i]))
    return float(levels[-1])


def _metric(task: str) -> str:
    return "dice" if task == "segmentation" else "accuracy"


def summarise(rows: list[dict], task: str) -> dict:
    metric = _metric(task)
    values = [r[metric] for r in rows]
    out = {metric: {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "values": values}}
    if task == "classification":
        out["auc"] = {"mean": float(np.mean([r["auc"] for r in rows])), "values": [r["auc"] for r in rows]}
        out["both_classes"] = all(r["both_classes"] for r in rows)
    return out


def in_range(summary: dict, task: str) -> bool:
    lo, hi = TARGETS[task]
    ok = lo <= summary[_metric(task)]["mean"] <= hi
    if task == "classification":
        ok = ok and summary["auc"]["mean"] >= AUC_MIN and summary["both_classes"]
    return ok


def _sweep(base, task, fixed: dict, sweep, repeats, work: Path, log) -> tuple[list[dict], dict]:
    points, means = [], []
    for level in sweep:
        levels = dict(fixed, **{task: float(level)})
        name = f"{task}-s{levels['segmentation']:.3f}-c{levels['classification']:.3f}"
        rows = run_project(project_params(base, task, levels, work / name, repeats), work / name, log)
        points.append({"levels": levels, "rows": rows, "summary": summarise(rows, task)})
        means.append(points[-1]["summary"][_metric(task)]["mean"])
    fitted = isotonic_fit(list(sweep), means)
    target = sum(TARGETS[task]) / 2
    chosen = choose_level(list(sweep), fitted, target)
    fit = {"method": "isotonic (non-increasing) fit of the mean over repeats; linear between sweep points",
           "levels": [float(v) for v in sweep], "means": means, "fitted": [float(v) for v in fitted],
           "target": target, "chosen": chosen}
    log(f"calibration {task}: means {[round(m, 4) for m in means]} at {list(sweep)} -> level {chosen}")
    return points, fit


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except Exception:
        return ""


def calibrate(params_path: Path, out: Path, work: Path, sweep: dict | None = None, repeats=REPEATS,
              headroom: bool = True, log=print) -> dict:
    sweep = dict(SWEEP, **(sweep or {}))
    base = yaml.safe_load(Path(params_path).read_text())
    load_config(params_path)  # the base file must be valid
    work = Path(work).resolve()  # the projects' params hold absolute paths: `--work data/x` and
    work.mkdir(parents=True, exist_ok=True)  # its absolute spelling must reuse the same results
    started = time.time()
    seg_points, seg_fit = _sweep(base, "segmentation", {"classification": 0.0}, sweep["segmentation"],
                                   repeats, work, log)
    if seg_fit["chosen"] is None:
        raise SystemExit(f"calibrate: no segmentation level in {list(sweep['segmentation'])} puts U-Net-10 at Dice "
                         f"{seg_fit['target']:.2f} (means {seg_fit['means']}); widen the sweep or rebalance the phantoms")
    d_s = round(seg_fit["chosen"], 3)
    cls_points, cls_fit = _sweep(base, "classification", {"segmentation": d_s}, sweep["classification"],
                                   repeats, work, log)
    if cls_fit["chosen"] is None:
        raise SystemExit(f"calibrate: no classification level in {list(sweep['classification'])} puts Enc-100 at accuracy "
                         f"{cls_fit['target']:.2f} (means {cls_fit['means']}); widen the sweep or rebalance the phantoms")
    chosen = {"segmentation": d_s, "classification": round(cls_fit["chosen"], 3)}
    confirmation, head = {}, {}
    for task in ("segmentation", "classification"):
        name = f"confirm-{task}-s{chosen['segmentation']:.3f}-c{chosen['classification']:.3f}"
        rows = run_project(project_params(base, task, chosen, work / name, repeats), work / name, log)
        confirmation[task] = {"rows": rows, "summary": summarise(rows, task)}
        confirmation[task]["in_range"] = in_range(confirmation[task]["summary"], task)
        if headroom:
            name = f"headroom-{task}-s{chosen['segmentation']:.3f}-c{chosen['classification']:.3f}"
            rows = run_project(project_params(base, task, chosen, work / name, repeats[:1], headroom=True),
                               work / name, log)
            summary = summarise(rows, task)
            head[task] = {"rows": rows, "summary": summary, "threshold": HEADROOM[task],
                          "labels": "full", "budget": f"{HEADROOM_BUDGET}x",
                          "reached": summary[_metric(task)]["mean"] >= HEADROOM[task]}
    record = {
        "levels": {"easy": {"segmentation": 0.0, "classification": 0.0}, "paper": chosen},
        "targets": {"segmentation": {"baseline": "unet at 10 JSRT labels", "dice": list(TARGETS["segmentation"]),
                                     "paper": PAPER["segmentation"]},
                    "classification": {"baseline": "enc at 100 CheX labels", "accuracy": list(TARGETS["classification"]),
                                       "auc_min": AUC_MIN, "both_classes": True, "paper": PAPER["classification"]},
                    "headroom": HEADROOM},
        "protocol": {"calibration_seed": CALIBRATION_SEED, "repeats": list(repeats), "sweep": {t: [float(v) for v in levels] for t, levels in sweep.items()},
                     "counts": COUNTS, "headroom_counts": HEADROOM_COUNTS, "headroom_budget": HEADROOM_BUDGET,
                     "budget": {k: base["train"][k] for k in ("epochs", "steps_per_epoch", "batch_size", "lr")},
                     "image_size": base["preprocess"]["size"],
                     "scored_on": "the calibration seed's held-out images (its test partition; no study uses this "
                                  "seed); checkpoints selected on its validation images"},
        "sweeps": {"segmentation": {"points": seg_points, "fit": seg_fit},
                   "classification": {"points": cls_points, "fit": cls_fit}},
        "confirmation": confirmation,
        "headroom": head,
        "provenance": {"command": "multimix calibrate", "commit": _git_commit(),
                       "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
                       "seconds": round(time.time() - started)},
    }
    if out.is_file():  # earlier calibrations (superseded families) stay on record
        record["superseded"] = json.loads(out.read_text()).get("superseded", [])
    out.write_text(json.dumps(record, indent=1) + "\n")
    log(f"calibration written to {out}: paper = {chosen}; confirmation "
        + ", ".join(f"{t} {'in range' if c['in_range'] else 'OUT OF RANGE'}" for t, c in confirmation.items())
        + ("; headroom " + ", ".join(f"{t} {'reached' if h['reached'] else 'NOT reached'}" for t, h in head.items())
           if head else ""))
    return record
