"""`multimix preprocess`: every accepted manifest row -> 256x256 float32 in HDF5.

Per image, in this order:
1. decode to one channel in display polarity (air dark, bone bright): JSRT raw
   values are inverted (stored larger = darker); colour and RGBA files are
   converted to luminance (ITU-R 601 weights, alpha dropped); JPEGs are
   decoded with libjpeg's DCT scaling to no less than twice the target size,
   which is both the fastest decode and a proper low-pass;
2. resize with area averaging (Pillow's BOX filter: each source pixel
   contributes by the area it covers) — anti-aliased for any scale factor.
   It runs at the source's own precision (8-bit, or 16-bit for 12/16-bit
   sources), so each average is rounded to half a grey level of the source,
   far below its noise, and no full-size float copy is ever made;
   `preprocess.aspect` chooses `squash` (stretch to a square, as the paper
   does) or `pad` (keep the aspect ratio, letterbox with 0);
3. normalise each image the same way whatever its source: clip to its own
   `clip_percentiles` (default 0.5th-99.5th, computed on the resized image,
   where the percentiles are robust and cheap), then scale to [0, 1]. Both
   tasks see this one value range.
Masks (left ∪ right lung) follow the same geometry: each mask is area-averaged
to the target grid and a pixel is lung when lung covers at least half of it.
That is binary {0, 1} like nearest-neighbour sampling, without its half-pixel
shifts and aliasing on 16x downscales.

Output: one HDF5 file per dataset under `data/processed/`, written under a
temporary name and renamed only when complete, so a killed run never leaves a
valid-looking partial file (the next run starts over). Datasets: `images`
(N,S,S) float32, `masks` (N,S,S) uint8 where the source has masks, `labels`
(N,) int8 (-1 unknown), `ids` and `splits` (N,) strings, chunked one image per
chunk, deflate-compressed (level 1: deterministic, unlike h5py's LZF). Seed 004's
multi-label sources (CheXpert, CheXlocalize) store `labels` (N, 10) float32 — the ten
pathologies' raw labels 1 / 0 / -1, NaN = blank, the uncertainty policy being a training choice — `masks` (N, 10, S, S) uint8 where
CheXlocalize has masks (each pathology by the same area rule), and `native_hw` (N, 2),
the image's own size, at which CheXlocalize's masks are scored. Manifest rows that fail to decode are listed in
`preprocess_rejected.csv` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pandas as pd
from PIL import Image

import multimix
from multimix.data import chexpert, formats, layout
from multimix.errors import InputError

if TYPE_CHECKING:  # types only: config sits above the data stages
    from multimix.config import Config, PreprocessConfig

PARTIAL_SUFFIX = ".partial"
NORMALISATION = "per-image percentile clip ({lo}th-{hi}th, after area resize) then linear scale to [0, 1]"


@dataclass(frozen=True)
class Geometry:
    """Where an (h, w) image lands on the S x S output grid."""

    height: int  # size of the resized image before padding
    width: int
    top: int
    left: int


def geometry(h: int, w: int, size: int, aspect: str) -> Geometry:
    if aspect == "squash":
        return Geometry(size, size, 0, 0)
    scale = size / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    return Geometry(th, tw, (size - th) // 2, (size - tw) // 2)


def decode(path: Path, fmt: str, draft_to: tuple[int, int]) -> tuple[Image.Image, bool]:
    """One-channel image at the source's own precision ('L' 8-bit or 'I;16'),
    and whether it must be inverted to reach display polarity. Inversion is
    linear, so it is applied after the resize, on 65k pixels instead of 4M."""
    if fmt == "jsrt_raw":
        raw = np.fromfile(path, dtype=">u2")
        if raw.size * 2 != formats.JSRT_BYTES:
            raise formats.ImageDecodeError(f"raw file of the wrong size: {raw.size * 2} bytes, expected {formats.JSRT_BYTES}")
        native = raw.astype(np.uint16).reshape(formats.JSRT_SIDE, formats.JSRT_SIDE)  # byte swap
        return Image.fromarray(native), True
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("L", draft_to)  # DCT-domain downscale, never below draft_to
            im.load()
            if im.mode == "I":  # some 16-bit PNGs open as 32-bit; values fit in 16 bits
                return Image.fromarray(np.asarray(im).astype(np.uint16)), False
            if im.mode in ("L", "I;16"):
                return im, False  # loaded pixels outlive the closed file handle
            return im.convert("L"), False  # RGB/RGBA/P -> luminance (ITU-R 601); alpha dropped
    except Exception as exc:
        raise formats.decode_failure(exc) from None


def area_resize(img: Image.Image, width: int, height: int) -> Image.Image:
    """Area-average resize. An exact integer factor (SCR masks 1024 -> 256)
    takes Pillow's `reduce`, the same block average at a quarter of the cost;
    any other factor or mode takes the BOX filter."""
    w, h = img.size
    factor = w // width
    if factor > 1 and w == width * factor and h == height * factor and img.mode in ("L", "I", "F"):
        return img.reduce(factor)
    return img.resize((width, height), Image.BOX)


def normalise(pixels: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    lo, hi = np.percentile(pixels, [lo_pct, hi_pct])
    if hi <= lo:  # a constant image: map to 0 rather than divide by zero
        return np.zeros_like(pixels, dtype=np.float32)
    return np.clip((pixels - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def place_on_grid(pixels: np.ndarray, g: Geometry, size: int, dtype) -> np.ndarray:
    if pixels.shape == (size, size):
        return pixels.astype(dtype, copy=False)
    canvas = np.zeros((size, size), dtype=dtype)
    canvas[g.top:g.top + g.height, g.left:g.left + g.width] = pixels
    return canvas


def resize_mask(paths: list[Path], g: Geometry) -> np.ndarray:
    """Union of masks -> {0,1} on the target grid (lung if it covers >= half a pixel)."""
    coverage = np.zeros((g.height, g.width), dtype=np.float32)
    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
                grey = im if im.mode == "L" else im.convert("L")  # GIF palette indices -> grey levels
        except Exception as exc:
            raise formats.ImageDecodeError(f"mask {path} is unreadable ({exc})") from None
        peak = grey.getextrema()[1]  # 255 for 0/255 masks, 1 for 0/1 masks
        if peak:
            small = area_resize(grey, g.width, g.height)  # area fraction x peak
            coverage += np.asarray(small, dtype=np.float32) / peak
    # Left and right lung masks are disjoint, so their area fractions add up.
    return (coverage >= 0.5).astype(np.uint8)


MULTILABEL = {"chexpert", "chexlocalize"}  # datasets with the ten pathologies' labels (and masks)
PATHOLOGIES = len(layout.CHEXLOCALIZE_PATHOLOGIES)


def resize_binary(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """One boolean mask -> {0, 1} at (height, width) by the area rule (kept where it covers at
    least half a target pixel), as every mask of the pipeline is resized."""
    return (np.asarray(area_resize(Image.fromarray(mask.astype(np.uint8) * 255), width, height)) >= 128
            ).astype(np.uint8)


def resize_pathology_masks(json_path: str, image_id: str, g: Geometry) -> np.ndarray:
    """CheXlocalize's ten masks of one image -> (10, h, w) {0, 1} by the area rule; an image
    the file does not list (no positive label) has ten empty masks."""
    masks = chexpert.masks_of(Path(json_path), image_id.rsplit("/", 1)[-1])
    out = np.zeros((PATHOLOGIES, g.height, g.width), dtype=np.uint8)
    for k, name in enumerate(layout.CHEXLOCALIZE_PATHOLOGIES):
        if masks is not None and masks.get(name) is not None and masks[name].any():
            out[k] = resize_binary(masks[name], g.width, g.height)
    return out


def prepare(img: Image.Image, invert: bool, g: Geometry, cfg: PreprocessConfig) -> np.ndarray:
    """A decoded one-channel image -> the network's input (S, S) float32 in [0, 1]: area resize,
    JSRT's inversion, per-image percentile normalisation, placed on the grid. `multimix predict`
    runs this same function on new files (DICOM included), so a model sees what it was trained on."""
    small = np.asarray(area_resize(img, g.width, g.height), dtype=np.float32)
    if invert:  # JSRT stores larger = darker
        small = formats.JSRT_MAX - small
    pixels = normalise(small, *cfg.clip_percentiles)
    return place_on_grid(pixels, g, cfg.size, np.float32)


def process_image(image_path: str, fmt: str, mask_paths: str, height: int, width: int,
                  cfg: PreprocessConfig, image_id: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """Decode, resize and normalise one manifest row (and its masks)."""
    g = geometry(height, width, cfg.size, cfg.aspect)
    img, invert = decode(Path(image_path), fmt, (2 * g.width, 2 * g.height))
    image = prepare(img, invert, g, cfg)
    mask = None
    if mask_paths.endswith(".json"):
        small_masks = resize_pathology_masks(mask_paths, image_id, g)
        mask = np.stack([place_on_grid(m, g, cfg.size, np.uint8) for m in small_masks])
    elif mask_paths:
        mask = place_on_grid(resize_mask([Path(p) for p in mask_paths.split(";")], g), g, cfg.size, np.uint8)
    return image, mask


def _work(args):
    index, row, cfg = args
    try:
        image, mask = process_image(row["image_path"], row["format"], row["mask_paths"], row["height"], row["width"],
                                    cfg, image_id=row["id"])
        return index, image, mask, None
    except (formats.ImageDecodeError, OSError) as exc:
        return index, None, None, str(exc)


class H5Writer:
    """Appends images of one dataset to `<name>.h5.partial`; `commit` renames it."""

    def __init__(self, path: Path, capacity: int, size: int, with_masks: bool, attrs: dict,
                 multilabel: bool = False):
        self.path, self.multilabel = path, multilabel
        self.partial = path.with_name(path.name + PARTIAL_SUFFIX)
        self.partial.unlink(missing_ok=True)
        self.file = h5py.File(self.partial, "w", track_order=True)
        self.count = 0
        # byte-identical output for identical input: no timestamps, and deflate, not LZF (h5py's
        # LZF leaves its hash table uninitialised, so the same chunk can compress to other bytes)
        common = dict(track_times=False)
        packed = dict(common, compression="gzip", compression_opts=1)
        chunk = (1, size, size)
        self.images = self.file.create_dataset("images", (capacity, size, size), np.float32, chunks=chunk,
                                               maxshape=(None, size, size), shuffle=True, **packed)
        self.masks = self.native = None
        planes = (PATHOLOGIES,) if multilabel else ()
        if with_masks:
            self.masks = self.file.create_dataset("masks", (capacity, *planes, size, size), np.uint8,
                                                  chunks=(1, *planes, size, size), maxshape=(None, *planes, size, size),
                                                  **packed)
        if multilabel:
            self.labels = self.file.create_dataset("labels", (capacity, PATHOLOGIES), np.float32,
                                                   maxshape=(None, PATHOLOGIES), **common)
            self.native = self.file.create_dataset("native_hw", (capacity, 2), np.int32, maxshape=(None, 2), **common)
            self.file.attrs["pathologies"] = list(layout.CHEXLOCALIZE_PATHOLOGIES)
        else:
            self.labels = self.file.create_dataset("labels", (capacity,), np.int8, maxshape=(None,), **common)
        text = h5py.string_dtype()
        self.ids = self.file.create_dataset("ids", (capacity,), text, maxshape=(None,), **common)
        self.splits = self.file.create_dataset("splits", (capacity,), text, maxshape=(None,), **common)
        for key, value in attrs.items():
            self.file.attrs[key] = value

    def append(self, row: dict, image: np.ndarray, mask: np.ndarray | None) -> None:
        i = self.count
        self.images[i] = image
        if self.masks is not None:
            self.masks[i] = mask
        if self.multilabel:
            self.labels[i] = chexpert.parse_label_text(row["labels"])
            self.native[i] = (int(row["height"]), int(row["width"]))
        else:
            self.labels[i] = -1 if row["label"] == "" or pd.isna(row["label"]) else int(row["label"])
        self.ids[i] = row["id"]
        self.splits[i] = row["official_split"] if isinstance(row["official_split"], str) else ""
        self.count += 1

    def commit(self) -> None:
        for ds in (self.images, self.masks, self.labels, self.ids, self.splits, self.native):
            if ds is not None:
                ds.resize(self.count, axis=0)
        self.file.attrs["count"] = self.count
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.partial, self.path)  # atomic on POSIX: the file appears whole or not at all

    def abort(self) -> None:
        if self.file.id.valid:
            self.file.close()
        self.partial.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (run `multimix harmonise` first)")
    table = pd.read_csv(path, dtype={"label": str, "mask_paths": str, "official_split": str, "labels": str},
                        keep_default_na=False)
    need = {"id", "dataset", "image_path", "mask_paths", "label", "official_split", "height", "width", "format"}
    if need - set(table.columns):
        raise InputError(f"{path}: not a multimix manifest; missing column(s) {', '.join(sorted(need - set(table.columns)))}")
    return table


def preprocess(cfg: Config, manifest_path: Path | None = None, out_dir: Path | None = None,
               datasets: list[str] | None = None, progress_factory=None) -> dict:
    """Write one HDF5 per dataset; returns a summary with counts and timing.
    `progress_factory(total)` returns a callable invoked once per image."""
    manifest_path = manifest_path or cfg.interim_dir / "manifest.csv"
    out_dir = out_dir or cfg.processed_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    table = read_manifest(manifest_path)
    chosen = datasets or list(cfg.data.datasets)
    table = table[table["dataset"].isin(chosen)].sort_values(["dataset", "id"]).reset_index(drop=True)
    pp = cfg.preprocess
    lo, hi = pp.clip_percentiles
    base_attrs = {
        "size": pp.size, "aspect": pp.aspect, "dtype": "float32", "value_range": "[0, 1]",
        "normalisation": NORMALISATION.format(lo=lo, hi=hi), "clip_percentiles": [lo, hi],
        "resize": "area average (Pillow BOX); masks: area >= 0.5", "polarity": "display (air dark, bone bright)",
        "multimix_version": multimix.__version__, "manifest_sha256": sha256_file(manifest_path),
    }
    rows = table.to_dict("records")
    progress = progress_factory(len(rows)) if progress_factory else None
    writers: dict[str, H5Writer] = {}
    for dataset in chosen:
        subset = table[table["dataset"] == dataset]
        with_masks = bool((subset["mask_paths"] != "").any())
        writers[dataset] = H5Writer(out_dir / f"{dataset}.h5", max(len(subset), 1), pp.size, with_masks,
                                    base_attrs | {"dataset": dataset}, multilabel=dataset in MULTILABEL)
    rejected = []
    start = time.perf_counter()
    tasks = [(i, row, pp) for i, row in enumerate(rows)]
    try:
        if pp.workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(pp.workers) as pool:
                results = pool.map(_work, tasks, chunksize=2)
                _consume(results, rows, writers, rejected, progress)
        else:
            _consume(map(_work, tasks), rows, writers, rejected, progress)
        for writer in writers.values():
            writer.commit()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    seconds = time.perf_counter() - start
    pd.DataFrame(rejected, columns=["dataset", "id", "path", "reason"]).to_csv(out_dir / "preprocess_rejected.csv", index=False)
    summary = {
        "images": len(rows) - len(rejected), "rejected": len(rejected),
        "per_dataset": {d: writers[d].count for d in chosen},
    }
    # No timings in the file: the output folder must be identical for identical input.
    (out_dir / "preprocess_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary | {"seconds": round(seconds, 2)}


def _consume(results, rows, writers, rejected, progress) -> None:
    for index, image, mask, error in results:
        row = rows[index]
        if error is not None:
            rejected.append({"dataset": row["dataset"], "id": row["id"], "path": row["image_path"], "reason": error})
        else:
            writers[row["dataset"]].append(row, image, mask)
        if progress:
            progress()
