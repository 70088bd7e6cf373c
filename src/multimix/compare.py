"""`multimix compare`: any MLflow runs side by side, grouped over repeats.

Rows are (experiment, training configuration, preset, |D_l^s|, |D_l^c|):
runs trained with other settings (say, a DVC experiment with more epochs)
are never averaged with each other — their `config` (a digest of every
training parameter except the run's own preset, labels and repeat) differs.
Within a row, each repeat contributes its latest *evaluated* record (one with
test metrics), so a later run that was never evaluated cannot hide results;
rows with no evaluated record show their validation score only. Cells are
mean ± std over repeats; `*` marks the best row of each metric column
(highest, but lowest for Hausdorff distances and losses); counts are not
scores and are never starred. `—` marks a value that does not exist.
`--csv` prints plain numbers (empty where missing) for scripts.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from multimix import tracking
from multimix.errors import InputError

LOWER_IS_BETTER = ("hausdorff", "loss")
COUNTS = ("_images", "_undefined")  # per-dataset counts logged beside the scores
MISSING = "—"


def fetch(experiments: list[str] | None = None, preset: str | None = None, segmentation_labels: str | None = None,
          classification_labels: str | None = None) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = mlflow.MlflowClient()
    found = client.search_experiments()
    chosen = [e for e in found if not experiments or e.name in experiments]
    if experiments and not chosen:
        raise InputError(f"no MLflow experiment named {', '.join(experiments)} in {tracking.tracking_uri()} "
                         f"(have: {', '.join(e.name for e in found) or 'none'})")
    filters = ["tags.preset != ''"]
    if preset:
        filters.append(f"tags.preset = '{preset}'")
    if segmentation_labels:
        filters.append(f"tags.segmentation_labels = '{segmentation_labels}'")
    if classification_labels:
        filters.append(f"tags.classification_labels = '{classification_labels}'")
    runs = mlflow.search_runs(experiment_ids=[e.experiment_id for e in chosen], filter_string=" and ".join(filters),
                              output_format="pandas")
    if runs.empty:
        return runs
    names = {e.experiment_id: e.name for e in chosen}
    runs["experiment"] = runs["experiment_id"].map(names)
    return runs


MAIN_METRICS = ("accuracy", "f1_normal", "f1_pneumonia", "auc", "dice", "jaccard", "hausdorff")


def summarise(runs: pd.DataFrame, all_metrics: bool = False) -> pd.DataFrame:
    runs = runs.copy()
    for tag in ("tags.segmentation_labels", "tags.classification_labels", "tags.config_digest"):
        if tag not in runs:
            runs[tag] = ""
        # a task the preset does not learn has no label count (older runs logged "None")
        runs[tag] = runs[tag].fillna("").replace("None", "").astype(str)
    runs["config"] = runs["tags.config_digest"].str[:8]
    keys = ["experiment", "config", "tags.preset", "tags.segmentation_labels", "tags.classification_labels"]
    # The record of a repeat: its latest evaluated run (one with test metrics), else its latest run.
    test_cols = [c for c in runs.columns if c.startswith("metrics.test_")]
    runs["evaluated"] = runs[test_cols].notna().any(axis=1) if test_cols else False
    runs = runs.sort_values(["evaluated", "start_time"], ascending=False).drop_duplicates(keys + ["tags.repeat"])

    def wanted(col: str) -> bool:
        if col == "metrics.best_val_score":
            return True
        if not col.startswith("metrics.test_"):
            return False
        return all_metrics or col.rsplit("_", 1)[-1] in MAIN_METRICS or any(col.endswith(m) for m in MAIN_METRICS)

    metric_cols = sorted(c for c in runs.columns if wanted(c) and runs[c].notna().any())
    grouped = runs.groupby(keys, dropna=False)
    table = grouped[metric_cols].agg(["mean", "std"])
    table.columns = [f"{m.removeprefix('metrics.')}_{stat}" for m, stat in table.columns]
    table.insert(0, "repeats", grouped.size())
    table = table.reset_index().rename(columns={"tags.preset": "preset", "tags.segmentation_labels": "seg_labels",
                                                "tags.classification_labels": "cls_labels"})
    return table.sort_values(["experiment", "config", "preset", "seg_labels", "cls_labels"], ignore_index=True)


def render(table: pd.DataFrame) -> str:
    """mean ± std cells with the best of each score column starred."""
    metrics = [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]
    out = table[["experiment", "config", "preset", "seg_labels", "cls_labels", "repeats"]].copy()
    out[["config", "seg_labels", "cls_labels"]] = out[["config", "seg_labels", "cls_labels"]].replace("", MISSING)
    for m in metrics:
        mean, std = table[f"{m}_mean"], table[f"{m}_std"]
        count = m.endswith(COUNTS)
        best = mean.min() if any(k in m for k in LOWER_IS_BETTER) else mean.max()
        cells = []
        for mu, sd in zip(mean, std):
            if not np.isfinite(mu):
                cells.append(MISSING)
                continue
            if count:
                cells.append(f"{mu:g}")
                continue
            text = f"{mu:.3f}" + (f" ± {sd:.3f}" if np.isfinite(sd) else "")
            cells.append(("*" if np.isclose(mu, best) and mean.notna().sum() > 1 else "") + text)
        out[m] = cells
    return out.to_string(index=False)


def compare(experiments=None, preset=None, segmentation_labels=None, classification_labels=None, csv=False,
            all_metrics=False, stream=sys.stdout) -> pd.DataFrame:
    runs = fetch(experiments, preset, segmentation_labels, classification_labels)
    if runs.empty:
        print(f"no matching runs in {tracking.tracking_uri()}", file=stream)
        return runs
    table = summarise(runs, all_metrics)
    if csv:
        table.to_csv(stream, index=False)
    else:
        print(render(table), file=stream)
    return table
