"""`multimix predict`: a trained run (or a registered MLflow model) on new radiographs.

Inputs are files or folders (walked recursively): PNG, JPEG, TIFF, JSRT's raw `.IMG` and DICOM
(by its "DICM" prefix, whatever the file's name; `multimix.data.dicom`). Every file found is
either predicted or listed in `rejected.csv` with its reason, and a bad file never stops the
batch (the counting rule). Each image goes through the pipeline's own preprocessing
(`multimix.data.preprocess`: decode, area resize, per-image percentile normalisation), so the
network sees what it saw in training, then through the method's `predict`
(`multimix.serving.Bundle`, the same code as the MLflow model).

Written under `--out` (default `predictions/`):
  <name>_mask.png           the mask at the image's native size (0 / 255; per structure,
                            <name>_mask_<structure>.png, for multi-label methods such as CheXseg)
  <name>_overlay.png        the image with the saliency map and the mask's outline
  predictions.csv / .json   one row per image: class probabilities and the predicted class,
                            the mask's share of the image, the preprocessing applied
  rejected.csv              the files not predicted, with the reason
where <name> is the input's path below the folder given (or its file name), '/' replaced by '__'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from multimix.data import dicom, formats
from multimix.data.preprocess import area_resize, decode, geometry, prepare
from multimix.errors import InputError

SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".img": "jsrt_raw",
            ".dcm": "dicom", ".dicom": "dicom"}
OVERLAY_SIDE = 1024  # longest side of the overlay figure
MASK_THRESHOLD = 0.5


@dataclass
class Prepared:
    """One input as the network takes it, and what is needed to map the outputs back."""

    path: Path
    name: str
    kind: str
    native: tuple[int, int]  # (height, width)
    image: np.ndarray  # (S, S) float32 in [0, 1]
    display: Image.Image  # one channel, display polarity, at most OVERLAY_SIDE
    details: dict = field(default_factory=dict)


# ------------------------------------------------------------------ inputs
def find_inputs(inputs: list[str]) -> tuple[list[tuple[Path, str]], list[dict]]:
    """(file, output name) of every file under the inputs, and the inputs that are not there."""
    found, rejected = [], []
    for given in inputs:
        root = Path(given)
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                found.append((path, "__".join(path.relative_to(root).parts)))
        elif root.is_file():
            found.append((root, root.name))
        else:
            rejected.append({"file": str(root), "reason": "not found"})
    return found, rejected


def kind_of(path: Path) -> str | None:
    """The reader of a file: by its DICOM prefix first, then by its suffix."""
    if dicom.is_dicom(path):
        return "dicom"
    return SUFFIXES.get(path.suffix.lower())


def _read(path: Path, kind: str, draft_to: tuple[int, int]) -> tuple[Image.Image, bool, dict]:
    """One-channel image at the source's precision, whether to invert, what was applied."""
    if kind == "dicom":
        values, applied = dicom.read_dicom(path)
        return Image.fromarray(dicom.to_uint16(values)), False, applied
    if kind == "tiff":
        try:
            with Image.open(path) as im:
                im.load()
                if getattr(im, "n_frames", 1) > 1:
                    raise formats.ImageDecodeError(f"a multi-page TIFF ({im.n_frames} pages); expected one radiograph")
                if im.mode in ("L", "I;16"):
                    return im.copy(), False, {}
                if im.mode in ("F", "I", "I;16B", "I;16L"):  # float or 32-bit TIFF: its own range to 16 bits
                    return Image.fromarray(dicom.to_uint16(np.asarray(im, dtype=np.float64))), False, {}
                return im.convert("L"), False, {}
        except formats.ImageDecodeError:
            raise
        except Exception as exc:
            raise formats.decode_failure(exc) from None
    img, invert = decode(path, kind, draft_to)
    return img, invert, {}


def _size(path: Path, kind: str) -> tuple[int, int]:
    """(height, width) from the header, as harmonise records it for the pipeline."""
    if kind == "jsrt_raw":
        return formats.JSRT_SIDE, formats.JSRT_SIDE
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as exc:
        raise formats.decode_failure(exc) from None


def load(path: Path, name: str, pp) -> Prepared:
    """A file -> `Prepared`, or `formats.ImageDecodeError` with the reason."""
    kind = kind_of(path)
    if kind is None:
        raise formats.ImageDecodeError(f"not an image this command reads (suffix {path.suffix or 'none'}; "
                                       "expected PNG, JPEG, TIFF, JSRT .IMG or DICOM)")
    if kind == "dicom":  # the size is known once the pixels are
        img, invert, details = _read(path, kind, (0, 0))
        h, w = img.height, img.width
        g = geometry(h, w, pp.size, pp.aspect)
    else:  # as preprocess: the geometry from the header, the decode (JPEG's DCT scaling) towards it
        h, w = _size(path, kind)
        g = geometry(h, w, pp.size, pp.aspect)
        img, invert, details = _read(path, kind, (2 * g.width, 2 * g.height))
    if min(h, w) < 16:
        raise formats.ImageDecodeError(f"an image of {w}x{h} pixels: too small for a radiograph")
    image = prepare(img, invert, g, pp)  # the pipeline's own resize and normalisation
    scale = min(1.0, OVERLAY_SIDE / max(h, w))
    shown = area_resize(img, max(1, round(w * scale)), max(1, round(h * scale)))
    view = np.asarray(shown, dtype=np.float32)
    if invert:
        view = formats.JSRT_MAX - view
    lo, hi = np.percentile(view, list(pp.clip_percentiles))
    display = Image.fromarray((np.clip((view - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8))
    return Prepared(path, name, kind, (h, w), image, display, details)


# ------------------------------------------------------------------ outputs
def to_native(plane: np.ndarray, prepared: Prepared, pp) -> np.ndarray:
    """An (S, S) map on the network's grid -> the image's native (height, width), bilinear."""
    h, w = prepared.native
    g = geometry(h, w, pp.size, pp.aspect)
    region = plane[g.top:g.top + g.height, g.left:g.left + g.width].astype(np.float32)
    return np.asarray(Image.fromarray(region, mode="F").resize((w, h), Image.BILINEAR))


def overlay(prepared: Prepared, saliency: np.ndarray | None, masks: list[np.ndarray], pp, title: str) -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = np.asarray(prepared.display, dtype=np.float32) / 255.0
    dh, dw = base.shape
    fig, ax = plt.subplots(figsize=(dw / 100, dh / 100), dpi=100)
    ax.imshow(base, cmap="gray", vmin=0, vmax=1)
    if saliency is not None:
        heat = np.asarray(Image.fromarray(to_native(saliency, prepared, pp)).resize((dw, dh), Image.BILINEAR))
        ax.imshow(np.ma.masked_less(heat, 0.2), cmap="inferno", alpha=0.45, vmin=0, vmax=1)
    for mask, colour in zip(masks, ("lime", "cyan", "yellow", "magenta", "orange", "red", "white", "blue",
                                    "pink", "brown")):
        small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((dw, dh), Image.NEAREST)) > 127
        if small.any():
            ax.contour(small, levels=[0.5], colors=colour, linewidths=1.0)
    ax.set_title(title, fontsize=max(6, dw // 90))
    ax.axis("off")
    fig.tight_layout(pad=0.2)
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    plt.close(fig)
    return image


def write_outputs(prepared: Prepared, outputs: dict, index: int, out: Path, pp) -> dict:
    """The mask PNG(s) and the overlay of one image; returns its row of predictions.csv."""
    row = {"file": str(prepared.path), "name": prepared.name, "kind": prepared.kind,
           "height": prepared.native[0], "width": prepared.native[1]}
    title = prepared.name
    if "probabilities" in outputs:
        probabilities = outputs["probabilities"][index]
        names = outputs["class_names"]
        row |= {f"p_{n}": float(p) for n, p in zip(names, probabilities)}
        if len(names) and np.isclose(probabilities.sum(), 1.0, atol=1e-3):  # one class per image
            row["predicted"] = names[int(probabilities.argmax())]
            title += f" — {row['predicted']} ({probabilities.max():.2f})"
        else:  # multi-label (seed 004): each pathology on its own
            row["predicted"] = ";".join(n for n, p in zip(names, probabilities) if p >= 0.5)
    masks = []
    if "masks" in outputs:
        names = outputs["mask_names"]
        for k, structure in enumerate(names):
            native = to_native(outputs["masks"][index, k], prepared, pp) >= MASK_THRESHOLD
            suffix = "_mask.png" if len(names) == 1 else f"_mask_{structure.replace(' ', '_')}.png"
            Image.fromarray(native.astype(np.uint8) * 255).save(out / f"{prepared.name}{suffix}")
            row[f"mask_share_{structure.replace(' ', '_')}"] = float(native.mean())
            masks.append(native)
    saliency = outputs["saliency"][index] if "saliency" in outputs else None
    overlay(prepared, saliency, masks, pp, title).save(out / f"{prepared.name}_overlay.png")
    row["details"] = json.dumps(prepared.details, sort_keys=True) if prepared.details else ""
    return row


# ------------------------------------------------------------------ the command
def predict(bundle, inputs: list[str], out: Path, log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict every file under `inputs` with `bundle` (a `multimix.serving.Bundle`); writes the
    outputs under `out` and returns (predictions, rejected)."""
    pp = bundle.cfg.preprocess
    out.mkdir(parents=True, exist_ok=True)
    files, rejected = find_inputs(inputs)
    for entry in rejected:
        log(f"{entry['file']}: rejected — {entry['reason']}")
    rows, names = [], set()
    for path, name in files:
        stem = name.rsplit(".", 1)[0] if "." in name else name
        while stem in names:  # two inputs of one name: keep both
            stem += "_"
        try:
            prepared = load(path, stem, pp)
            outputs = bundle.predict(prepared.image[None])
            rows.append(write_outputs(prepared, outputs, 0, out, pp))
            names.add(stem)
        except (formats.ImageDecodeError, InputError, OSError) as exc:
            rejected.append({"file": str(path), "reason": str(exc)})
            log(f"{path}: rejected — {exc}")
    predictions = pd.DataFrame(rows)
    rejects = pd.DataFrame(rejected, columns=["file", "reason"])
    predictions.to_csv(out / "predictions.csv", index=False)
    (out / "predictions.json").write_text(json.dumps({"run": bundle.spec.name, "method": bundle.plugin.name,
                                                      "size": pp.size, "images": rows, "rejected": rejected},
                                                     indent=1) + "\n")
    rejects.to_csv(out / "rejected.csv", index=False)
    return predictions, rejects
