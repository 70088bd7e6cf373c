"""Pathology phantoms in CheXpert's and CheXlocalize's layouts (seed 004's default data).

Two sources, as the real releases unpack:
  chexpert/      CheXpert-v1.0-small/train.csv + train/patientNNNNN/study1/view1_frontal.jpg
                 (images 320 px high, as the small release), valid.csv + valid/ (the
                 CheXlocalize val patients, at small size), and, for phantoms only,
                 phantom_masks_train.json: the train images' exact masks (evaluation of
                 saliency and pseudo-labels; never a training label)
  chexlocalize/  CheXpert/{val,test}/patientNNNNN/study1/view1_frontal.jpg at native size
                 (about 2.3k x 2.8k), CheXpert/{val,test}_labels.csv, and
                 CheXlocalize/gt_annotations_{val,test}.json (polygons) with
                 CheXlocalize/gt_segmentations_{val,test}.json (RLE)
Patient numbers follow CheXpert's: train from patient00001, val patient64541-64740,
test patient64741-65240.

Labels. train.csv mimics CheXpert's report labeler: a present pathology is 1, or -1
(uncertain) in 12% of cases; an absent one is blank (not mentioned) in 75%, 0 in 20%,
-1 in 5%. The val/test label files are radiologists' labels: exactly 0/1 from the
masks. Lung Opacity (CheXpert's name) is Airspace Opacity; No Finding is 1 when
nothing is present; Pneumonia, Pleural Other and Fracture are never drawn (blank).

Masks as the release makes them: the radiologist's polygons are the truth, and the RLE
is their rasterisation at native size. A phantom's polygons are the contours of its
analytic masks, traced on a grid a quarter of the native size and scaled up: within
about one traced pixel of the shape (IoU with the analytic mask 0.97-0.995, 0.91 for the
thin device lines), much closer than annotators agree with each other.
gt_* files list only images with at least one positive label (as CheXlocalize);
gt_segmentations holds all ten pathologies per image, empty ones included.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from skimage import measure

from multimix.data import chexpert, formats, layout, pathology
from multimix.data.acquisition import EASY, Level, radiograph

PRESETS = {
    "small": {"chexpert": {"train": 160, "valid": 24}, "chexlocalize": {"val": 24, "test": 40}},
    # CheXseg's counts: 200 expert-annotated images (we take CheXlocalize val's 234), 500 test
    # patients (668 images); CheXpert train is capped at the 20,000 of its largest weak set.
    "paper": {"chexpert": {"train": 20000, "valid": 234}, "chexlocalize": {"val": 234, "test": 668}},
}
VERSION = 4  # of these phantoms and layouts (2: the line-integral renderer and the difficulty levels;
#  3: past segmentation level 1 only the variability widens; 4: not in CheXpert, a source
#  without lung masks: its images stay at level <= 1)
FIRST_PATIENT = {"train": 1, "val": 64541, "test": 64741}
CODES = {"train": 6, "val": 7, "test": 8}
HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *layout.CHEXPERT_OBSERVATIONS]
SMALL_HEIGHT = 320
TRACE_SCALE = 4  # polygons traced on a grid 1/4 of the native size


def _rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, CODES[split], index, stream]))


def patient(seed: int, split: str, index: int, aspect: float, level: Level = EASY):
    """The same patient (anatomy and findings) whatever size it is drawn at."""
    return pathology.sample_patient(_rng(seed, split, index), aspect=aspect, realism=level.image_for("chexpert"))


def _write(path: Path, pixels: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    formats.write_jpeg(path, pixels, quality=quality)


def _native_size(seed: int, split: str, index: int) -> tuple[int, int]:
    rng = _rng(seed, split, index, stream=1)
    return int(rng.integers(2000, 2600)), int(rng.integers(2300, 3000))


def _draw(seed: int, split: str, index: int, height: int, width: int, native: tuple[int, int], level: Level):
    """Pixels at (height, width) of a patient whose native image is `native` (h, w): the same
    patient and acquisition at every size, the noise of each size its own."""
    anat, found = patient(seed, split, index, native[1] / native[0], level)
    noise = _rng(seed, split, index, stream=2 if (height, width) == native else 3)
    image, drawn, _ = radiograph("chexpert", anat, height, width, level, _rng(seed, split, index, stream=5), noise,
                                 finish=lambda chest: pathology.add_findings(chest, chest.frame.a, found),
                                 devices=pathology.devices(found))
    return drawn, found, np.round(image * 255).astype(np.uint8)  # the anatomy as placed in the field


def polygons(mask: np.ndarray, size: tuple[int, int]) -> list[list[list[float]]]:
    """Outer contours of a binary mask as [[x, y], …] polygons in the pixels of an image of
    `size` (h, w): a traced pixel's centre maps to the centre of the native pixels it covers."""
    sy, sx = size[0] / mask.shape[0], size[1] / mask.shape[1]
    padded = np.pad(mask.astype(np.float32), 1)
    out = []
    for contour in measure.find_contours(padded, 0.5):
        contour = measure.approximate_polygon(contour - 1.0, tolerance=0.25)
        if len(contour) >= 3:
            out.append([[round(float(c) * sx + (sx - 1) / 2, 2), round(float(r) * sy + (sy - 1) / 2, 2)]
                        for r, c in contour])
    return out


def _label_row(path: str, present: set[str], rng: np.random.Generator, noisy: bool) -> list:
    sex = "Female" if rng.random() < 0.45 else "Male"
    row = [path, sex, int(rng.integers(18, 91)), "Frontal", "AP" if rng.random() < 0.7 else "PA"]
    for obs in layout.CHEXPERT_OBSERVATIONS:
        name = "Airspace Opacity" if obs == "Lung Opacity" else obs
        if obs == "No Finding":
            value = 1.0 if not present else ("" if noisy else 0.0)
        elif name not in pathology.PATHOLOGIES:  # Pneumonia, Pleural Other, Fracture: not drawn
            value = "" if noisy else 0.0
        elif not noisy:
            value = 1.0 if name in present else 0.0
        elif name in present:
            value = -1.0 if rng.random() < 0.12 else 1.0
        else:
            value = rng.choice(["", 0.0, -1.0], p=[0.75, 0.2, 0.05])
        row.append(value)
    return row


# ------------------------------------------------------------------ jobs
def _small_image(root: Path, seed: int, split: str, folder: str, index: int, level: Level):
    """Draw one patient at CheXpert-small's size (320 px high) and write its JPEG under `folder`."""
    native = _native_size(seed, split, index)
    height, width = SMALL_HEIGHT, round(SMALL_HEIGHT * native[1] / native[0])
    anat, found, pixels = _draw(seed, split, index, height, width, native, level)
    rel = f"{layout.CHEXPERT_ROOTS[0]}/{folder}/patient{FIRST_PATIENT[split] + index:05d}/study1/view1_frontal.jpg"
    _write(root / rel, pixels, 90)
    return rel, anat, found, (height, width)


def _train_job(job):
    root, seed, index, level = job
    rel, anat, found, size = _small_image(root, seed, "train", "train", index, level)
    masks = pathology.masks(anat, found, *size)
    row = _label_row(rel, set(found.present), _rng(seed, "train", index, stream=4), noisy=True)
    return chexpert.cxr_id(rel), row, {p: chexpert.encode(m) for p, m in masks.items()}


def _valid_small_job(job):
    """CheXpert's valid/ (small): the CheXlocalize val patients at 320 px."""
    root, seed, index, level = job
    rel, _, found, _ = _small_image(root, seed, "val", "valid", index, level)
    return _label_row(rel, set(found.present), _rng(seed, "val", index, stream=4), noisy=False)


def _localize_job(job):
    root, seed, split, index, level = job
    native = _native_size(seed, split, index)
    anat, found, pixels = _draw(seed, split, index, *native, native, level)
    folder = "valid" if split == "val" else "test"
    name = f"patient{FIRST_PATIENT[split] + index:05d}/study1/view1_frontal.jpg"
    _write(root / layout.CHEXLOCALIZE_IMAGES / split / name, pixels, 92)
    traced = pathology.masks(anat, found, native[0] // TRACE_SCALE, native[1] // TRACE_SCALE)
    annotation = {"img_size": list(native)}
    for p in found.present:
        contours = polygons(traced[p], native)
        if contours:
            annotation[p] = contours
    present = {p for p in annotation if p != "img_size"}  # labels follow what was annotated
    row = _label_row(f"CheXpert-v1.0/{folder}/{name}", present, _rng(seed, split, index, stream=4), noisy=False)
    segmentation = {p: chexpert.encode(chexpert.rasterise(annotation.get(p, []), native))
                    for p in pathology.PATHOLOGIES} if present else None
    return chexpert.cxr_id(name), row, annotation if present else None, segmentation


def _map(fn, jobs, workers, progress):
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(fn, jobs, chunksize=1):
                progress and progress()
                yield result
    else:
        for job in jobs:
            result = fn(job)
            progress and progress()
            yield result


def _write_csv(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(data, fh)


def write_chexpert(root: Path, counts: dict, seed: int, workers: int = 1, progress=None, level: Level = EASY) -> int:
    """CheXpert-v1.0-small (train + valid) under `root`; returns the image count. `counts`:
    all sources' counts (the synth preset's) or this source's alone."""
    counts = counts.get("chexpert", counts)
    rows, masks = [], {}
    for image_id, row, encoded in _map(_train_job, [(root, seed, i, level) for i in range(counts["train"])], workers,
                                       progress):
        rows.append(row)
        masks[image_id] = encoded
    _write_csv(root / layout.CHEXPERT_ROOTS[0] / "train.csv", rows)
    _write_json(root / layout.PHANTOM_TRAIN_MASKS, masks)
    valid = list(_map(_valid_small_job, [(root, seed, i, level) for i in range(counts["valid"])], workers, progress))
    _write_csv(root / layout.CHEXPERT_ROOTS[0] / "valid.csv", valid)
    return counts["train"] + counts["valid"]


def write_chexlocalize(root: Path, counts: dict, seed: int, workers: int = 1, progress=None,
                       level: Level = EASY) -> int:
    """The CheXlocalize release (val + test images, labels, polygons, RLE) under `root`."""
    counts = counts.get("chexlocalize", counts)
    total = 0
    for split in layout.CHEXLOCALIZE_SPLITS:
        rows, annotations, segmentations = [], {}, {}
        jobs = [(root, seed, split, i, level) for i in range(counts[split])]
        for image_id, row, annotation, segmentation in _map(_localize_job, jobs, workers, progress):
            rows.append(row)
            if annotation is not None:
                annotations[image_id], segmentations[image_id] = annotation, segmentation
        _write_csv(root / layout.CHEXLOCALIZE_IMAGES / layout.CHEXLOCALIZE_LABELS.format(split=split), rows)
        masks = root / layout.CHEXLOCALIZE_MASKS
        _write_json(masks / layout.CHEXLOCALIZE_ANNOTATIONS.format(split=split), annotations)
        _write_json(masks / layout.CHEXLOCALIZE_SEGMENTATIONS.format(split=split), segmentations)
        total += len(jobs)
    return total


WRITERS = {"chexpert": write_chexpert, "chexlocalize": write_chexlocalize}
