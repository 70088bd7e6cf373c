"""Evaluation metrics of the paper (section 3.2).

Classification (scikit-learn): accuracy, F1 of the normal class (F1-N) and of
the pneumonia class (F1-P), ROC curve and its AUC; precision and recall as
the mean over classes (macro), which seed 003's tables report as PR and RE.
With more than two classes (seed 003's CCX: normal, TB, nodule) F1 is given
per class (f1_<k>) and AUC is the one-vs-rest macro mean.

Segmentation, per image, on binary masks of the evaluation grid (256x256):
  DS    Dice = 2|A∩B| / (|A|+|B|)
  JS    Jaccard = |A∩B| / |A∪B|
  SSIM  structural similarity of the two masks as images in {0, 1}
        (scikit-image, data_range 1, default 7x7 window)
  HD    average Hausdorff distance, in pixels of the evaluation grid: the
        modified Hausdorff distance of Dubuisson & Jain (scikit-image
        `hausdorff_distance(method="modified")`), i.e. the larger of the two
        mean directed distances, between the masks' boundary pixels
  P     precision = |A∩B| / |A|   (A = prediction)
  R     recall    = |A∩B| / |B|   (B = reference); also reported as SN, pixel
        sensitivity, the name seed 003's tables use
  SP    pixel specificity = |¬A∩¬B| / |¬B|
  F1    pixel F1 averaged over the two classes (lung and background). The
        lung class's F1 alone is exactly Dice; seed 003 lists F1 beside DS
        with other values without defining it, and the two-class mean is the
        reading that differs from DS (it also rewards a correct background).
Empty-mask rule: when prediction and reference are both empty every score is
perfect (DS = JS = P = R = SN = SP = F1 = 1, HD = 0); when exactly one is empty, DS = JS = 0,
P, R and SP are 0 where their denominator is non-empty (1 where it is empty) and
HD is undefined (NaN) — tables then report the mean over defined values and
the number of undefined ones.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import hausdorff_distance, structural_similarity
from skimage.segmentation import find_boundaries
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score, roc_curve

SEGMENTATION_METRICS = ("dice", "jaccard", "ssim", "hausdorff", "precision", "recall", "sensitivity",
                        "specificity", "f1")
CLASSIFICATION_METRICS = ("accuracy", "f1_normal", "f1_pneumonia", "auc", "precision", "recall")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two binary masks; 1 when both are empty (the empty-mask rule)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = pred.sum() + ref.sum()
    return float(2 * np.logical_and(pred, ref).sum() / total) if total else 1.0


def segmentation_scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    inter = np.logical_and(pred, ref).sum()
    n_pred, n_ref = pred.sum(), ref.sum()
    union = np.logical_or(pred, ref).sum()
    if n_pred == 0 and n_ref == 0:
        return dict.fromkeys(SEGMENTATION_METRICS, 1.0) | {"hausdorff": 0.0}
    ssim = structural_similarity(pred.astype(np.float64), ref.astype(np.float64), data_range=1.0)
    if n_pred == 0 or n_ref == 0:
        hd = float("nan")
    else:
        hd = float(hausdorff_distance(find_boundaries(pred, mode="inner"), find_boundaries(ref, mode="inner"),
                                      method="modified"))
    # the background class: true negatives against the reference's background
    n_bg_ref, n_bg_pred = ref.size - n_ref, pred.size - n_pred
    true_neg = n_bg_ref - (n_pred - inter)
    recall = float(inter / n_ref) if n_ref else 1.0 * (n_pred == 0)
    background_f1 = float(2 * true_neg / (n_bg_ref + n_bg_pred)) if n_bg_ref + n_bg_pred else 1.0
    return {
        "dice": dice(pred, ref),
        "jaccard": float(inter / union),
        "ssim": float(ssim),
        "hausdorff": hd,
        "precision": float(inter / n_pred) if n_pred else 1.0 * (n_ref == 0),
        "recall": recall,
        "sensitivity": recall,
        "specificity": float(true_neg / n_bg_ref) if n_bg_ref else 1.0 * (n_bg_pred == 0),
        "f1": (dice(pred, ref) + background_f1) / 2,
    }


def classification_scores(labels, probabilities) -> dict[str, float]:
    """`probabilities`: P(pneumonia) per image; the prediction is P >= 0.5."""
    labels = np.asarray(labels, int)
    probabilities = np.asarray(probabilities, float)
    pred = (probabilities >= 0.5).astype(int)
    both = len(np.unique(labels)) == 2
    return {
        "accuracy": float(accuracy_score(labels, pred)),
        "f1_normal": float(f1_score(labels, pred, pos_label=0, zero_division=0)),
        "f1_pneumonia": float(f1_score(labels, pred, pos_label=1, zero_division=0)),
        "auc": float(roc_auc_score(labels, probabilities)) if both else float("nan"),
        "precision": float(precision_score(labels, pred, labels=[0, 1], average="macro", zero_division=0)),
        "recall": float(recall_score(labels, pred, labels=[0, 1], average="macro", zero_division=0)),
    }


def multiclass_scores(labels, probabilities) -> dict[str, float]:
    """`probabilities`: (N, K) class probabilities, K > 2; the prediction is their arg-max."""
    labels = np.asarray(labels, int)
    probabilities = np.asarray(probabilities, float)
    classes = list(range(probabilities.shape[1]))
    pred = probabilities.argmax(1)
    out = {"accuracy": float(accuracy_score(labels, pred)),
           "precision": float(precision_score(labels, pred, labels=classes, average="macro", zero_division=0)),
           "recall": float(recall_score(labels, pred, labels=classes, average="macro", zero_division=0))}
    f1 = f1_score(labels, pred, labels=classes, average=None, zero_division=0)
    out |= {f"f1_{k}": float(v) for k, v in zip(classes, f1)}
    present = set(labels.tolist()) == set(classes)
    out["auc"] = float(roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes)) if present \
        else float("nan")
    return out


def roc(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(np.asarray(labels, int), np.asarray(probabilities, float))
    return fpr, tpr
