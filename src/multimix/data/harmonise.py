"""`multimix harmonise`: raw files of any source -> one manifest table.

Each source is scanned into *candidates* (an image with its masks and label)
plus rejections; candidates are then fully decoded in parallel, so truncated
or mis-sized files are caught here and not in the middle of training.

Counting rule: every file found under a source's folder is exactly one of
  - used       (an accepted image, one of its masks, or the label file),
  - rejected   (listed in rejected.csv with its reason), or
  - skipped    (a known non-input an official archive carries: clinical
                readings, SCR heart/clavicle masks, documentation, OS litter).
Label-file rows whose image is needed but absent are rejected as rows.
Seed 004's sources: CheXpert (label CSVs + JPEG tree; the ten CheXlocalize pathologies'
raw labels 1 / 0 / -1 / blank go to the `labels` column, the uncertainty policy is
applied at training time) and CheXlocalize (val/test images and labels, masks from
gt_segmentations_*.json or, without it, the polygons of gt_annotations_*.json; an image's
`mask_paths` is that JSON file, read by CXR id).
NIH images outside the NIHX subset, and Shenzhen images that the separate
mask release does not cover, are rejected with kind `excluded`, not
`invalid`, so they can be told apart from bad files.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from multimix.data import chexpert, formats, layout
from multimix.errors import InputError

if TYPE_CHECKING:  # types only: config sits above the data stages
    from multimix.config import Config

MANIFEST_COLUMNS = [
    "id", "dataset", "image_path", "mask_paths", "label", "official_split",
    "height", "width", "bit_depth", "channels", "format", "finding", "labels",
]
REJECTED_COLUMNS = ["dataset", "path", "kind", "reason"]
DOC_SUFFIXES = {".pdf", ".txt", ".md", ".doc", ".docx", ".xls", ".xlsx", ".csv", ".html", ".rtf"}
IMAGE_SUFFIXES = {".png", ".jpeg", ".jpg"}
SCR_AUX_MASKS = {"heart", "left clavicle", "right clavicle"}
MCU_NAME = re.compile(r"^MCUCXR_\d{4}_[01]$")
SHENZHEN_NAME = re.compile(r"^CHNCXR_\d{4}_[01]$")
NIH_NAME = re.compile(r"^\d{8}_\d{3}$")
# The paper's NIHX: 1,431 Pneumonia + 2,754 "No Finding" images.
NIHX_PAPER_RATIO = Fraction(2754, 1431)


@dataclass
class Candidate:
    id: str
    dataset: str
    image: Path
    masks: tuple[Path, ...] = ()
    mask_size: tuple[int, int] | None = None  # None: masks must match the image size
    label: int | None = None
    official_split: str = ""
    finding: str = ""
    kind: str = "png"  # png | jpeg | jsrt_raw
    labels: str = ""  # seed 004: the ten pathologies' raw labels (chexpert.label_text)
    mask_json: bool = False  # masks: one CheXlocalize JSON, keyed by CXR id, of size mask_size


@dataclass
class Rejection:
    dataset: str
    path: str
    reason: str
    kind: str = "invalid"


@dataclass
class Scan:
    """What scanning one source found, before decoding."""

    dataset: str
    files_found: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    label_files: list[Path] = field(default_factory=list)
    rows_rejected: int = 0  # rejections that are label-file rows, not files

    def reject(self, path, reason: str, kind: str = "invalid") -> None:
        self.rejected.append(Rejection(self.dataset, str(path), reason, kind))


# ------------------------------------------------------------------ walking
def _walk(root: Path, scan: Scan) -> list[Path]:
    """All files under root except OS/archive litter and the phantoms' evaluation-only lesion masks
    (both counted as skipped)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        litter = [d for d in dirnames if d in layout.AUX_DIRS or (d == layout.PHANTOM_LESIONS and Path(dirpath) == root)]
        for d in litter:
            dirnames.remove(d)
            for sub, _, names in os.walk(Path(dirpath) / d):
                for n in names:
                    scan.files_found += 1
                    scan.skipped.append(str(Path(sub) / n))
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            scan.files_found += 1
            if name in layout.AUX_NAMES or name.startswith("._"):
                scan.skipped.append(str(path))
            else:
                files.append(path)
    return files


def _claim_unique(scan: Scan, seen: dict, key: str, path: Path, what: str = "id") -> bool:
    """First file with a key wins (paths are walked in sorted order); later ones are rejected."""
    if key in seen:
        scan.reject(path, f"duplicate {what} {key!r} (also at {seen[key]})")
        return False
    seen[key] = path
    return True


def _attach_masks(scan: Scan, images: dict[str, Path], masks: dict[str, dict[str, Path]], sides: tuple[str, str],
                  folder_hint: str) -> dict[str, tuple[Path, ...]]:
    """Pair every image with its two masks; reject images missing one and masks without an image."""
    paired = {}
    for key, image in images.items():
        missing = [side for side in sides if key not in masks[side]]
        if missing:
            scan.reject(image, f"missing mask(s): {', '.join(missing)} (expected {folder_hint}/<{'|'.join(missing)}>/{key}.*)")
            for side in sides:
                if key in masks[side]:
                    scan.reject(masks[side][key], f"mask of rejected image {key} (its other mask is missing)")
        else:
            paired[key] = tuple(masks[side][key] for side in sides)
    for side in sides:
        for key, path in masks[side].items():
            if key not in images:
                scan.reject(path, f"mask without a matching image {key}")
    return paired


# ------------------------------------------------------------------ per-source scanners
def scan_jsrt(root: Path) -> Scan:
    scan = Scan("jsrt")
    images: dict[str, Path] = {}
    masks: dict[str, dict[str, Path]] = {layout.SCR_LEFT: {}, layout.SCR_RIGHT: {}}
    for path in _walk(root, scan):
        suffix, parent, grand = path.suffix.lower(), path.parent.name, path.parent.parent.name
        if suffix == ".img":
            _claim_unique(scan, images, path.stem.upper(), path)
        elif suffix == ".gif" and grand == "masks" and parent in masks:
            _claim_unique(scan, masks[parent], path.stem.upper(), path, f"{parent} mask")
        elif suffix == ".gif" and grand == "masks" and parent in SCR_AUX_MASKS:
            scan.skipped.append(str(path))  # SCR also outlines heart and clavicles
        elif path.name in layout.JSRT_CLINICAL or suffix in DOC_SUFFIXES or suffix in {".pfi", ".pts"}:
            scan.skipped.append(str(path))  # clinical data, SCR landmark points, docs
        else:
            scan.reject(path, "unrecognised file (expected JPC*.IMG images or SCR masks/<left lung|right lung>/*.gif)")
    paired = _attach_masks(scan, images, masks, (layout.SCR_LEFT, layout.SCR_RIGHT), "masks")
    for key, mask_paths in sorted(paired.items()):
        scan.candidates.append(Candidate(
            id=f"jsrt/{key}", dataset="jsrt", image=images[key], masks=mask_paths, mask_size=(1024, 1024),
            official_split=scr_fold(mask_paths), finding="nodule" if key.startswith("JPCLN") else "non-nodule",
            label=int(key.startswith("JPCLN")), kind="jsrt_raw",  # layout.CLASS_NAMES["jsrt"]
        ))
    return scan


def scr_fold(mask_paths) -> str:
    """The SCR fold (fold1 / fold2) both masks of an image lie under, or "" if they name none or differ."""
    folds = {next((part.lower() for part in Path(p).parts if part.lower() in layout.SCR_FOLDS), "")
             for p in mask_paths}
    return folds.pop() if len(folds) == 1 else ""


def scan_chex(root: Path) -> Scan:
    scan = Scan("chex")
    for path in _walk(root, scan):
        rel = path.relative_to(root).parts
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            if path.suffix.lower() in DOC_SUFFIXES:
                scan.skipped.append(str(path))
            else:
                scan.reject(path, "unrecognised file (expected *.jpeg images)")
            continue
        if len(rel) != 4 or rel[0] != layout.CHEX_ROOT:
            scan.reject(path, f"image outside {layout.CHEX_ROOT}/<split>/<label>/ (unexpected location)")
            continue
        _, split, folder, _ = rel
        if split not in layout.CHEX_SPLITS:
            scan.reject(path, f"unknown split folder {split!r} (expected one of {', '.join(layout.CHEX_SPLITS)})")
        elif folder not in layout.CHEX_CLASSES:
            scan.reject(path, f"unknown label folder {folder!r} (expected NORMAL or PNEUMONIA)")
        else:
            finding = "normal"
            if folder == "PNEUMONIA":
                lower = path.name.lower()
                finding = "bacteria" if "bacteria" in lower else "virus" if "virus" in lower else "pneumonia"
            scan.candidates.append(Candidate(
                id=f"chex/{split}/{folder}/{path.stem}", dataset="chex", image=path,
                label=layout.CHEX_CLASSES[folder], official_split=split, finding=finding,
                kind="jpeg" if path.suffix.lower() in {".jpeg", ".jpg"} else "png",
            ))
    return scan


def scan_mcu(root: Path) -> Scan:
    scan = Scan("mcu")
    images: dict[str, Path] = {}
    masks: dict[str, dict[str, Path]] = {"leftMask": {}, "rightMask": {}}
    for path in _walk(root, scan):
        suffix, parent = path.suffix.lower(), path.parent.name
        if suffix == ".png" and parent in masks:
            _claim_unique(scan, masks[parent], path.stem, path, f"{parent}")
        elif suffix == ".png" and parent == "CXR_png":
            if not MCU_NAME.match(path.stem):
                scan.reject(path, "unexpected file name (expected MCUCXR_XXXX_Y.png with Y = 0 normal, 1 TB)")
            else:
                _claim_unique(scan, images, path.stem, path)
        elif suffix in DOC_SUFFIXES:
            scan.skipped.append(str(path))  # ClinicalReadings/*.txt, the read-me PDF
        else:
            scan.reject(path, "unrecognised file (expected CXR_png/*.png or ManualMask/{leftMask,rightMask}/*.png)")
    paired = _attach_masks(scan, images, masks, ("leftMask", "rightMask"), "ManualMask")
    for key, mask_paths in sorted(paired.items()):
        scan.candidates.append(Candidate(
            id=f"mcu/{key}", dataset="mcu", image=images[key], masks=mask_paths,
            finding="tb" if key.endswith("_1") else "normal", label=int(key.endswith("_1")),  # layout.CLASS_NAMES["mcu"]
        ))
    return scan


def scan_shenzhen(root: Path) -> Scan:
    """ChinaSet_AllFiles/CXR_png/*.png plus the separate lung-mask release (one mask per image, both
    lungs, the image's size). Seed 003 uses only images with a mask: an image the mask release does not
    cover is listed as `excluded` (not a bad file), so the counts say how many were left out."""
    scan = Scan("shenzhen")
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    suffix_len = len(layout.SHENZHEN_MASK_SUFFIX)
    for path in _walk(root, scan):
        suffix, stem = path.suffix.lower(), path.stem
        if suffix == ".png" and stem.endswith(layout.SHENZHEN_MASK_SUFFIX):
            key = stem[:-suffix_len]
            if not SHENZHEN_NAME.match(key):
                scan.reject(path, "unexpected mask name (expected CHNCXR_XXXX_Y_mask.png)")
            else:
                _claim_unique(scan, masks, key, path, "mask")
        elif suffix == ".png" and path.parent.name == "CXR_png":
            if not SHENZHEN_NAME.match(stem):
                scan.reject(path, "unexpected file name (expected CHNCXR_XXXX_Y.png with Y = 0 normal, 1 TB)")
            else:
                _claim_unique(scan, images, stem, path)
        elif suffix in DOC_SUFFIXES:
            scan.skipped.append(str(path))  # ClinicalReadings/*.txt, the read-me
        else:
            scan.reject(path, "unrecognised file (expected CXR_png/CHNCXR_*.png or mask/CHNCXR_*_mask.png)")
    for key, path in sorted(masks.items()):
        if key not in images:
            scan.reject(path, f"mask without a matching image {key}")
    for key, image in sorted(images.items()):
        if key not in masks:
            scan.reject(image, f"no lung mask in the mask release (expected {layout.SHENZHEN_MASKS}/{key}"
                               f"{layout.SHENZHEN_MASK_SUFFIX}.png); seed 003 uses only images with masks",
                        kind="excluded")
            continue
        tb = key.endswith("_1")
        scan.candidates.append(Candidate(
            id=f"shenzhen/{key}", dataset="shenzhen", image=image, masks=(masks[key],),
            finding="tb" if tb else "normal", label=int(tb),  # layout.CLASS_NAMES["shenzhen"]
        ))
    return scan


def _chexpert_rows(scan: Scan, csv: Path, split: str, image_dir: Path | None = None) -> dict[Path, tuple]:
    """A label file's rows by image file: (split, CXR id, label text, row number)."""
    table = chexpert.read_labels(csv, policy=None, image_dir=image_dir)
    scan.label_files.append(csv)
    values = table[list(layout.CHEXLOCALIZE_PATHOLOGIES)].to_numpy()
    return {Path(f): (split, cxr, chexpert.label_text(v), k + 2)
            for k, (f, cxr, v) in enumerate(zip(table["file"], table["id"], values))}


def _reject_absent(scan: Scan, rows: dict[Path, tuple], seen: set[Path], csv_of: dict[str, Path]) -> None:
    for file, (split, _, _, line) in rows.items():
        if file not in seen:
            scan.reject(f"{csv_of[split]}:row {line}", f"label-file row whose image {file} is absent")
            scan.rows_rejected += 1


def scan_chexpert(root: Path) -> Scan:
    """CheXpert-v1.0-small (or -v1.0): train.csv / valid.csv and their JPEG trees. If both
    releases are unpacked, the small one is used and the other listed as excluded."""
    scan = Scan("chexpert")
    found = [r for r in layout.CHEXPERT_ROOTS if any((root / r / n).is_file() for n in layout.CHEXPERT_CSVS)]
    if not found:
        raise InputError(f"chexpert: no label file; expected {layout.expected('chexpert', root.parent)}")
    use = root / found[0]
    csv_of = {Path(n).stem: use / n for n in layout.CHEXPERT_CSVS if (use / n).is_file()}
    rows: dict[Path, tuple] = {}
    for split, csv in csv_of.items():
        rows |= _chexpert_rows(scan, csv, split)
    seen: set[Path] = set()
    for path in _walk(root, scan):
        if path in csv_of.values():
            continue
        if path.name == layout.PHANTOM_TRAIN_MASKS or path.suffix.lower() in DOC_SUFFIXES:
            scan.skipped.append(str(path))  # the phantoms' evaluation truth, other CSVs, docs
        elif path.suffix.lower() not in {".jpg", ".jpeg"}:
            scan.reject(path, "unrecognised file (expected <split>/patientN/studyN/viewN_<view>.jpg and the CSVs)")
        elif use not in path.parents:
            scan.reject(path, f"another copy of CheXpert (using {use.name})", kind="excluded")
        elif path not in rows:
            scan.reject(path, f"image with no row in {', '.join(p.name for p in csv_of.values())}")
        else:
            split, cxr, labels, _ = rows[path]
            seen.add(path)
            scan.candidates.append(Candidate(id=f"chexpert/{split}/{cxr}", dataset="chexpert", image=path,
                                             official_split=split, kind="jpeg", labels=labels))
    _reject_absent(scan, rows, seen, csv_of)
    return scan


def scan_chexlocalize(root: Path) -> Scan:
    """The CheXlocalize release: per split (val, test) the label file, the images and the
    radiologists' masks (RLE, else polygons). Its saliency maps and human-benchmark files
    are not inputs (skipped)."""
    scan = Scan("chexlocalize")
    images, masks = root / layout.CHEXLOCALIZE_IMAGES, root / layout.CHEXLOCALIZE_MASKS
    csv_of, mask_of, rows = {}, {}, {}
    for split in layout.CHEXLOCALIZE_SPLITS:
        csv = images / layout.CHEXLOCALIZE_LABELS.format(split=split)
        if not csv.is_file():
            continue
        csv_of[split] = csv
        rows |= _chexpert_rows(scan, csv, split, image_dir=images / split)
        for name in (layout.CHEXLOCALIZE_SEGMENTATIONS, layout.CHEXLOCALIZE_ANNOTATIONS):
            if (masks / name.format(split=split)).is_file():
                mask_of[split] = masks / name.format(split=split)
                break
        else:
            raise InputError(f"chexlocalize: {split} images but no masks; expected {layout.expected('chexlocalize', root.parent)}")
    if not csv_of:
        raise InputError(f"chexlocalize: no label file; expected {layout.expected('chexlocalize', root.parent)}")
    sizes: dict[str, dict[str, tuple[int, int]]] = {}
    for split, path in mask_of.items():
        scan.label_files.append(path)
        sizes[split] = _mask_sizes(path)
        listed = {cxr for s, cxr, _, _ in rows.values() if s == split}
        for cxr in sorted(set(sizes[split]) - listed):
            scan.reject(f"{path}:{cxr}", f"masks of an image that {csv_of[split].name} does not list")
            scan.rows_rejected += 1
    seen: set[Path] = set()
    for path in _walk(root, scan):
        if path in csv_of.values() or path in mask_of.values():
            continue
        if path.suffix.lower() in DOC_SUFFIXES | {".json", ".pkl"}:
            scan.skipped.append(str(path))  # polygons beside the RLE, Grad-CAM maps, human benchmark
        elif path.suffix.lower() not in {".jpg", ".jpeg"}:
            scan.reject(path, "unrecognised file (expected CheXpert/<split>/patientN/studyN/viewN_<view>.jpg)")
        elif path not in rows:
            scan.reject(path, f"image with no row in {', '.join(p.name for p in csv_of.values())}")
        else:
            split, cxr, labels, _ = rows[path]
            seen.add(path)
            if cxr not in sizes[split] and "1" in labels.split(";"):
                scan.reject(path, f"positive labels in {csv_of[split].name} but no masks in {mask_of[split].name}")
                continue
            scan.candidates.append(Candidate(
                id=f"chexlocalize/{split}/{cxr}", dataset="chexlocalize", image=path, official_split=split,
                kind="jpeg", labels=labels, masks=(mask_of[split],), mask_json=True,
                mask_size=sizes[split].get(cxr),  # None: no positive label, no masks (all empty)
            ))
    _reject_absent(scan, rows, seen, csv_of)
    return scan


def _mask_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """(h, w) of every image a CheXlocalize mask file covers (checked file structure)."""
    if path.name.startswith("gt_segmentations"):
        out = {}
        for cxr, entry in chexpert.read_segmentations(path).items():
            shapes = {tuple(rle["size"]) for rle in entry.values()}
            if len(shapes) > 1:
                raise InputError(f"{path}: {cxr!r}: its pathologies' masks differ in size ({sorted(shapes)})")
            if shapes:
                out[cxr] = shapes.pop()
        return out
    return chexpert.annotation_sizes(path)


def nihx_normal_count(n_pneumonia: int, requested: int | str) -> int:
    if requested == "auto":
        return int(round(NIHX_PAPER_RATIO * n_pneumonia))
    return int(requested)


def select_nihx(labels: pd.DataFrame, normal_count: int | str = "auto", seed: int = 0) -> pd.DataFrame:
    """The paper's NIHX subset from the official label file.

    All rows whose `Finding Labels` contain the token `Pneumonia` (label 1),
    plus "No Finding" rows (label 0) drawn without replacement with `seed`.
    The draw depends only on the label file and the seed, never on which
    images happen to be on disk, so every machine selects the same rows.
    """
    tokens = labels["Finding Labels"].astype(str).str.split("|")
    pneumonia = labels[tokens.map(lambda t: "Pneumonia" in t)]
    normal_pool = labels[labels["Finding Labels"] == "No Finding"].sort_values("Image Index")
    n_normal = nihx_normal_count(len(pneumonia), normal_count)
    if n_normal > len(normal_pool):
        raise InputError(
            f"NIH label file: {n_normal} 'No Finding' rows requested for NIHX but only {len(normal_pool)} exist "
            "(lower data.nihx.normal_count)"
        )
    rng = np.random.default_rng(seed)
    drawn = normal_pool.iloc[np.sort(rng.choice(len(normal_pool), size=n_normal, replace=False))]
    chosen = pd.concat([pneumonia.assign(label=1), drawn.assign(label=0)])
    return chosen.sort_values("Image Index").reset_index(drop=True)


def read_nih_labels(path: Path) -> pd.DataFrame:
    try:
        # The official header has unquoted commas inside two column names, so it
        # reads as 11 columns; only the first two matter here.
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"{path}: unreadable NIH label file ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    missing = {"Image Index", "Finding Labels"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: not an NIH label file: missing column(s) {', '.join(sorted(missing))}")
    return table


def scan_nihx(root: Path, normal_count: int | str, seed: int) -> Scan:
    scan = Scan("nihx")
    label_file = next((root / n for n in layout.NIH_LABEL_FILES if (root / n).is_file()), None)
    images: dict[str, Path] = {}
    for path in _walk(root, scan):
        suffix = path.suffix.lower()
        if path == label_file:
            scan.label_files.append(path)
        elif suffix == ".png" and layout.NIH_IMAGE_DIR in path.relative_to(root).parts[:-1]:
            if not NIH_NAME.match(path.stem):
                scan.reject(path, "unexpected file name (expected NNNNNNNN_NNN.png)")
            else:
                _claim_unique(scan, images, path.name, path)
        elif suffix in DOC_SUFFIXES or suffix == ".gz":
            scan.skipped.append(str(path))  # BBox list, train/test lists, README, other label versions
        else:
            scan.reject(path, "unrecognised file (expected images/*.png and the label file)")
    if label_file is None:
        raise InputError(f"nihx: no label file; expected {layout.expected('nihx', root.parent)}")
    table = read_nih_labels(label_file)
    dup = table["Image Index"].duplicated()
    for i in np.flatnonzero(dup.to_numpy()):
        scan.reject(f"{label_file}:row {i + 2}", f"duplicate id {table['Image Index'].iat[i]!r} in the label file")
        scan.rows_rejected += 1
    table = table[~dup]
    chosen = select_nihx(table, normal_count, seed)
    chosen_names = set(chosen["Image Index"])
    listed = dict(zip(table["Image Index"], table["Finding Labels"]))
    for name, path in images.items():
        if name not in listed:
            scan.reject(path, f"no row for {name} in {label_file.name}")
        elif name not in chosen_names:
            scan.reject(path, f"not in the NIHX subset (Finding Labels: {listed[name]})", kind="excluded")
    # Line numbers in the file: the index still counts the dropped duplicate rows.
    row_of = {n: i + 2 for i, n in zip(table.index, table["Image Index"])}
    for row in chosen.itertuples(index=False):
        name = row[0]
        if name not in images:
            scan.reject(f"{label_file}:row {row_of[name]}", f"label-file row whose image {name} is absent")
            scan.rows_rejected += 1
            continue
        scan.candidates.append(Candidate(
            id=f"nihx/{Path(name).stem}", dataset="nihx", image=images[name],
            label=int(row.label), finding=str(row[1]),
        ))
    return scan


# ------------------------------------------------------------------ decoding
def _validate(c: Candidate) -> dict | Rejection:
    """Decode the image and masks fully; return a manifest row or a rejection."""
    try:
        if c.kind == "jsrt_raw":
            formats.read_jsrt_raw(c.image)
            info = formats.ImageInfo(formats.JSRT_SIDE, formats.JSRT_SIDE, formats.JSRT_BITS, 1)
            fmt = "jsrt_raw"
        else:
            _, info = formats.read_image(c.image)
            fmt = c.kind
    except formats.ImageDecodeError as exc:
        return Rejection(c.dataset, str(c.image), str(exc))
    want = c.mask_size or (info.height, info.width)
    if c.mask_json and want != (info.height, info.width):
        return Rejection(c.dataset, str(c.image), f"its masks in {c.masks[0]} are {want[1]}x{want[0]}, the image "
                                                  f"{info.width}x{info.height}")
    for mask in () if c.mask_json else c.masks:
        try:
            shape = formats.read_mask(mask).shape
        except formats.ImageDecodeError as exc:
            return Rejection(c.dataset, str(c.image), f"mask {mask} is {exc}")
        if shape != want:
            return Rejection(c.dataset, str(c.image),
                             f"mask {mask} is {shape[1]}x{shape[0]}, expected {want[1]}x{want[0]}")
    return {
        "id": c.id, "dataset": c.dataset, "image_path": str(c.image),
        "mask_paths": ";".join(str(m) for m in c.masks),
        "label": "" if c.label is None else c.label, "official_split": c.official_split,
        "height": info.height, "width": info.width, "bit_depth": info.bit_depth, "channels": info.channels,
        "format": fmt, "finding": c.finding, "labels": c.labels,
    }


def _decode_all(candidates: list[Candidate], workers: int, progress) -> list[dict | Rejection]:
    if workers > 1 and len(candidates) > 1:
        with ProcessPoolExecutor(workers) as pool:
            out = []
            for result in pool.map(_validate, candidates, chunksize=4):
                out.append(result)
                progress()
            return out
    out = []
    for c in candidates:
        out.append(_validate(c))
        progress()
    return out


# ------------------------------------------------------------------ driver
@dataclass
class Summary:
    dataset: str
    files_found: int
    accepted: int
    files_used: int
    rejected_files: int
    rejected_rows: int
    excluded: int
    skipped: int

    def line(self) -> str:
        return (f"{self.dataset}: {self.accepted} images accepted ({self.files_used} files used), "
                f"{self.rejected_files - self.excluded} files rejected, {self.excluded} excluded, "
                f"{self.skipped} skipped as non-input, {self.rejected_rows} label rows rejected; "
                f"{self.files_found} files found")


def scan_source(dataset: str, root: Path, cfg: Config) -> Scan:
    if not root.is_dir() or not any(root.iterdir()):
        raise InputError(f"{dataset}: {root} is missing or empty; expected {layout.expected(dataset, root.parent)}")
    if dataset == "jsrt":
        scan = scan_jsrt(root)
    elif dataset == "chex":
        scan = scan_chex(root)
    elif dataset == "mcu":
        scan = scan_mcu(root)
    elif dataset == "shenzhen":
        scan = scan_shenzhen(root)
    elif dataset == "chexpert":
        scan = scan_chexpert(root)
    elif dataset == "chexlocalize":
        scan = scan_chexlocalize(root)
    else:
        scan = scan_nihx(root, cfg.data.nihx.normal_count, cfg.data.nihx.seed)
    if not scan.candidates and not scan.rejected:
        raise InputError(f"{dataset}: no input files under {root}; expected {layout.expected(dataset, root.parent)}")
    return scan


def harmonise(cfg: Config, progress_factory=None) -> tuple[pd.DataFrame, pd.DataFrame, list[Summary]]:
    """Scan and decode every configured source. Returns (manifest, rejected, summaries)."""
    rows: list[dict] = []
    rejected: list[Rejection] = []
    summaries: list[Summary] = []
    for dataset in cfg.data.datasets:
        scan = scan_source(dataset, cfg.raw_dir / dataset, cfg)
        progress = progress_factory(dataset, len(scan.candidates)) if progress_factory else (lambda: None)
        results = _decode_all(scan.candidates, cfg.harmonise.workers, progress)
        accepted = [r for r in results if isinstance(r, dict)]
        bad = [r for r in results if isinstance(r, Rejection)]
        # A rejected image takes its masks with it: they are listed, not lost.
        by_image = {c.image: c for c in scan.candidates}
        for r in bad:
            c = by_image[Path(r.path)]
            for mask in () if c.mask_json else c.masks:  # a shared mask file serves the other images
                scan.reject(mask, f"mask of rejected image {Path(r.path).name}")
        scan.rejected.extend(bad)
        rows.extend(accepted)
        rejected.extend(scan.rejected)
        # images, their mask files and the label files, each counted once (CheXlocalize's
        # masks of all images share one JSON file per split)
        used = {r["image_path"] for r in accepted} | {m for r in accepted if r["mask_paths"]
                                                        for m in r["mask_paths"].split(";")}
        files_used = len(used | {str(p) for p in scan.label_files})
        summaries.append(Summary(
            dataset=dataset, files_found=scan.files_found, accepted=len(accepted), files_used=files_used,
            rejected_files=len(scan.rejected) - scan.rows_rejected, rejected_rows=scan.rows_rejected,
            excluded=sum(r.kind == "excluded" for r in scan.rejected), skipped=len(scan.skipped),
        ))
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    dup = manifest["id"].duplicated(keep="first")
    if dup.any():  # ids are unique per source by construction; this guards the union
        for path in manifest.loc[dup, "image_path"]:
            rejected.append(Rejection("?", path, "duplicate id across sources"))
        manifest = manifest[~dup]
    manifest = manifest.sort_values("id").reset_index(drop=True)
    rejected_df = pd.DataFrame([asdict(r) for r in rejected], columns=REJECTED_COLUMNS)
    rejected_df = rejected_df.sort_values(["dataset", "path"]).reset_index(drop=True)
    return manifest, rejected_df, summaries


def write_outputs(out_dir: Path, manifest: pd.DataFrame, rejected: pd.DataFrame, summaries: list[Summary]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    rejected.to_csv(out_dir / "rejected.csv", index=False)
    counts = {s.dataset: asdict(s) for s in summaries}
    (out_dir / "harmonise_summary.json").write_text(json.dumps(counts, indent=2) + "\n")

