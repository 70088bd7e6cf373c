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
