"""Readers of CheXpert's label files and CheXlocalize's masks (seed 004, CheXseg).

CheXpert label CSVs (`train.csv`, `valid.csv`, CheXlocalize's `{val,test}_labels.csv`):
a `Path` column and CheXpert's observations, each 1 (positive), 0 (negative), -1
(uncertain: the labeler found a hedged mention) or blank (not mentioned). We keep the
ten pathologies CheXlocalize localises; blank counts as negative (the report does not
mention it), and -1 follows `policy`:
  ones   U-Ones: uncertain = positive
  zeros  U-Zeros: uncertain = negative
  ignore uncertain labels are left out of the loss (NaN here)
(Irvin et al. 2019 compare these; U-Ones is best for Atelectasis and Edema.)

CheXlocalize masks are keyed by CXR id, the image's path without its split folder:
`…/valid/patient64541/study1/view1_frontal.jpg` -> `patient64541_study1_view1_frontal`.
  gt_segmentations_*.json  {id: {pathology: {"size": [h, w], "counts": RLE}}}
  gt_annotations_*.json    {id: {"img_size": [h, w], pathology: [[[x, y], …], …]}}
RLE is pycocotools' compressed column-major run-length code; polygons are rasterised
as CheXlocalize does (PIL's polygon fill with its outline), so that both files give
the same mask.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from multimix.data import layout
from multimix.errors import InputError

POLICIES = ("ones", "zeros", "ignore")
IMAGE_PATH = re.compile(r"(?:^|/)(?:(?P<split>[^/]+)/)?(?P<patient>patient\d+)/(?P<study>study\d+)/"
                        r"(?P<view>view\d+_(?:frontal|lateral))\.jpg$")
LABEL_VALUES = {1.0, 0.0, -1.0}


def cxr_id(path: str) -> str:
    """CheXlocalize's id of an image path (raises ValueError on a path of another shape)."""
    m = IMAGE_PATH.search(str(path).replace("\\", "/"))
    if not m:
        raise ValueError(f"{path!r} is not a CheXpert image path (…/<split>/patientN/studyN/viewN_<frontal|lateral>.jpg)")
    return f"{m['patient']}_{m['study']}_{m['view']}"


def image_file(csv_path: Path, path: str, image_dir: Path | None = None) -> Path:
    """Where a CSV row's image lies: `patient…/study…/view….jpg` under `image_dir`, or by
    default under the CSV's folder and the split folder the Path names (CheXpert's Path
    starts with its own root folder, `CheXpert-v1.0-small/train/…`; CheXlocalize's label
    files name CheXpert's folders while their images lie in `CheXpert/{val,test}/`)."""
    m = IMAGE_PATH.search(str(path).replace("\\", "/"))
    if not m or (image_dir is None and not m["split"]):
        raise ValueError(f"{path!r} is not a CheXpert image path (…/<split>/patientN/studyN/viewN_<view>.jpg)")
    folder = Path(image_dir) if image_dir is not None else csv_path.parent / m["split"]
    return folder / m["patient"] / m["study"] / f"{m['view']}.jpg"


def apply_policy(values: pd.Series, policy: str | None) -> pd.Series:
    """One observation's raw values (1, 0, -1, NaN) -> training targets (1, 0, NaN = ignore);
    policy None keeps the raw values (what harmonise records)."""
    if policy is None:
        return values
    if policy not in POLICIES:
        raise ValueError(f"uncertainty policy {policy!r}; expected one of {', '.join(POLICIES)}")
    out = values.fillna(0.0)
    uncertain = out == -1.0
    return out.mask(uncertain, {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy])


def read_labels(csv_path: Path, policy: str | None = "ones", image_dir: Path | None = None) -> pd.DataFrame:
    """A label CSV -> one row per image: id, path (as written), file (where it lies), view,
    the ten pathologies' targets under `policy` (None: the raw 1 / 0 / -1 / NaN), and
    `uncertain` (how many were -1).
    Raises InputError naming the file, row and column of anything unexpected."""
    csv_path = Path(csv_path)
    try:
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{csv_path}: not a readable CSV ({exc})") from None
    columns = {p: layout.CHEXPERT_COLUMN[p] if layout.CHEXPERT_COLUMN[p] in raw.columns else p
               for p in layout.CHEXLOCALIZE_PATHOLOGIES}
    missing = [c for c in ["Path", *columns.values()] if c not in raw.columns]
    if missing:
        raise InputError(f"{csv_path}: missing column {missing[0]!r}; expected Path and CheXpert's observations "
                         f"({', '.join(layout.CHEXPERT_OBSERVATIONS)})")
    out = pd.DataFrame({"path": raw["Path"]})
    for k, path in enumerate(raw["Path"]):
        try:
            image_file(csv_path, path, image_dir)
        except ValueError as exc:
            raise InputError(f"{csv_path}: row {k + 2}, column 'Path': {exc}") from None
    out["id"] = [cxr_id(p) for p in raw["Path"]]
    out["file"] = [str(image_file(csv_path, p, image_dir)) for p in raw["Path"]]
    out["view"] = [IMAGE_PATH.search(p)["view"].split("_")[1] for p in raw["Path"]]
    uncertain = np.zeros(len(raw), dtype=int)
    for pathology, column in columns.items():
        text = raw[column].str.strip()
        values = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = (text != "") & ~values.isin(LABEL_VALUES)
        if bad.any():
            k = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{csv_path}: row {k + 2}, column {column!r}: {raw[column].iloc[k]!r}; expected 1, 0, "
                             "-1 or blank")
        uncertain += (values == -1.0).to_numpy()
        out[pathology] = apply_policy(values, policy).to_numpy()
    out["uncertain"] = uncertain
    dup = out["id"].duplicated()
    if dup.any():
        k = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"{csv_path}: row {k + 2}: image {out['id'].iloc[k]!r} is listed twice")
    return out


def with_images(labels: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Rows whose image file exists, and (path, reason) for every row whose image does not
    (the counting rule: a label row is used or listed)."""
    exists = labels["file"].map(lambda f: Path(f).is_file())
    missing = [(row.file, f"{source}: label row {row.path!r} has no image file")
               for row in labels[~exists].itertuples()]
    return labels[exists].reset_index(drop=True), missing


def label_text(values) -> str:
    """The ten raw values as the manifest stores them: `1;0;;-1;…` (blank = not mentioned)."""
    return ";".join("" if pd.isna(v) else f"{float(v):g}" for v in values)


def parse_label_text(text: str) -> np.ndarray:
    """The manifest's label text -> (10,) float32 raw values (NaN = blank)."""
    parts = str(text).split(";")
    if len(parts) != len(layout.CHEXLOCALIZE_PATHOLOGIES):
        raise ValueError(f"expected {len(layout.CHEXLOCALIZE_PATHOLOGIES)} ';'-separated labels, found {len(parts)}")
    return np.array([float(p) if p else np.nan for p in parts], dtype=np.float32)


def policy_targets(raw: np.ndarray, policy: str) -> np.ndarray:
    """Raw values (…, 10) -> training targets under `policy` (blank = 0; -1 per policy)."""
    if policy not in POLICIES:
        raise ValueError(f"uncertainty policy {policy!r}; expected one of {', '.join(POLICIES)}")
    out = np.nan_to_num(np.asarray(raw, dtype=np.float32), nan=0.0)
    out[out == -1.0] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy]
    return out


# ------------------------------------------------------------------ masks
def encode(mask: np.ndarray) -> dict:
    """A binary mask -> CheXlocalize's {"size": [h, w], "counts": str} (pycocotools RLE)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """CheXlocalize's RLE -> bool (h, w)."""
    with warnings.catch_warnings():  # pycocotools 2.0 calls numpy's __array__ the pre-2.0 way
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode({"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}).astype(bool)


def rasterise(polygons: list, size: tuple[int, int]) -> np.ndarray:
    """Polygons [[[x, y], …], …] in pixel coordinates -> bool (h, w): each filled, with its outline."""
    h, w = size
    canvas = Image.new("1", (w, h))
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        points = [(float(x), float(y)) for x, y in polygon]
        if len(points) >= 2:
            draw.polygon(points, outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


def _load_json(path: Path) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object keyed by CXR id, found {type(data).__name__}")
    return data


def _check_pathology(path: Path, image: str, name: str) -> None:
    if name not in layout.CHEXLOCALIZE_PATHOLOGIES:
        raise InputError(f"{path}: {image!r} has key {name!r}; expected one of "
                         f"{', '.join(layout.CHEXLOCALIZE_PATHOLOGIES)}")


def read_segmentations(path: Path) -> dict[str, dict[str, dict]]:
    """gt_segmentations_*.json, checked: {id: {pathology: rle}} (decode with `decode`)."""
    path = Path(path)
    data = _load_json(path)
    for image, entry in data.items():
        if not isinstance(entry, dict):
            raise InputError(f"{path}: {image!r}: expected {{pathology: RLE}}, found {type(entry).__name__}")
        for name, rle in entry.items():
            _check_pathology(path, image, name)
            ok = isinstance(rle, dict) and isinstance(rle.get("counts"), str) and \
                isinstance(rle.get("size"), list) and len(rle["size"]) == 2
            if not ok:
                raise InputError(f"{path}: {image!r} / {name!r}: expected {{\"size\": [h, w], \"counts\": RLE string}}")
    return data


def _annotation_size(path: Path, image: str, entry) -> tuple[int, int]:
    """One gt_annotations entry's image size, its pathology names checked."""
    size = entry.get("img_size") if isinstance(entry, dict) else None
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise InputError(f"{path}: {image!r}: expected \"img_size\": [h, w] and polygons per pathology")
    for name in entry:
        if name != "img_size":
            _check_pathology(path, image, name)
    return size[0], size[1]


def annotation_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """gt_annotations_*.json -> {id: (h, w)}, its structure checked, nothing rasterised."""
    path = Path(path)
    return {image: _annotation_size(path, image, entry) for image, entry in _load_json(path).items()}


def masks_of(path: Path, image: str) -> dict[str, np.ndarray] | None:
    """One image's masks from either CheXlocalize file (None if the file does not list it)."""
    data = _cached_json(str(path))
    entry = data.get(image)
    if entry is None:
        return None
    if "img_size" in entry:
        size = tuple(entry["img_size"])
        return {p: rasterise(entry.get(p, []), size) for p in layout.CHEXLOCALIZE_PATHOLOGIES}
    return {p: decode(rle) for p, rle in entry.items()}


@functools.lru_cache(maxsize=4)
def _cached_json(path: str) -> dict:
    """A mask file read once per process (preprocess workers read many images from it)."""
    return _load_json(Path(path))


def read_annotations(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """gt_annotations_*.json -> {id: {pathology: bool mask}} (pathologies it lists)."""
    path = Path(path)
    data = _load_json(path)
    out = {}
    for image, entry in data.items():
        size = _annotation_size(path, image, entry)
        out[image] = {}
        for name, polygons in entry.items():
            if name == "img_size":
                continue
            try:
                out[image][name] = rasterise(polygons, size)
            except (TypeError, ValueError):
                raise InputError(f"{path}: {image!r} / {name!r}: expected a list of polygons [[[x, y], …], …]") from None
    return out
