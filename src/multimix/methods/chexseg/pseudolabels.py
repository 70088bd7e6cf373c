"""CheXseg's weak pseudo-labels (seed 004): Grad-CAM maps of a pathology classifier,
thresholded into one mask per pathology.

Grad-CAM (Selvaraju et al. 2017; MONAI's `GradCAM`): for pathology c, the channel
weights are the spatial means of d logit_c / d A (A = the last activation before
global pooling), the map is ReLU(sum_k w_k A_k), upsampled bilinearly to the image.
Each map is divided by its own maximum, so 0 = no evidence and 1 = the image's
strongest (an all-zero map stays zero). MONAI's default post-processing is not used:
it rescales (min, max) to (1, 0), which inverts the map.

Masks, per pathology c and image:
  tuned  map >= t_c, with t_c the threshold that maximises the mean IoU with the expert
         masks of the training images (the paper: "determined per pathology by
         maximizing the mIoU on the train set"); IoU counted on images whose expert
         mask is non-empty, an empty prediction scoring 0 (with true_pos_only a
         threshold that empties most maps would look best);
  otsu   map >= its own Otsu threshold (the public CheXseg code).
A mask is drawn only where the image has the pathology: its image-level label (the
`label` gate, the labels CheXpert train images carry) or the classifier's probability
above `probability_cutoff` (the `probability` gate; CheXlocalize's optional cutoff);
elsewhere it is empty.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.visualize import GradCAM
from skimage.filters import threshold_otsu

from multimix import localisation
from multimix.localisation import iou

THRESHOLD_METHODS = ("tuned", "otsu")
GATES = ("label", "probability")
GRID = np.round(np.arange(0.05, 1.0, 0.05), 2)  # candidate thresholds of `tuned`


def _identity(x):
    return x


@torch.no_grad()
def _probabilities(model, images):
    return torch.sigmoid(model(images))


def cams(model: torch.nn.Module, layer: str, images: torch.Tensor, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (N, classes, H, W) in [0, 1] (each divided by its maximum) and the
    classifier's probabilities (N, classes)."""
    model.eval()
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=_identity)
    maps = []
    for c in range(classes):
        with torch.enable_grad():
            m = cam(images, class_idx=c).detach()[:, 0]
        peak = m.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        maps.append((m / peak).cpu().numpy())
    return np.stack(maps, 1).astype(np.float32), _probabilities(model, images).cpu().numpy()


def tune_thresholds(maps: np.ndarray, masks: np.ndarray, grid=GRID) -> np.ndarray:
    """Per pathology, the grid threshold with the highest mean IoU over images whose expert
    mask is non-empty (empty prediction = 0). maps, masks: (N, C, H, W)."""
    thresholds = np.full(maps.shape[1], float(grid[len(grid) // 2]))
    for c in range(maps.shape[1]):
        positive = [i for i in range(len(maps)) if masks[i, c].any()]
        if not positive:
            continue  # no expert example: keep the grid's middle
        scores = [np.mean([iou(maps[i, c] >= t, masks[i, c], true_pos_only=False) for i in positive]) for t in grid]
        thresholds[c] = float(grid[int(np.argmax(scores))])
    return thresholds


def otsu(map_: np.ndarray) -> float:
    """Otsu's threshold of one map (1.0, i.e. an empty mask, when the map is constant)."""
    return float(threshold_otsu(map_)) if map_.max() > map_.min() else 1.0


def pseudo_masks(maps: np.ndarray, present: np.ndarray, method: str, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Binary masks (N, C, H, W) uint8 from maps (N, C, H, W) and `present` (N, C) bool:
    which pathologies each image has (by label or by probability, the caller's gate)."""
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method {method!r}; expected one of {', '.join(THRESHOLD_METHODS)}")
    out = np.zeros(maps.shape, dtype=np.uint8)
    for i in range(maps.shape[0]):
        for c in range(maps.shape[1]):
            if not present[i, c]:
                continue
            t = thresholds[c] if method == "tuned" else otsu(maps[i, c])
            out[i, c] = maps[i, c] >= t
    return out


def gate(labels: np.ndarray, probabilities: np.ndarray, how: str, cutoff: float | None) -> np.ndarray:
    """Which (image, pathology) pairs get a mask: the positive labels (NaN = not positive) or
    the probabilities above the cutoff; with both a label gate and a cutoff, both must hold."""
    if how not in GATES:
        raise ValueError(f"pseudo-label gate {how!r}; expected one of {', '.join(GATES)}")
    by_label = np.nan_to_num(labels, nan=0.0) >= 0.5
    if how == "probability":
        return probabilities >= (0.5 if cutoff is None else cutoff)
    return by_label if cutoff is None else by_label & (probabilities >= cutoff)


# ------------------------------------------------------------------ the stage
def _maps_of(model, layer: str, data, device, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    maps, probs = [], []
    for start in range(0, len(data), batch):
        x = torch.stack([data[k]["image"] for k in range(start, min(len(data), start + batch))]).to(device)
        m, p = cams(model, layer, x, classes=10)
        maps.append(m)
        probs.append(p)
    return np.concatenate(maps), np.concatenate(probs)


def _phantom_truth(cfg, ids: list[str], size: int) -> np.ndarray | None:
    """The CheXpert train phantoms' exact masks at the training grid (area rule), if this is
    synthetic data (layout.PHANTOM_TRAIN_MASKS); None for real data."""
    import json as _json
    from pathlib import Path

    from multimix.data import chexpert, layout
    from multimix.data.preprocess import resize_binary

    path = Path(cfg.raw_dir) / "chexpert" / layout.PHANTOM_TRAIN_MASKS
    if not path.is_file():
        return None
    truth = _json.loads(path.read_text())
    out = np.zeros((len(ids), len(layout.CHEXLOCALIZE_PATHOLOGIES), size, size), dtype=bool)
    for i, image_id in enumerate(ids):
        entry = truth.get(image_id.rsplit("/", 1)[-1])
        if entry is None:
            return None
        for c, name in enumerate(layout.CHEXLOCALIZE_PATHOLOGIES):
            mask = chexpert.decode(entry[name])
            if mask.any():
                out[i, c] = resize_binary(mask, size, size)
    return out


def write_pseudo_labels(cfg, cam: str, device: str | None = None, log=print) -> dict:
    """`multimix pseudolabel --classifier ARCH`: Grad-CAM masks of every CheXpert train image
    some trial draws, thresholds tuned on the expert training images, written to
    `seed004.pseudo_dir`/<cam>.h5 (ids, masks) and <cam>.json (thresholds, counts and, on
    phantoms, the masks' IoU with the truth)."""
    import hashlib
    import json as _json
    import os

    import h5py

    from multimix.data import layout
    from multimix.data.loader import PathologyImages
    from multimix.errors import InputError
    from multimix.methods.chexseg.checkpoints import load_predictor, pseudo_label_file
    from multimix.methods.chexseg.network import CAM_LAYER
    from multimix.runtime import pick_device

    s4 = cfg.seed004
    best_path = cfg.runs_dir / f"pathology_{cam}" / "best.pt"
    if not best_path.is_file():
        raise InputError(f"{best_path}: not found (run `multimix train --run pathology_{cam}` first)")
    dev = pick_device(device or cfg.train.device)
    model = load_predictor(torch.load(best_path, map_location=dev, weights_only=True), dev)
    splits = _json.loads((cfg.split_dir / "splits.json").read_text())
    if "chexseg" not in splits["subsets"]:
        raise InputError(f"{cfg.split_dir / 'splits.json'}: no CheXseg subsets; add chexpert and chexlocalize to "
                         "data.datasets")
    expert = PathologyImages(cfg.processed_dir / "chexlocalize.h5", splits["partitions"]["chexlocalize"]["train"],
                             masks=True)
    thresholds = None
    if s4.threshold == "tuned":
        maps, _ = _maps_of(model, CAM_LAYER[cam], expert, dev)
        masks = np.stack([expert[k]["mask"].numpy() > 0.5 for k in range(len(expert))])
        thresholds = tune_thresholds(maps, masks)
        log("pseudolabel: thresholds tuned on %d expert images: %s" % (len(expert), ", ".join(
            f"{name} {t:.2f}" for name, t in zip(layout.CHEXLOCALIZE_PATHOLOGIES, thresholds))))
    ids = sorted({i for trial in splits["subsets"]["chexseg"]["pseudo"].values() for i in trial})
    data = PathologyImages(cfg.processed_dir / "chexpert.h5", ids, s4.uncertainty)
    maps, probabilities = _maps_of(model, CAM_LAYER[cam], data, dev)
    present = gate(data.targets, probabilities, s4.gate, s4.probability_cutoff)
    masks = pseudo_masks(maps, present, s4.threshold, thresholds)
    out = pseudo_label_file(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with h5py.File(partial, "w", track_order=True) as f:
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype(), track_times=False)
        f.create_dataset("masks", data=masks, chunks=(1, *masks.shape[1:]), compression="gzip", compression_opts=1,
                         track_times=False)  # deflate: LZF can write the same masks as other bytes
        f.attrs.update({"complete": True, "size": int(data.size), "classifier": cam, "threshold": s4.threshold,
                        "gate": s4.gate, "masks_sha256": hashlib.sha256(masks.tobytes()).hexdigest()})
    os.replace(partial, out)
    info = {"classifier": cam, "images": len(ids), "threshold": s4.threshold, "gate": s4.gate,
            "probability_cutoff": s4.probability_cutoff,
            "thresholds": None if thresholds is None else dict(zip(layout.CHEXLOCALIZE_PATHOLOGIES,
                                                                   map(float, thresholds))),
            "masks": {name: int(masks[:, c].any((1, 2)).sum()) for c, name in enumerate(layout.CHEXLOCALIZE_PATHOLOGIES)}}
    truth = _phantom_truth(cfg, ids, data.size)
    if truth is not None:  # phantoms: how good are the weak labels?
        import pandas as pd

        per_image = pd.DataFrame([[iou(masks[i, c], truth[i, c], s4.true_pos_only) for c in range(masks.shape[1])]
                                  for i in range(len(ids))], columns=list(layout.CHEXLOCALIZE_PATHOLOGIES))
        table = localisation.summarise(per_image, replicates=s4.bootstrap)
        info["quality_vs_phantom_truth"] = {r.name: {"mean": r.mean, "lower": r.lower, "upper": r.upper, "n": int(r.n)}
                                            for r in table.itertuples()}
        log(f"pseudolabel: mIoU of the pseudo-labels with the phantoms' truth {table['mean'].iloc[-1]:.3f}")
    out.with_suffix(".json").write_text(_json.dumps(info, indent=2) + "\n")
    log(f"pseudolabel: {len(ids)} images -> {out}")
    return info
