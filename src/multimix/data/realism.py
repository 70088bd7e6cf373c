"""Are the phantoms hard for the right reasons? Cheap gates, and a look beside real radiographs.

The gates need no training (`shared/notes/phantom-realism.md`, "Calibrating without
circularity"): if a threshold segments the lungs or a histogram classifies the images, the
phantoms are still easy, whatever the networks do. Each works on the images as the pipeline
feeds them to a model (`training_view`: area resize to the training size, per-image percentile
normalisation — preprocess's own functions):

  threshold_dice   the best single grey-level threshold inside a neighbourhood of the lung mask
                   (the mask dilated by `margin` pixels), per image: how far intensity alone
                   segments the lungs
  histogram_auc    cross-validated AUC of a logistic regression on 32-bin grey-level histograms:
                   how far global intensity alone classifies pneumonia
  nuisance_auc     the same on the acquisition's nuisances alone (marker, collimation, portable
                   devices, storage mode, JPEG quality, image and thorax size, from the truth
                   sidecar): drawn independently of the label, it must be at chance

`multimix phantoms` prints them and draws the docs figure: one phantom per source beside the real
NIH images (`shared/data/nih/images`), with grey-level histograms and radial power spectra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

HISTOGRAM_BINS = 32
NUISANCE_COLUMNS = ("marker", "collimated", "portable", "rgb", "quality", "height", "width", "thorax_height")


def training_view(image: np.ndarray, size: int, clip=(0.5, 99.5)) -> np.ndarray:
    """A display image (bright = dense) as a model sees it: area resize to size x size, then the
    per-image percentile clip and scaling of `preprocess.normalise`."""
    from multimix.data.preprocess import area_resize, normalise

    small = area_resize(Image.fromarray(np.asarray(image, dtype=np.float32), mode="F"), size, size)
    return normalise(np.asarray(small, dtype=np.float32), *clip)


def mask_view(mask: np.ndarray, size: int) -> np.ndarray:
    from multimix.data.preprocess import resize_binary

    return resize_binary(np.asarray(mask, dtype=bool), size, size) > 0


def threshold_dice(image: np.ndarray, mask: np.ndarray, margin: int = 8, levels: int = 64) -> float:
    """Best Dice of (image <= t) with the mask inside the mask's neighbourhood (dilated by `margin`
    pixels), over `levels` thresholds at the neighbourhood's quantiles. Lungs are dark."""
    mask = mask.astype(bool)
    if not mask.any():
        return float("nan")
    near = ndimage.binary_dilation(mask, iterations=margin)
    values = image[near]
    best = 0.0
    truth = mask[near]
    for t in np.quantile(values, np.linspace(0.01, 0.99, levels)):
        pred = values <= t
        inter = np.count_nonzero(pred & truth)
        dice = 2.0 * inter / (np.count_nonzero(pred) + np.count_nonzero(truth))
        best = max(best, dice)
    return float(best)


def histograms(images) -> np.ndarray:
    return np.stack([np.histogram(np.clip(im, 0, 1), bins=HISTOGRAM_BINS, range=(0, 1))[0] / im.size
                     for im in images])


def cross_validated_auc(features: np.ndarray, labels, folds: int = 5, seed: int = 0) -> float:
    """Mean out-of-fold AUC of a standardised, L2-regularised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, dtype=int)
    folds = min(folds, int(np.bincount(labels).min()))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    scores = cross_val_predict(model, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                               method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


def histogram_auc(images, labels) -> float:
    return cross_validated_auc(histograms(images), labels)


def nuisance_auc(truth_rows: list[dict]) -> float:
    """AUC of the label from the acquisition's nuisances alone (truth sidecar rows)."""
    features = np.array([[float(r[c] or 0) for c in NUISANCE_COLUMNS] for r in truth_rows])
    return cross_validated_auc(features, [int(r["label"]) for r in truth_rows])


def radial_power_spectrum(image: np.ndarray, bins: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum of a (normalised, mean-removed, windowed) image:
    (frequencies in cycles per image, power)."""
    image = np.asarray(image, dtype=np.float64)
    h, w = image.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fftshift(np.fft.fft2((image - image.mean()) * window))) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(h)) * h
    fx = np.fft.fftshift(np.fft.fftfreq(w)) * w
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    edges = np.logspace(0, np.log10(min(h, w) / 2), bins + 1)
    which = np.digitize(radius.ravel(), edges)
    flat = power.ravel()
    centres, values = [], []
    for k in range(1, bins + 1):
        picked = which == k
        if picked.any():
            centres.append(np.sqrt(edges[k - 1] * edges[k]))
            values.append(flat[picked].mean())
    return np.array(centres), np.array(values)


def spectral_slope(image: np.ndarray, low: float = 4.0, high: float = 64.0) -> float:
    """beta of P(f) ~ f^-beta fitted between `low` and `high` cycles per image."""
    f, p = radial_power_spectrum(image)
    keep = (f >= low) & (f <= high)
    return float(-np.polyfit(np.log(f[keep]), np.log(p[keep]), 1)[0])


# ------------------------------------------------------------------ samples of each source
def sample_sources(level, seed: int = 1000, count: int = 1, size: int = 512) -> dict:
    """A few phantoms per source at `level` (acquisition.Level), as display images resized to
    size x size, with their lung masks (segmentation sources) and labels."""
    from multimix.data import formats, pathology, synth, synth_chexseg

    out = {}
    for dataset, abnormal in (("jsrt", False), ("mcu", False), ("shenzhen", False), ("chex", True),
                              ("nihx", True)):
        images = []
        for i in range(count):
            if dataset == "jsrt":
                h = w = formats.JSRT_SIDE
            elif dataset == "chex":
                w, h = 1600, 1250
            elif dataset == "mcu":
                h, w = 4892, 4020
            else:
                h, w = (2800, 2700) if dataset == "shenzhen" else (1024, 1024)
            drawn = synth._phantom(dataset, seed, i, h, w, abnormal, level, cause="bacteria" if dataset == "chex" else None)
            images.append(training_view(drawn.image, size, clip=(0.0, 100.0)))
        out[dataset] = images
    anat, found = synth_chexseg.patient(seed, "val", 0, 2800 / 2300, level)
    image, _, _ = synth_chexseg.radiograph(
        "chexpert", anat, 2300, 2800, level, synth_chexseg._rng(seed, "val", 0, stream=5),
        synth_chexseg._rng(seed, "val", 0, stream=2),
        finish=lambda chest: pathology.add_findings(chest, chest.frame.a, found), devices=pathology.devices(found))
    out["chexlocalize"] = [training_view(image, size, clip=(0.0, 100.0))]
    return out


def real_images(folder: Path, size: int = 512) -> list[np.ndarray]:
    return [training_view(np.asarray(Image.open(p).convert("L"), dtype=np.float32), size, clip=(0.0, 100.0))
            for p in sorted(Path(folder).glob("*.png"))]


def figure(out: Path, level, real_dir: Path | None, seed: int = 1000) -> dict:
    """The docs figure: one phantom per source and the real images, their grey-level histograms
    and radial power spectra. Returns the spectral slopes (beta) of each image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phantoms = {name: images[0] for name, images in sample_sources(level, seed).items()}
    real = real_images(real_dir) if real_dir and Path(real_dir).is_dir() else []
    panels = list(phantoms.items()) + [(f"real NIH {i + 1}", im) for i, im in enumerate(real)]
    cols = 5
    rows = -(-len(panels) // cols)
    fig = plt.figure(figsize=(3.0 * cols, 3.1 * rows + 3.2))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.0])
    for k, (name, im) in enumerate(panels):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.imshow(im, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    hist_ax = fig.add_subplot(grid[rows, : cols // 2 + 1])
    spec_ax = fig.add_subplot(grid[rows, cols // 2 + 1:])
    slopes = {}
    for name, im in panels:
        style = dict(color="black", lw=1.6) if name.startswith("real") else dict(lw=1.0, alpha=0.8)
        counts, edges = np.histogram(im, bins=64, range=(0, 1), density=True)
        hist_ax.plot(0.5 * (edges[1:] + edges[:-1]), counts, label=name, **style)
        f, p = radial_power_spectrum(im)
        spec_ax.loglog(f, p / p[0], label=name, **style)
        slopes[name] = spectral_slope(im)
    hist_ax.set_xlabel("grey level (normalised)")
    hist_ax.set_ylabel("density")
    hist_ax.set_title("grey-level histograms (black: real NIH)", fontsize=9)
    spec_ax.set_xlabel("cycles per image")
    spec_ax.set_ylabel("power (relative)")
    spec_ax.set_title("radial power spectra", fontsize=9)
    spec_ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"Phantoms (segmentation level {level.segmentation:.2f}, classification level "
                 f"{level.classification:.2f}) beside real NIH ChestX-ray14 images", fontsize=11)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return slopes
