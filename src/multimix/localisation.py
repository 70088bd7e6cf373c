"""Localisation scores with CheXlocalize's conventions (seed 004), and saliency scored
against known lesions.

Segmentation IoU, per image and pathology, on the masks' native size:
  true_pos_only (default, as CheXlocalize's eval): IoU only where both the prediction
      and the reference are non-empty, else undefined (NaN) — it measures how well a
      detected finding is outlined, not whether it was detected;
  otherwise: IoU wherever either is non-empty (a missed or invented finding scores 0);
      undefined only when both are empty.
A pathology's IoU is the mean over images where it is defined; mIoU is the mean over
pathologies. Confidence intervals: images resampled with replacement (1,000
replicates by default, seeded), each replicate's per-pathology means and their mean
(mIoU); the interval is the replicates' 2.5th-97.5th percentiles, the point estimate
the score on the full set.

Saliency against a lesion mask (a map of any non-negative importance, the mask's size):
  hit    pointing game: the map's maximum lies inside the lesion (1) or not (0)
  mass   share of the map's total inside the lesion (a uniform map scores the lesion's
         area share; 1 = all saliency on the lesion)
  iou    IoU of the map thresholded at its own `level` quantile against the lesion
Undefined (NaN) where the lesion mask is empty or the map is all zero.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def iou(pred: np.ndarray, ref: np.ndarray, true_pos_only: bool = True) -> float:
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in size")
    p, r = pred.sum(), ref.sum()
    if (true_pos_only and (p == 0 or r == 0)) or (p == 0 and r == 0):
        return float("nan")
    return float(np.logical_and(pred, ref).sum() / np.logical_or(pred, ref).sum())


def summarise(per_image: pd.DataFrame, replicates: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """per_image: one row per image, one column per pathology (IoU or NaN) -> one row per
    pathology and one `mIoU` row: mean, lower, upper, n (images where defined)."""
    values = per_image.to_numpy(dtype=float)
    names = list(per_image.columns)

    def means(v: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # an all-NaN column (never defined) is a NaN mean, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            per = np.nanmean(v, axis=0)
            return np.append(per, np.nanmean(per))

    point = means(values)
    rng = np.random.default_rng(seed)
    draws = np.stack([means(values[rng.integers(0, len(values), len(values))]) for _ in range(replicates)]) \
        if len(values) else np.full((1, len(names) + 1), np.nan)
    tail = (1 - level) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lower, upper = np.nanpercentile(draws, tail, axis=0), np.nanpercentile(draws, 100 - tail, axis=0)
    n = np.append((~np.isnan(values)).sum(axis=0), len(values))
    return pd.DataFrame({"name": names + ["mIoU"], "mean": point, "lower": lower, "upper": upper, "n": n})


def saliency_scores(saliency: np.ndarray, lesion: np.ndarray, level: float = 0.95) -> dict[str, float]:
    saliency = np.clip(np.asarray(saliency, float), 0.0, None)
    lesion = np.asarray(lesion, bool)
    if saliency.shape != lesion.shape:
        raise ValueError(f"saliency {saliency.shape} and lesion mask {lesion.shape} differ in size")
    total = saliency.sum()
    if not lesion.any() or total <= 0:
        return {"hit": float("nan"), "mass": float("nan"), "iou": float("nan")}
    hit = float(lesion.flat[int(np.argmax(saliency))])
    mass = float(saliency[lesion].sum() / total)
    thresholded = saliency > np.quantile(saliency, level)
    return {"hit": hit, "mass": mass, "iou": iou(thresholded, lesion, true_pos_only=False)}


def phantom_lesions(manifest: pd.DataFrame, source_root: Path, ids, size: int, aspect: str) -> dict[str, np.ndarray]:
    """The exact opacity masks of pneumonia phantoms among `ids` (rows of the harmonised manifest,
    indexed by id), on the preprocessed S x S grid, placed as preprocess placed their images.
    Real sources have no such masks: the result is then empty (and nothing is scored)."""
    from multimix.data import layout
    from multimix.data.preprocess import geometry, place_on_grid, resize_mask

    found = {}
    for image_id in ids:
        row = manifest.loc[image_id]
        rel = Path(row["image_path"]).resolve().relative_to(Path(source_root).resolve())
        path = layout.phantom_lesion_path(source_root, rel)
        if path.is_file():
            g = geometry(int(row["height"]), int(row["width"]), size, aspect)
            found[image_id] = place_on_grid(resize_mask([path], g), g, size, np.uint8).astype(bool)
    return found
