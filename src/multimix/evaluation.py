"""`multimix evaluate --run NAME`: the run's best checkpoint, scored by its method.

The method's `evaluate` hook returns one row per test image (and pathology, for seed 004),
a summary per test set and a few example arrays: MultiMix and seed 003 on the paper's test
sets (`multimix.testsets`: in-domain CheX and JSRT, cross-domain NIHX and MCU), seed 004 on
CheXlocalize's (methods/chexseg/evaluation.py). Writes, under `data/eval/NAME/`:
  per_image.csv  the rows, for distributions and paired tests;
  metrics.json   the summary (DVC metrics);
  examples.npz   images with saliency and masks for the report figures.
The summary is also logged to the run's MLflow record as `test_<dataset>_<metric>`.
"""

from __future__ import annotations

import json

import numpy as np

from multimix import paths, tracking
from multimix.config import Config
from multimix.errors import InputError
from multimix.methods import plugin_of
from multimix.runtime import pick_device
from multimix.study import find_run


def evaluate(cfg: Config, run: str, device: str | None = None, use_mlflow: bool = True) -> dict:
    """Evaluate run `run` of the study with its method's evaluation; writes per_image.csv,
    metrics.json and examples.npz and returns the summary."""
    spec = find_run(cfg, run)
    best_path = paths.best(cfg, run)
    if not best_path.is_file():
        raise InputError(f"{best_path}: not found (run `multimix train --run {run}` first)")
    dev = pick_device(device or cfg.train.device)
    per_image, summary, examples = plugin_of(spec).evaluate(cfg, spec, dev)
    out_dir = paths.eval_dir(cfg, run)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_image.to_csv(out_dir / "per_image.csv", index=False)
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    np.savez_compressed(out_dir / "examples.npz", **examples)
    if use_mlflow:
        _log(cfg, run, metric_names(summary))
    return summary


def metric_names(summary: dict, prefix: str = "test") -> dict[str, float]:
    """A (nested) evaluation summary as MLflow metrics: test_<key>_<key>…, finite numbers only
    (e.g. test_jsrt_dice; seed 004's test_auc_Cardiomegaly)."""
    out = {}
    for key, value in summary.items():
        name = f"{prefix}_{key}".replace(" ", "_")
        if isinstance(value, dict):
            out.update(metric_names(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            out[name] = float(value)
    return out


def _log(cfg: Config, run: str, values: dict[str, float]) -> None:
    """Add the test metrics to the run's training record in MLflow (where the store has it)."""
    import mlflow

    info = cfg.checkpoint_dir / run / "run_info.json"
    run_id = json.loads(info.read_text()).get("mlflow_run_id") if info.exists() else None
    if not run_id:
        return
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    try:
        client.get_run(run_id)
    except Exception:
        return  # a store without this run (e.g. another MLFLOW_TRACKING_URI)
    for name, value in values.items():
        client.log_metric(run_id, name, value)
