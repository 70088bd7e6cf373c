"""DICOM radiographs as hospitals store them, decoded to display polarity (air dark, bone bright).

A hospital's chest X-ray comes as DICOM, not as the public datasets' PNG/JPEG: the stored
values must pass through the standard's pixel pipeline before they are an image
(PS3.3 C.11 and PS3.4 N.2):
  1. stored values: `BitsStored` of each `BitsAllocated`-bit word (12 of 16 typically; pydicom
     keeps only the stored bits, sign-extending when `PixelRepresentation` is 1);
  2. the Modality LUT: `RescaleSlope` x value + `RescaleIntercept` (or a Modality LUT sequence);
  3. the VOI LUT: a VOI LUT sequence where present, else the first `WindowCenter` /
     `WindowWidth` (pydicom's `apply_voi_lut`, which prefers the sequence);
  4. `PhotometricInterpretation` MONOCHROME1 (larger = darker, as film) is inverted; MONOCHROME2
     is already in display polarity.
The result is a float array that the pipeline's own resize and per-image normalisation take
from there (`multimix.data.preprocess.prepare`), as they take a PNG's pixels.

Refused, each with a one-line reason: a file that is not DICOM, a DICOM without pixel data
(a structured report, a presentation state), a multi-frame object, a colour image, a lateral
view (`ViewPosition` LL / RL / LATERAL: the models learned frontal radiographs), and pixel data
in a compressed transfer syntax no installed decoder reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multimix.data.formats import ImageDecodeError

DICOM_MAGIC = b"DICM"  # at byte 128, after the preamble
LATERAL_VIEWS = {"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"}


def is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file (the "DICM" prefix), whatever its name (hospital exports often have none)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == DICOM_MAGIC


def read_dicom(path: Path) -> tuple[np.ndarray, dict]:
    """(pixels in display polarity as float64 (H, W), what was applied) or ImageDecodeError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise ImageDecodeError("not a DICOM file (no DICM prefix and no readable header)") from None
    except Exception as exc:
        raise ImageDecodeError(f"unreadable DICOM header ({_reason(exc)})") from None
    try:
        return _pixels(ds)
    except ImageDecodeError:
        raise
    except Exception as exc:  # a damaged header: values of the wrong type, lengths past the end
        raise ImageDecodeError(f"invalid DICOM attributes ({exc.__class__.__name__}: {_reason(exc)})") from None


def _pixels(ds) -> tuple[np.ndarray, dict]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds:
        kind = str(getattr(ds, "SOPClassUID", "unknown")) if "SOPClassUID" in ds else "unknown"
        name = getattr(getattr(ds, "SOPClassUID", None), "name", kind)
        raise ImageDecodeError(f"a DICOM without pixel data (SOP class {name}): not an image")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageDecodeError(f"a multi-frame DICOM ({frames} frames); expected one radiograph")
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageDecodeError(f"photometric interpretation {photometric or 'missing'}; expected a greyscale "
                               "radiograph (MONOCHROME1 or MONOCHROME2)")
    view = str(getattr(ds, "ViewPosition", "")).strip().upper()
    if view in LATERAL_VIEWS:
        raise ImageDecodeError(f"a lateral view (ViewPosition {view}); expected a frontal (PA or AP) radiograph")
    try:
        stored = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        named = getattr(syntax, "name", str(syntax)) if syntax is not None else "unknown transfer syntax"
        raise ImageDecodeError(f"pixel data not decodable ({named}: {_reason(exc)})") from None
    if stored.ndim != 2:
        raise ImageDecodeError(f"pixel data of shape {stored.shape}; expected one 2-D greyscale frame")
    if min(stored.shape) < 16:
        raise ImageDecodeError(f"an image of {stored.shape[1]}x{stored.shape[0]} pixels: too small for a radiograph")
    try:
        values = apply_modality_lut(stored, ds).astype(np.float64)
        windowed = apply_voi_lut(values, ds, index=0) if _has_voi(ds) else values
    except Exception as exc:
        raise ImageDecodeError(f"invalid rescale or VOI LUT / window attributes ({_reason(exc)})") from None
    windowed = np.asarray(windowed, dtype=np.float64)
    if not np.isfinite(windowed).all():
        raise ImageDecodeError("pixel values not finite after rescale and window")
    if photometric == "MONOCHROME1":
        windowed = windowed.max() + windowed.min() - windowed  # larger = darker -> display polarity
    applied = {"photometric": photometric, "bits_stored": int(getattr(ds, "BitsStored", 0) or 0),
               "rescale": [float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)],
               "voi": "lut" if "VOILUTSequence" in ds else ("window" if "WindowCenter" in ds else "none"),
               "view": view or "unknown"}
    return windowed, applied


def _has_voi(ds) -> bool:
    return "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return text[:160]


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Display-polarity values -> the full 16-bit range (a linear map: the pipeline's percentile
    normalisation after the resize makes the scale irrelevant; 16 bits keep 12-16-bit detail)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint16)
    return np.round((values - lo) / (hi - lo) * 65535.0).astype(np.uint16)
