"""Seed 004's trained runs as files: the pseudo-label file, a best.pt's network, and the
per-pathology AUC every role is scored by (training, pseudo-labels and evaluation read them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from multimix.errors import InputError
from multimix.methods.chexseg.network import DeepLabV3Plus, pathology_classifier

PSEUDO_LABELS = "pseudo_labels.h5"  # and pseudo_labels.json: thresholds, counts, quality on phantoms


def pseudo_label_file(cfg) -> Path:
    """The study's pseudo-labels (`multimix pseudolabel`; its Grad-CAM source in the file's attrs)."""
    return Path(cfg.seed004.pseudo_dir) / PSEUDO_LABELS


def net_weights(best: dict) -> dict:
    """The network of a seed-004 best.pt."""
    if "net" not in best:
        raise InputError("not a seed-004 checkpoint (no 'net' weights)")
    return best["net"]


def load_predictor(best: dict, device) -> torch.nn.Module:
    """The trained network of a seed-004 best.pt: logits (N, 10[, H, W])."""
    net = pathology_classifier(str(best["architecture"])) if best["role"] == "classifier" else DeepLabV3Plus()
    net.load_state_dict(best["net"])
    return net.to(device).eval()


def pathology_aucs(labels: np.ndarray, probabilities: np.ndarray) -> list[float]:
    """ROC AUC per pathology over the images whose label is known and both classes present."""
    from sklearn.metrics import roc_auc_score

    out = []
    for c in range(labels.shape[1]):
        known = ~np.isnan(labels[:, c])
        y = labels[known, c]
        out.append(float(roc_auc_score(y, probabilities[known, c])) if len(set(y.tolist())) == 2 else float("nan"))
    return out

