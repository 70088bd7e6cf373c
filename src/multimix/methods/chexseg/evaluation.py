"""`multimix evaluate --run NAME` for seed 004's runs: CheXlocalize's test images, scored
with its conventions (`localisation`).

Segmenters (chexseg_*, teacher_*, student_*): each image's ten logit maps are upsampled
(bilinear) from the training grid to the image's native size and thresholded at
probability 0.5; IoU with the radiologists' masks at native size, per image and
pathology (`iou`: true_pos_only as `seed004.true_pos_only`; `iou_any`: the other
convention), summarised per pathology and as mIoU with bootstrap 95% intervals.
Pathology classifiers: AUC per pathology against the test labels, and their Grad-CAM
maps scored against the masks of each positive (image, pathology) pair: pointing-game
hit, share of saliency mass inside, IoU of the map above its 95th percentile.
Writes per_image.csv and metrics.json under `evaluate.dir`/NAME/.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from multimix import localisation
from multimix.data import chexpert, layout
from multimix.data.loader import PathologyImages
from multimix.data.preprocess import read_manifest
from multimix.errors import InputError
from multimix.methods.chexseg.checkpoints import load_predictor, pathology_aucs
from multimix.methods.chexseg.network import CAM_LAYER
from multimix.methods.chexseg.pseudolabels import cams

PATHOLOGIES = layout.CHEXLOCALIZE_PATHOLOGIES


CAM_BATCH = 16  # images per Grad-CAM pass (the network runs in eval mode: images stay independent)


def _native(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(C, S, S) logits -> (C, h, w) bool at probability >= 0.5 (logit >= 0)."""
    return (F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0] >= 0).numpy()


def _test_set(cfg):
    splits = json.loads((cfg.split_dir / "splits.json").read_text())
    if "chexlocalize" not in splits["partitions"]:
        raise InputError(f"{cfg.split_dir / 'splits.json'}: no chexlocalize partition; add it to data.datasets")
    ids = splits["partitions"]["chexlocalize"]["test"]
    path = cfg.processed_dir / "chexlocalize.h5"
    data = PathologyImages(path, ids, policy="zeros")  # radiologist labels: 0 / 1
    import h5py

    with h5py.File(path, "r") as f:
        native = f["native_hw"][:][data.rows]
    manifest = read_manifest(cfg.interim_dir / "manifest.csv").set_index("id")
    return data, native, manifest


def _classifier_rows(image_id, labels, maps, probs, truth, size) -> list[dict]:
    """One row per pathology: label, probability, and the Grad-CAM map's localisation scores
    where the image has a mask of that pathology (the map upsampled to the native size)."""
    rows = []
    for c, name in enumerate(PATHOLOGIES):
        row = {"id": image_id, "pathology": name, "label": float(labels[c]), "probability": float(probs[c])}
        ref = truth.get(name)
        if ref is not None and ref.any():
            up = F.interpolate(torch.from_numpy(maps[c])[None, None], size=size, mode="bilinear",
                               align_corners=False)[0, 0].numpy()
            row.update({f"cam_{m}": v for m, v in localisation.saliency_scores(up, ref).items()})
        rows.append(row)
    return rows


def _segmenter_rows(image_id, pred, truth, true_pos_only) -> list[dict]:
    """One row per pathology: IoU under both conventions and the pixel counts (no mask = empty)."""
    rows = []
    for c, name in enumerate(PATHOLOGIES):
        ref = truth.get(name)
        ref = np.zeros(pred.shape[1:], bool) if ref is None else ref
        rows.append({"id": image_id, "pathology": name, "iou": localisation.iou(pred[c], ref, true_pos_only),
                     "iou_any": localisation.iou(pred[c], ref, not true_pos_only),
                     "pred_pixels": int(pred[c].sum()), "ref_pixels": int(ref.sum())})
    return rows


@torch.no_grad()
def evaluate_run(cfg, spec, dev) -> tuple[pd.DataFrame, dict]:
    best = torch.load(cfg.runs_dir / spec.name / "best.pt", map_location=dev, weights_only=True)
    net = load_predictor(best, dev)
    data, native, manifest = _test_set(cfg)
    s4 = cfg.seed004

    def truth(k: int) -> dict:  # the radiologists' masks of image k, by pathology
        return chexpert.masks_of(manifest.loc[data.ids[k], "mask_paths"], data.ids[k].rsplit("/", 1)[-1]) or {}

    def size(k: int) -> tuple[int, int]:  # image k's native (h, w)
        return int(native[k][0]), int(native[k][1])

    rows = []
    classifier = best["role"] == "classifier"
    if classifier:
        # Grad-CAM in batches: one backward pass per pathology and batch, not per image; each
        # batch's maps are scored and dropped, so memory is bounded by the batch, not the test set
        for start in range(0, len(data), CAM_BATCH):
            batch = range(start, min(start + CAM_BATCH, len(data)))
            items = [data[k] for k in batch]
            with torch.enable_grad():
                maps, probs = cams(net, CAM_LAYER[str(best["architecture"])],
                                   torch.stack([it["image"] for it in items]).to(dev), classes=len(PATHOLOGIES))
            for j, k in enumerate(batch):
                rows += _classifier_rows(data.ids[k], items[j]["labels"], maps[j], probs[j], truth(k), size(k))
    else:
        for k in range(len(data)):
            pred = _native(net(data[k]["image"][None].to(dev))[0].cpu(), size(k))
            rows += _segmenter_rows(data.ids[k], pred, truth(k), s4.true_pos_only)
    frame = pd.DataFrame(rows)
    if classifier:
        wide = frame.pivot(index="id", columns="pathology")
        aucs = pathology_aucs(wide["label"][list(PATHOLOGIES)].to_numpy(), wide["probability"][list(PATHOLOGIES)].to_numpy())
        summary = {"auc": dict(zip(PATHOLOGIES, aucs)), "mean_auc": float(np.nanmean(aucs)) if np.isfinite(aucs).any()
                   else float("nan"), "localisation": {}}
        for m in ("hit", "mass", "iou"):
            column = f"cam_{m}"
            if column in frame:
                per = frame.groupby("pathology")[column].mean()
                summary["localisation"][m] = {p: float(per.get(p, np.nan)) for p in PATHOLOGIES}
                summary["localisation"][f"mean_{m}"] = float(frame[column].mean())
        summary["images"] = len(data)
        return frame, summary
    per_image = frame.pivot(index="id", columns="pathology", values="iou")[list(PATHOLOGIES)]
    table = localisation.summarise(per_image, replicates=s4.bootstrap)
    summary = {r.name: {"mean": float(r.mean), "lower": float(r.lower), "upper": float(r.upper), "n": int(r.n)}
               for r in table.itertuples()}
    any_table = frame.pivot(index="id", columns="pathology", values="iou_any")[list(PATHOLOGIES)]
    summary["mIoU_other_convention"] = float(np.nanmean(any_table.mean(axis=0)))
    summary["images"] = len(data)
    return frame, summary
