"""`multimix synth`: the embedded default data source.

Writes phantom chest X-rays for all five sources in each dataset's official
file format and folder layout (see `layout.py`), so every later stage runs
the very same code on synthetic or real files. A phantom is a patient
(`phantom.py`: anatomy, pose, disease), rendered in the line-integral domain
and exposed (`xray.py`: overlap, scatter, quantum noise, detector blur), then
taken and stored as its source does (`acquisition.py`: markers, collimation,
portable devices, film curve or unsharp masking), at the difficulty of
`synth.difficulty` (`difficulty.py`).

With `synth.findings` (the default) the classes of the segmentation sources
show in the pixels: JSRT's JPCLN phantoms carry one nodule (and the official
`CLNDAT_EN.txt` / `CNNDAT_EN.TXT` list its position and size), Montgomery's and
Shenzhen's _1 phantoms TB-like upper-zone consolidation, some with a cavity.
Without it they look alike whatever their file name says.

The classification sources (CheX, NIHX) carry pneumonia of a severity and a
pattern, confounders whatever the label, and on CheX's training images the
disease level's label noise: a flipped image sits in the other class's folder.
Each keeps a truth sidecar beside its official layout
(`phantom_lesions/truth.csv`: the clean label, severity, pattern and every
nuisance drawn; harmonise skips it, only evaluation and the gates read it).

Every image is drawn from its own streams, derived from (synth.seed, source,
index, stream), so output is identical for a seed whatever the number of
worker processes, and the same patient at every difficulty level.
"""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multimix.data import formats, layout, phantom, synth_chexseg, xray
from multimix.data.acquisition import EASY, SOURCES, Level, place, radiograph

# Table 1 of the paper (and the official file counts) for the `paper` preset;
# `small` keeps the whole pipeline to minutes on two cores.
PRESETS: dict[str, dict[str, dict[str, int]]] = {
    "small": {
        "jsrt": {"nodule": 16, "non_nodule": 14},
        "chex": {
            "train_normal": 40, "train_pneumonia": 110,
            "val_normal": 4, "val_pneumonia": 4,
            "test_normal": 12, "test_pneumonia": 20,
        },
        "mcu": {"normal": 8, "tb": 6},
        "nihx": {"pneumonia": 12, "no_finding": 40, "other": 10},
        # unmasked: images of normal + tb that the separate mask release does not cover
        "shenzhen": {"normal": 7, "tb": 7, "unmasked": 2},
    },
    "paper": {
        "jsrt": {"nodule": 154, "non_nodule": 93},
        "chex": {
            "train_normal": 1341, "train_pneumonia": 3875,
            "val_normal": 8, "val_pneumonia": 8,
            "test_normal": 234, "test_pneumonia": 390,
        },
        "mcu": {"normal": 80, "tb": 58},
        "nihx": {"pneumonia": 1431, "no_finding": 2754, "other": 300},
        "shenzhen": {"normal": 336, "tb": 326, "unmasked": 96},  # 662 images, 566 masks
    },
}

for _preset, _counts in synth_chexseg.PRESETS.items():  # seed 004's sources (synth_chexseg.py)
    PRESETS[_preset] |= _counts

DATASET_CODES = {"jsrt": 1, "chex": 2, "mcu": 3, "nihx": 4, "shenzhen": 5}
VERSION = 6  # of the phantoms and layouts written: a source written by another version is written again
# (3: CheX and NIHX pneumonia phantoms store their opacity masks under PHANTOM_LESIONS;
#  4: the line-integral renderer and the difficulty levels, truth sidecars;
#  5: past segmentation level 1 only the variability widens; up to 1 the same bytes as 4;
#  6: that widening only in the lung-segmentation sources, CheX and NIHX stay at level <= 1)
TRUTH_FILE = "truth.csv"  # under PHANTOM_LESIONS: each classification phantom's clean label and draws


NIH_OTHER_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def image_count(dataset: str, counts: dict[str, int]) -> int:
    """Images a source's counts write (Shenzhen's `unmasked` is a part of its normal + tb)."""
    return sum(v for k, v in counts.items() if not (dataset == "shenzhen" and k == "unmasked"))


def resolve_counts(preset: str, overrides: dict) -> dict[str, dict[str, int]]:
    counts = {name: dict(values) for name, values in PRESETS[preset].items()}
    for name, values in (overrides or {}).items():
        if name not in counts or not isinstance(values, dict):
            raise ValueError(f"synth.counts.{name}: expected a mapping under one of {', '.join(counts)}")
        for key, value in values.items():
            if key not in counts[name] or not isinstance(value, int) or value < 0:
                raise ValueError(f"synth.counts.{name}.{key}: expected a non-negative count for one of {', '.join(counts[name])}")
            counts[name][key] = value
    shenzhen = counts["shenzhen"]
    if shenzhen["unmasked"] > shenzhen["normal"] + shenzhen["tb"]:
        raise ValueError(f"synth.counts.shenzhen.unmasked: {shenzhen['unmasked']} is more than the "
                         f"{shenzhen['normal'] + shenzhen['tb']} images (normal + tb)")
    return counts


# Independent random streams of one image: what it is, what it shows, how it was taken, its
# noise and its training label. Separate streams keep the acquisition independent of the label
# (a nuisance drawn from the disease's stream would shift with it) and the same patient at
# every difficulty level.
ANATOMY, CONFOUNDER, ACQUISITION, NOISE, LABEL = range(5)


def _rng(seed: int, dataset: str, index: int, stream: int | None = None) -> np.random.Generator:
    key = [seed, DATASET_CODES[dataset], index] + ([] if stream is None else [stream])
    return np.random.default_rng(np.random.SeedSequence(key))


@dataclass(frozen=True)
class Drawn:
    """What one phantom image is, for the writer and the truth sidecar."""

    anatomy: phantom.Anatomy
    image: np.ndarray               # display intensity at native size, [0, 1]
    acquisition: xray.Acquisition
    rng: np.random.Generator        # the source's file-format stream, continued


def _patient(dataset: str, seed: int, index: int, height: int, width: int, abnormal: bool, level: Level,
             finding: str | None = None, pattern: str | None = None, severity: float | None = None,
             cause: str | None = None) -> phantom.Anatomy:
    """The patient of one image: anatomy (+ disease) and, in the classification sources,
    confounders, each from its own stream."""
    src = SOURCES[dataset]
    anat = phantom.sample_anatomy(_rng(seed, dataset, index, ANATOMY), pediatric=src.pediatric, abnormal=abnormal,
                                  aspect=width / height, finding=finding, realism=level.image_for(dataset), disease=level.disease,
                                  pattern=pattern, severity=severity, cause=cause)
    if dataset in CLASSIFICATION_SOURCES:  # look-alikes in every image, whatever its label
        anat = phantom.add_confounders(anat, _rng(seed, dataset, index, CONFOUNDER), level.disease)
    return anat


def _phantom(dataset: str, seed: int, index: int, height: int, width: int, abnormal: bool, level: Level = EASY,
             finding: str | None = None, pattern: str | None = None, severity: float | None = None,
             cause: str | None = None, file_rng: np.random.Generator | None = None) -> Drawn:
    """One phantom of a source at native size: its patient, then `acquisition.radiograph`."""
    anat = _patient(dataset, seed, index, height, width, abnormal, level, finding, pattern, severity, cause)
    image, anat, acq = radiograph(dataset, anat, height, width, level, _rng(seed, dataset, index, ACQUISITION),
                                  _rng(seed, dataset, index, NOISE))
    return Drawn(anat, image, acq, file_rng if file_rng is not None else _rng(seed, dataset, 10_000_000 + index))


CLASSIFICATION_SOURCES = ("chex", "nihx")


def storage(dataset: str, seed: int, index: int) -> dict:
    """How a classification phantom's file is stored (its file stream): Kermany's JPEG size,
    channels and quality; NIH's RGBA share."""
    rng = _rng(seed, dataset, 10_000_000 + index)
    if dataset == "chex":
        width = int(rng.integers(1100, 2100))
        height = int(width * rng.uniform(0.65, 0.95))
        return {"height": height, "width": width, "rgb": int(rng.random() < 0.1),  # a few are 3-channel
                "quality": int(rng.integers(85, 96))}
    return {"height": 1024, "width": 1024, "rgb": int(rng.random() < 0.04), "quality": 0}  # a few NIH PNGs are RGBA


def nuisances(anat: phantom.Anatomy, acq, stored: dict) -> dict:
    """Every nuisance of one image (what the nuisance gate may use): none is drawn from its label."""
    return {"marker": int(bool(acq.marker[0])), "collimated": int(any(acq.collimation)),
            "portable": int(bool(acq.lines or acq.electrodes)), **stored, "thorax_height": round(anat.height, 4)}


def nuisance_row(dataset: str, seed: int, index: int, abnormal: bool, level: Level, severity: float | None = None,
                 cause: str | None = None) -> dict:
    """An image's nuisances without rendering it: the same draws as its writer makes."""
    stored = storage(dataset, seed, index)
    anat = _patient(dataset, seed, index, stored["height"], stored["width"], abnormal, level, severity=severity,
                    cause=cause)
    anat, acq = place(dataset, anat, level, _rng(seed, dataset, index, ACQUISITION))
    return nuisances(anat, acq, stored)


# ------------------------------------------------------------------ per-image jobs
def _write_jsrt(job) -> str | None:
    """One JSRT image and its SCR masks; returns its clinical-file line (with findings)."""
    root, seed, index, name, fold, findings, level = job
    finding = "nodule" if findings and name.startswith("JPCLN") else None
    drawn = _phantom("jsrt", seed, index, formats.JSRT_SIDE, formats.JSRT_SIDE, abnormal=False, level=level,
                     finding=finding)
    # JSRT stores larger values for darker pixels (optical density): invert the display image.
    raw = np.round((1.0 - drawn.image) * formats.JSRT_MAX).astype(np.uint16)
    formats.write_jsrt_raw(root / layout.JSRT_IMAGE_DIR / f"{name}.IMG", raw)
    image_left, image_right = phantom.lung_masks(drawn.anatomy, 1024, 1024)
    masks = root / "scr" / fold / "masks"
    # SCR names lungs from the patient's side: the patient's left is image-right.
    formats.write_mask_gif(masks / layout.SCR_LEFT / f"{name}.gif", image_right)
    formats.write_mask_gif(masks / layout.SCR_RIGHT / f"{name}.gif", image_left)
    return _jsrt_clinical_row(name, drawn.anatomy, index, seed) if findings else None


JSRT_PIXEL_MM = 0.175  # JSRT's pixel pitch


def _jsrt_clinical_row(name: str, anat: phantom.Anatomy, index: int, seed: int) -> str:
    """One line of CLNDAT_EN.txt (nodule cases: name, subtlety, size in mm, age, sex, x, y in pixels
    of the 2048 grid, pathology, position) or CNNDAT_EN.TXT (name, age, sex), tab-separated."""
    rng = _rng(seed, "jsrt", 20_000_000 + index)
    age, sex = int(rng.integers(20, 86)), "male" if rng.random() < 0.5 else "female"
    if not anat.nodules:
        return f"{name}.IMG\t{age}\t{sex}"
    x, y, r, amp, _ = anat.nodules[0]
    row, col = phantom.Frame(anat, formats.JSRT_SIDE, formats.JSRT_SIDE).to_pixels(x, y)
    size_mm = 2 * r * anat.height * formats.JSRT_SIDE * JSRT_PIXEL_MM
    subtlety = int(np.clip(1 + (amp - 0.1) / 0.15 * 4, 1, 5))  # 1 = extremely subtle … 5 = obvious
    side = "r." if x < 0 else "l."  # image-left is the patient's right
    lobe = "upper" if y < 0.45 else "lower"
    pathology = "malignant" if rng.random() < 0.65 else "benign"
    return (f"{name}.IMG\t{subtlety}\t{size_mm:.0f}\t{age}\t{sex}\t{col + 0.5:.0f}\t{row + 0.5:.0f}\t{pathology}\t"
            f"{side}{lobe} lobe")


def _write_lesions(dataset: str, root: Path, image: Path, drawn: Drawn, level: Level) -> None:
    """The exact opacity mask of a pneumonia phantom, in a folder beside the source's official
    layout (harmonise lists that folder as skipped, never as images); read only by `evaluate`,
    to score saliency maps."""
    out = layout.phantom_lesion_path(root, image.relative_to(root))
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = drawn.image.shape
    formats.write_png(out, phantom.lesion_mask(drawn.anatomy, h, w, level.image_for(dataset)).astype(np.uint8) * 255)


def _pattern(anat: phantom.Anatomy) -> str:
    if anat.consolidations:
        return "lobar"
    if anat.haze[0] > 0:
        return "interstitial"
    return "patchy" if anat.opacities else ""


def _truth_row(root: Path, path: Path, drawn: Drawn, truth: bool, label: bool, severity: float | None,
               stored: dict) -> dict:
    """One line of a classification source's truth sidecar: the clean label beside the file's,
    the disease's severity and pattern, and every nuisance drawn (for the nuisance gate)."""
    anat = drawn.anatomy
    return {"file": path.relative_to(root).as_posix(), "label": int(label), "truth": int(truth),
            "flipped": int(label != truth), "severity": "" if severity is None else round(severity, 4),
            "pattern": _pattern(anat) if truth else "", "confounders": "|".join(c[0] for c in anat.confounders),
            **nuisances(anat, drawn.acquisition, stored)}


def _write_chex(job) -> dict:
    path, seed, index, abnormal, severity, cause, label, level, root = job
    stored = storage("chex", seed, index)
    drawn = _phantom("chex", seed, index, stored["height"], stored["width"], abnormal, level, severity=severity,
                     cause=cause)
    if abnormal:
        _write_lesions("chex", root, path, drawn, level)
    pixels = np.round(drawn.image * 255).astype(np.uint8)
    if stored["rgb"]:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    formats.write_jpeg(path, pixels, quality=stored["quality"])
    return _truth_row(root, path, drawn, abnormal, label, severity, stored)


def _write_mcu(job) -> None:
    root, seed, index, name, findings, level = job
    rng = _rng(seed, "mcu", 10_000_000 + index)
    height, width = (4892, 4020) if rng.random() < 0.7 else (4020, 4892)
    sixteen_bit = rng.random() < 0.75
    finding = "tb" if findings and name.endswith("_1") else None
    drawn = _phantom("mcu", seed, index, height, width, abnormal=False, level=level, finding=finding, file_rng=rng)
    if sixteen_bit:  # 12-bit detector values in a 16-bit container
        pixels = np.round(drawn.image * 4095).astype(np.uint16)
    else:
        pixels = np.round(drawn.image * 255).astype(np.uint8)
    formats.write_png(root / layout.MCU_IMAGES / f"{name}.png", pixels, compress_level=1)
    image_left, image_right = phantom.lung_masks(drawn.anatomy, height, width)
    formats.write_mask_png(root / layout.MCU_LEFT / f"{name}.png", image_right)
    formats.write_mask_png(root / layout.MCU_RIGHT / f"{name}.png", image_left)
    tb = name.endswith("_1")
    sex = "F" if drawn.rng.random() < 0.5 else "M"
    reading = "TB: abnormal findings in the lungs" if tb else "normal"
    (root / layout.MCU_READINGS / f"{name}.txt").write_text(
        f"Patient's Sex: {sex}\nPatient's Age: {int(drawn.rng.integers(18, 80)):03d}Y\n{reading}\n"
    )


def _write_shenzhen(job) -> None:
    root, seed, index, name, masked, findings, level = job
    rng = _rng(seed, "shenzhen", 10_000_000 + index)
    # The NLM set: about 3K x 3K, 8-bit; a few files are stored as palette or RGB PNGs.
    width, height = int(rng.integers(2500, 3001)), int(rng.integers(2400, 3001))
    storage = rng.choice(["L", "P", "RGB"], p=[0.85, 0.1, 0.05])
    tb = name.endswith("_1")
    drawn = _phantom("shenzhen", seed, index, height, width, abnormal=False, level=level,
                     finding="tb" if findings and tb else None, file_rng=rng)
    pixels = np.round(drawn.image * 255).astype(np.uint8)
    path = root / layout.SHENZHEN_IMAGES / f"{name}.png"
    if storage == "P":
        formats.write_palette_png(path, pixels)
    else:
        formats.write_png(path, np.repeat(pixels[..., None], 3, axis=2) if storage == "RGB" else pixels,
                          compress_level=1)
    if masked:  # the mask release: both lungs in one 0/255 PNG of the image's size
        formats.write_mask_png(root / layout.SHENZHEN_MASKS / f"{name}{layout.SHENZHEN_MASK_SUFFIX}.png",
                               phantom.lung_mask(drawn.anatomy, height, width))
    sex = "male" if drawn.rng.random() < 0.6 else "female"
    reading = "STB, upper zone consolidation" if tb else "normal"
    (root / layout.SHENZHEN_READINGS / f"{name}.txt").write_text(
        f"{sex} {int(drawn.rng.integers(12, 80))}yrs\n{reading}\n")


def _write_nih(job) -> dict:
    path, seed, index, abnormal, severity, level, root = job
    stored = storage("nihx", seed, index)
    drawn = _phantom("nihx", seed, index, 1024, 1024, abnormal, level, severity=severity)
    if abnormal:
        _write_lesions("nihx", root, path, drawn, level)
    pixels = np.round(drawn.image * 255).astype(np.uint8)
    if stored["rgb"]:
        pixels = np.concatenate([np.repeat(pixels[..., None], 3, axis=2), np.full((1024, 1024, 1), 255, np.uint8)], axis=2)
    formats.write_png(path, pixels)
    return _truth_row(root, path, drawn, abnormal, abnormal, severity, stored)


# ------------------------------------------------------------------ per-source plans
def _plan_jsrt(root: Path, counts: dict, seed: int, findings: bool = True, level: Level = EASY, **_):
    (root / layout.JSRT_IMAGE_DIR).mkdir(parents=True)
    for fold in ("fold1", "fold2"):
        for side in (layout.SCR_LEFT, layout.SCR_RIGHT):
            (root / "scr" / fold / "masks" / side).mkdir(parents=True)
    names = [f"JPCLN{i:03d}" for i in range(1, counts["nodule"] + 1)]
    names += [f"JPCNN{i:03d}" for i in range(1, counts["non_nodule"] + 1)]
    # SCR splits the 247 images into two folds, alternating by number.
    return _write_jsrt, [(root, seed, i, n, "fold1" if int(n[-3:]) % 2 else "fold2", findings, level)
                         for i, n in enumerate(names)]


def _finish_jsrt(root: Path, rows: list) -> None:
    """The clinical files (only written with findings: their nodule positions are the phantoms')."""
    rows = [r for r in rows if r is not None]
    if rows:
        for name, prefix in zip(layout.JSRT_CLINICAL, ("JPCLN", "JPCNN")):
            lines = [r for r in rows if r.startswith(prefix)]
            (root / name).write_text("".join(line + "\n" for line in lines))


def _finish_truth(root: Path, rows: list) -> None:
    """The truth sidecar of a classification source (phantoms only; harmonise skips the folder)."""
    path = root / layout.PHANTOM_LESIONS / TRUTH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["file"]))


def training_label(seed: int, dataset: str, index: int, abnormal: bool, level: Level,
                   noisy: bool) -> tuple[bool, float | None, bool]:
    """(label written, severity, flipped) of one classification phantom, from its label stream: a
    pneumonia's severity, and on training images the label noise of the disease level — a
    pneumonia is labelled normal with probability flip_subtle (1 - severity)^2 (subtle cases are
    missed), a normal labelled pneumonia with probability flip_normal."""
    disease = level.disease
    rng = _rng(seed, dataset, index, LABEL)
    severity = phantom.draw_severity(rng, disease) if abnormal else None
    p = disease.flip_subtle * (1.0 - severity) ** 2 if abnormal else disease.flip_normal
    flipped = bool(rng.random() < p) and noisy
    return abnormal != flipped, severity, flipped


def _plan_chex(root: Path, counts: dict, seed: int, chex_layout: str = "mendeley", level: Level = EASY, **_):
    """Kermany's folders: `mendeley` (the archive as published: the validation
    images sit in train/, and when there are exactly Table 1's 8 + 8 they carry
    the file names the redistributed copy moved to val/) or `with_val`. A training image whose
    label was flipped (`training_label`) sits in the other class's folder, named as its files are."""
    jobs, index, person = [], 0, 1
    for split in layout.CHEX_SPLITS:
        for cls, abnormal in (("NORMAL", False), ("PNEUMONIA", True)):
            count = counts[f"{split}_{cls.lower()}"]
            known = split == "val" and chex_layout == "mendeley" and count == len(layout.KERMANY_VAL[cls])
            for k in range(count):
                label, severity, _ = training_label(seed, "chex", index, abnormal, level, noisy=split == "train")
                cause = "bacteria" if k % 3 else "virus"  # Kermany: about 2/3 bacterial
                folder_split = "train" if split == "val" and chex_layout == "mendeley" else split
                folder = root / layout.CHEX_ROOT / folder_split / ("PNEUMONIA" if label else "NORMAL")
                folder.mkdir(parents=True, exist_ok=True)
                if known:
                    name = f"{layout.KERMANY_VAL[cls][k]}.jpeg"
                elif label:
                    name = f"person{person}_{cause}_{index}.jpeg"
                    person += 1
                else:
                    name = f"{'NORMAL2-' if k % 2 else ''}IM-{index:04d}-0001.jpeg"
                jobs.append((folder / name, seed, index, abnormal, severity, cause if abnormal else None, label,
                             level, root))
                index += 1
    return _write_chex, jobs


def _plan_mcu(root: Path, counts: dict, seed: int, findings: bool = True, level: Level = EASY, **_):
    for sub in (layout.MCU_IMAGES, layout.MCU_LEFT, layout.MCU_RIGHT, layout.MCU_READINGS):
        (root / sub).mkdir(parents=True)
    labels = [0] * counts["normal"] + [1] * counts["tb"]
    order = _rng(seed, "mcu", 0).permutation(len(labels))
    names = [f"MCUCXR_{i + 1:04d}_{labels[j]}" for i, j in enumerate(order)]
    return _write_mcu, [(root, seed, i + 1, n, findings, level) for i, n in enumerate(names)]


def _plan_shenzhen(root: Path, counts: dict, seed: int, findings: bool = True, level: Level = EASY, **_):
    for sub in (layout.SHENZHEN_IMAGES, layout.SHENZHEN_READINGS, layout.SHENZHEN_MASKS):
        (root / sub).mkdir(parents=True)
    rng = _rng(seed, "shenzhen", 0)
    labels = [0] * counts["normal"] + [1] * counts["tb"]
    order = rng.permutation(len(labels))
    names = [f"CHNCXR_{i + 1:04d}_{labels[j]}" for i, j in enumerate(order)]
    unmasked = set(rng.choice(len(names), size=counts["unmasked"], replace=False).tolist())
    return _write_shenzhen, [(root, seed, i + 1, n, i not in unmasked, findings, level) for i, n in enumerate(names)]


def _plan_nih(root: Path, counts: dict, seed: int, level: Level = EASY, **_):
    """NIH's PNGs and label file. NIHX is a test set only: its labels are the clean truth."""
    images = root / layout.NIH_IMAGE_DIR
    images.mkdir(parents=True)
    rng = _rng(seed, "nihx", 0)
    kinds = ["pneumonia"] * counts["pneumonia"] + ["no_finding"] * counts["no_finding"] + ["other"] * counts["other"]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    rows, jobs, patient, follow_up = [], [], 1, 0
    for index, kind in enumerate(kinds):
        if rng.random() < 0.6:  # next patient, else a follow-up of this one
            patient, follow_up = patient + int(rng.integers(1, 4)), 0
        else:
            follow_up += 1
        name = f"{patient:08d}_{follow_up:03d}.png"
        if kind == "pneumonia":
            extra = rng.choice(["", "|Infiltration", "|Effusion", "|Consolidation"], p=[0.55, 0.25, 0.1, 0.1])
            findings = "Pneumonia" + extra
        elif kind == "no_finding":
            findings = "No Finding"
        else:
            picks = rng.choice(NIH_OTHER_FINDINGS, size=int(rng.integers(1, 3)), replace=False)
            findings = "|".join(sorted(picks))
        width, height = int(rng.integers(2400, 3000)), int(rng.integers(2400, 3000))
        spacing = rng.choice(["0.143", "0.139", "0.168"])
        rows.append([name, findings, follow_up, patient, int(rng.integers(10, 90)), rng.choice(["M", "F"]),
                     rng.choice(["PA", "AP"]), width, height, spacing, spacing])
        abnormal = kind == "pneumonia"
        _, severity, _ = training_label(seed, "nihx", index, abnormal, level, noisy=False)
        jobs.append((images / name, seed, index, abnormal, severity, level, root))
    rows.sort(key=lambda r: r[0])
    with open(root / layout.NIH_LABEL_FILES[0], "w", newline="") as fh:
        fh.write(NIH_HEADER + "\n")
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return _write_nih, jobs


PLANS = {"jsrt": _plan_jsrt, "chex": _plan_chex, "mcu": _plan_mcu, "nihx": _plan_nih, "shenzhen": _plan_shenzhen}
# files written from all images' results (in image order)
FINISH = {"jsrt": _finish_jsrt, "chex": _finish_truth, "nihx": _finish_truth}


def _run(fn_and_job):
    fn, job = fn_and_job
    return fn(job)


def write_dataset(dataset: str, root: Path, counts: dict, seed: int, workers: int = 1, progress=None,
                  chex_layout: str = "mendeley", level: Level = EASY, findings: bool = True) -> int:
    """Write one synthetic source into an empty directory `root` at a difficulty `level`;
    returns the image count."""
    root.mkdir(parents=True, exist_ok=True)
    if dataset in synth_chexseg.WRITERS:
        return synth_chexseg.WRITERS[dataset](root, counts, seed, workers=workers, progress=progress, level=level)
    fn, jobs = PLANS[dataset](root, counts[dataset], seed, chex_layout=chex_layout, level=level, findings=findings)
    tasks = [(fn, job) for job in jobs]
    results = []
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(_run, tasks, chunksize=1):
                results.append(result)
                progress and progress()
    else:
        for task in tasks:
            results.append(_run(task))
            progress and progress()
    if dataset in FINISH and results:
        FINISH[dataset](root, results)
    return len(tasks)
