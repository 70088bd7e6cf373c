"""`multimix synth`: the embedded default data source.

Writes phantom chest X-rays for all five sources in each dataset's official
file format and folder layout (see `layout.py`), so every later stage runs
the very same code on synthetic or real files.

With `synth.findings` (the default) the classes of the segmentation sources
show in the pixels: JSRT's JPCLN phantoms carry one nodule (and the official
`CLNDAT_EN.txt` / `CNNDAT_EN.TXT` list its position and size), Montgomery's and
Shenzhen's _1 phantoms TB-like upper-zone consolidation, some with a cavity.
Without it they look alike whatever their file name says (phantom version 2,
what the phantom study was run on).

Per-source differences mimic the paper's domain shift (Figure 2b): adult vs
pediatric anatomy, native image size, container bit depth and intensity
distribution (gain, gamma, offset, noise). Every image is drawn from its own
seed, derived from (synth.seed, source, index), so output is identical for a
seed whatever the number of worker processes.
"""

from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multimix.data import formats, layout, phantom, synth_chexseg

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
VERSION = 3  # of the phantoms and layouts written: a source written by another version is written again
# (3: CheX and NIHX pneumonia phantoms store their opacity masks under PHANTOM_LESIONS)


@dataclass(frozen=True)
class Style:
    """How a source turns attenuation into stored pixel values."""

    pediatric: bool
    gain: float
    gamma: float
    offset: float
    noise: float


STYLES = {
    "jsrt": Style(pediatric=False, gain=1.05, gamma=1.0, offset=0.1, noise=0.012),
    "chex": Style(pediatric=True, gain=1.15, gamma=0.75, offset=0.06, noise=0.02),
    "mcu": Style(pediatric=False, gain=0.8, gamma=1.35, offset=0.14, noise=0.008),
    "nihx": Style(pediatric=False, gain=1.25, gamma=1.15, offset=-0.02, noise=0.015),
    "shenzhen": Style(pediatric=False, gain=0.95, gamma=0.9, offset=0.08, noise=0.01),
}

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


def _rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, DATASET_CODES[dataset], index]))


def _display(att: np.ndarray, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Attenuation -> display intensity in [0, 1] (bright = dense), per source."""
    h, w = att.shape
    gain = style.gain * rng.uniform(0.9, 1.1)
    offset = style.offset + rng.uniform(-0.03, 0.03)
    # A gentle exposure gradient, as from the heel effect and positioning.
    ramp = np.linspace(-1, 1, h, dtype=np.float32)[:, None] * rng.uniform(-0.04, 0.04)
    img = offset + gain * np.power(att, style.gamma * rng.uniform(0.9, 1.1)) + ramp
    img += rng.standard_normal((h, w), dtype=np.float32) * np.float32(style.noise)
    return np.clip(img, 0.0, 1.0)


def _phantom(dataset: str, seed: int, index: int, height: int, width: int, abnormal: bool,
             opacity_scale: float = 1.0, finding: str | None = None):
    rng = _rng(seed, dataset, index)
    style = STYLES[dataset]
    anat = phantom.sample_anatomy(rng, pediatric=style.pediatric, abnormal=abnormal, aspect=width / height,
                                  opacity_scale=opacity_scale, finding=finding)
    img = _display(phantom.render(anat, height, width), style, rng)
    return anat, img, rng


# ------------------------------------------------------------------ per-image jobs
def _write_jsrt(job) -> str | None:
    """One JSRT image and its SCR masks; returns its clinical-file line (with findings)."""
    root, seed, index, name, fold, findings = job
    finding = "nodule" if findings and name.startswith("JPCLN") else None
    anat, img, _ = _phantom("jsrt", seed, index, formats.JSRT_SIDE, formats.JSRT_SIDE, abnormal=False,
                            finding=finding)
    # JSRT stores larger values for darker pixels: invert the display image.
    raw = np.round((1.0 - img) * formats.JSRT_MAX).astype(np.uint16)
    formats.write_jsrt_raw(root / layout.JSRT_IMAGE_DIR / f"{name}.IMG", raw)
    image_left, image_right = phantom.lung_masks(anat, 1024, 1024)
    masks = root / "scr" / fold / "masks"
    # SCR names lungs from the patient's side: the patient's left is image-right.
    formats.write_mask_gif(masks / layout.SCR_LEFT / f"{name}.gif", image_right)
    formats.write_mask_gif(masks / layout.SCR_RIGHT / f"{name}.gif", image_left)
    return _jsrt_clinical_row(name, anat, index, seed) if findings else None


JSRT_PIXEL_MM = 0.175  # JSRT's pixel pitch


def _jsrt_clinical_row(name: str, anat: phantom.Anatomy, index: int, seed: int) -> str:
    """One line of CLNDAT_EN.txt (nodule cases: name, subtlety, size in mm, age, sex, x, y in pixels
    of the 2048 grid, pathology, position) or CNNDAT_EN.TXT (name, age, sex), tab-separated."""
    rng = _rng(seed, "jsrt", 20_000_000 + index)
    age, sex = int(rng.integers(20, 86)), "male" if rng.random() < 0.5 else "female"
    if not anat.nodules:
        return f"{name}.IMG\t{age}\t{sex}"
    x, y, r, amp, _ = anat.nodules[0]
    col = (anat.cx + x * anat.half_width) * formats.JSRT_SIDE
    row = (anat.top + y * anat.height) * formats.JSRT_SIDE
    size_mm = 2 * r * anat.height * formats.JSRT_SIDE * JSRT_PIXEL_MM
    subtlety = int(np.clip(1 + (amp - 0.1) / 0.15 * 4, 1, 5))  # 1 = extremely subtle … 5 = obvious
    side = "r." if x < 0 else "l."  # image-left is the patient's right
    lobe = "upper" if y < 0.45 else "lower"
    pathology = "malignant" if rng.random() < 0.65 else "benign"
    return (f"{name}.IMG\t{subtlety}\t{size_mm:.0f}\t{age}\t{sex}\t{col:.0f}\t{row:.0f}\t{pathology}\t"
            f"{side}{lobe} lobe")


def _write_lesions(root: Path, image: Path, anat: phantom.Anatomy, height: int, width: int) -> None:
    """The exact opacity mask of a pneumonia phantom, in a folder beside the source's official
    layout (harmonise lists that folder as skipped, never as images); read only by `evaluate`,
    to score saliency maps."""
    out = layout.phantom_lesion_path(root, image.relative_to(root))
    out.parent.mkdir(parents=True, exist_ok=True)
    formats.write_png(out, phantom.lesion_mask(anat, height, width).astype(np.uint8) * 255)


def _write_chex(job) -> None:
    path, seed, index, abnormal, opacity_scale, root = job
    rng = _rng(seed, "chex", 10_000_000 + index)
    width = int(rng.integers(1100, 2100))
    height = int(width * rng.uniform(0.65, 0.95))
    anat, img, rng = _phantom("chex", seed, index, height, width, abnormal, opacity_scale)
    if abnormal:
        _write_lesions(root, path, anat, height, width)
    pixels = np.round(img * 255).astype(np.uint8)
    if rng.random() < 0.1:  # a few Kermany JPEGs are stored as 3-channel
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    formats.write_jpeg(path, pixels, quality=int(rng.integers(85, 96)))


def _write_mcu(job) -> None:
    root, seed, index, name, findings = job
    rng = _rng(seed, "mcu", 10_000_000 + index)
    height, width = (4892, 4020) if rng.random() < 0.7 else (4020, 4892)
    sixteen_bit = rng.random() < 0.75
    finding = "tb" if findings and name.endswith("_1") else None
    anat, img, rng = _phantom("mcu", seed, index, height, width, abnormal=False, finding=finding)
    if sixteen_bit:  # 12-bit detector values in a 16-bit container
        pixels = np.round(img * 4095).astype(np.uint16)
    else:
        pixels = np.round(img * 255).astype(np.uint8)
    formats.write_png(root / layout.MCU_IMAGES / f"{name}.png", pixels, compress_level=1)
    image_left, image_right = phantom.lung_masks(anat, height, width)
    formats.write_mask_png(root / layout.MCU_LEFT / f"{name}.png", image_right)
    formats.write_mask_png(root / layout.MCU_RIGHT / f"{name}.png", image_left)
    tb = name.endswith("_1")
    sex = "F" if rng.random() < 0.5 else "M"
    finding = "TB: abnormal findings in the lungs" if tb else "normal"
    (root / layout.MCU_READINGS / f"{name}.txt").write_text(
        f"Patient's Sex: {sex}\nPatient's Age: {int(rng.integers(18, 80)):03d}Y\n{finding}\n"
    )


def _write_shenzhen(job) -> None:
    root, seed, index, name, masked, findings = job
    rng = _rng(seed, "shenzhen", 10_000_000 + index)
    # The NLM set: about 3K x 3K, 8-bit; a few files are stored as palette or RGB PNGs.
    width, height = int(rng.integers(2500, 3001)), int(rng.integers(2400, 3001))
    storage = rng.choice(["L", "P", "RGB"], p=[0.85, 0.1, 0.05])
    tb = name.endswith("_1")
    anat, img, rng = _phantom("shenzhen", seed, index, height, width, abnormal=False,
                              finding="tb" if findings and tb else None)
    pixels = np.round(img * 255).astype(np.uint8)
    path = root / layout.SHENZHEN_IMAGES / f"{name}.png"
    if storage == "P":
        formats.write_palette_png(path, pixels)
    else:
        formats.write_png(path, np.repeat(pixels[..., None], 3, axis=2) if storage == "RGB" else pixels,
                          compress_level=1)
    if masked:  # the mask release: both lungs in one 0/255 PNG of the image's size
        formats.write_mask_png(root / layout.SHENZHEN_MASKS / f"{name}{layout.SHENZHEN_MASK_SUFFIX}.png",
                               phantom.lung_mask(anat, height, width))
    sex = "male" if rng.random() < 0.6 else "female"
    finding = "STB, upper zone consolidation" if tb else "normal"
    (root / layout.SHENZHEN_READINGS / f"{name}.txt").write_text(f"{sex} {int(rng.integers(12, 80))}yrs\n{finding}\n")


def _write_nih(job) -> None:
    path, seed, index, abnormal, opacity_scale, root = job
    anat, img, rng = _phantom("nihx", seed, index, 1024, 1024, abnormal, opacity_scale)
    if abnormal:
        _write_lesions(root, path, anat, 1024, 1024)
    pixels = np.round(img * 255).astype(np.uint8)
    if rng.random() < 0.04:  # a few NIH PNGs are RGBA
        pixels = np.concatenate([np.repeat(pixels[..., None], 3, axis=2), np.full((1024, 1024, 1), 255, np.uint8)], axis=2)
    formats.write_png(path, pixels)


# ------------------------------------------------------------------ per-source plans
def _plan_jsrt(root: Path, counts: dict, seed: int, findings: bool = True, **_):
    (root / layout.JSRT_IMAGE_DIR).mkdir(parents=True)
    for fold in ("fold1", "fold2"):
        for side in (layout.SCR_LEFT, layout.SCR_RIGHT):
            (root / "scr" / fold / "masks" / side).mkdir(parents=True)
    names = [f"JPCLN{i:03d}" for i in range(1, counts["nodule"] + 1)]
    names += [f"JPCNN{i:03d}" for i in range(1, counts["non_nodule"] + 1)]
    # SCR splits the 247 images into two folds, alternating by number.
    return _write_jsrt, [(root, seed, i, n, "fold1" if int(n[-3:]) % 2 else "fold2", findings)
                         for i, n in enumerate(names)]


def _finish_jsrt(root: Path, rows: list) -> None:
    """The clinical files (only written with findings: their nodule positions are the phantoms')."""
    rows = [r for r in rows if r is not None]
    if rows:
        for name, prefix in zip(layout.JSRT_CLINICAL, ("JPCLN", "JPCNN")):
            lines = [r for r in rows if r.startswith(prefix)]
            (root / name).write_text("".join(line + "\n" for line in lines))


def _plan_chex(root: Path, counts: dict, seed: int, chex_layout: str = "mendeley", opacity_scale: float = 1.0, **_):
    """Kermany's folders: `mendeley` (the archive as published: the validation
    images sit in train/, and when there are exactly Table 1's 8 + 8 they carry
    the file names the redistributed copy moved to val/) or `with_val`."""
    jobs, index, person = [], 0, 1
    for split in layout.CHEX_SPLITS:
        for cls, abnormal in (("NORMAL", False), ("PNEUMONIA", True)):
            count = counts[f"{split}_{cls.lower()}"]
            folder = root / layout.CHEX_ROOT / ("train" if split == "val" and chex_layout == "mendeley" else split) / cls
            folder.mkdir(parents=True, exist_ok=True)
            known = split == "val" and chex_layout == "mendeley" and count == len(layout.KERMANY_VAL[cls])
            for k in range(count):
                if known:
                    name = f"{layout.KERMANY_VAL[cls][k]}.jpeg"
                elif abnormal:
                    kind = "bacteria" if k % 3 else "virus"  # Kermany: about 2/3 bacterial
                    name = f"person{person}_{kind}_{index}.jpeg"
                    person += 1
                else:
                    name = f"{'NORMAL2-' if k % 2 else ''}IM-{index:04d}-0001.jpeg"
                jobs.append((folder / name, seed, index, abnormal, opacity_scale, root))
                index += 1
    return _write_chex, jobs


def _plan_mcu(root: Path, counts: dict, seed: int, findings: bool = True, **_):
    for sub in (layout.MCU_IMAGES, layout.MCU_LEFT, layout.MCU_RIGHT, layout.MCU_READINGS):
        (root / sub).mkdir(parents=True)
    labels = [0] * counts["normal"] + [1] * counts["tb"]
    order = _rng(seed, "mcu", 0).permutation(len(labels))
    names = [f"MCUCXR_{i + 1:04d}_{labels[j]}" for i, j in enumerate(order)]
    return _write_mcu, [(root, seed, i + 1, n, findings) for i, n in enumerate(names)]


def _plan_shenzhen(root: Path, counts: dict, seed: int, findings: bool = True, **_):
    for sub in (layout.SHENZHEN_IMAGES, layout.SHENZHEN_READINGS, layout.SHENZHEN_MASKS):
        (root / sub).mkdir(parents=True)
    rng = _rng(seed, "shenzhen", 0)
    labels = [0] * counts["normal"] + [1] * counts["tb"]
    order = rng.permutation(len(labels))
    names = [f"CHNCXR_{i + 1:04d}_{labels[j]}" for i, j in enumerate(order)]
    unmasked = set(rng.choice(len(names), size=counts["unmasked"], replace=False).tolist())
    return _write_shenzhen, [(root, seed, i + 1, n, i not in unmasked, findings) for i, n in enumerate(names)]


def _plan_nih(root: Path, counts: dict, seed: int, opacity_scale: float = 1.0, **_):
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
        jobs.append((images / name, seed, index, kind == "pneumonia", opacity_scale, root))
    rows.sort(key=lambda r: r[0])
    with open(root / layout.NIH_LABEL_FILES[0], "w", newline="") as fh:
        fh.write(NIH_HEADER + "\n")
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return _write_nih, jobs


PLANS = {"jsrt": _plan_jsrt, "chex": _plan_chex, "mcu": _plan_mcu, "nihx": _plan_nih, "shenzhen": _plan_shenzhen}
FINISH = {"jsrt": _finish_jsrt}  # files written from all images' results (in image order)


def _run(fn_and_job):
    fn, job = fn_and_job
    return fn(job)


def write_dataset(dataset: str, root: Path, counts: dict, seed: int, workers: int = 1, progress=None,
                  chex_layout: str = "mendeley", opacity_scale: float = 1.0, findings: bool = True) -> int:
    """Write one synthetic source into an empty directory `root`; returns the image count."""
    root.mkdir(parents=True, exist_ok=True)
    if dataset in synth_chexseg.WRITERS:
        return synth_chexseg.WRITERS[dataset](root, counts, seed, workers=workers, progress=progress)
    fn, jobs = PLANS[dataset](root, counts[dataset], seed, chex_layout=chex_layout, opacity_scale=opacity_scale,
                              findings=findings)
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
    if dataset in FINISH:
        FINISH[dataset](root, results)
    return len(tasks)
