"""Native file formats of the four sources: decode and (for the synthetic
generator) encode, byte-exact to what the official archives contain.

- JSRT `.IMG`: headerless 2048x2048, 12-bit values in 16-bit big-endian words,
  larger value = darker (the inverse of the usual display polarity).
- SCR lung masks: 1024x1024 GIF, 0 background / 255 lung.
- Montgomery: PNG, 8- or 16-bit greyscale (check per file); masks are PNG 0/255.
- Kermany ("CheX"): 8-bit JPEG, mostly greyscale, some 3-channel.
- NIH ChestX-ray14: 1024x1024 8-bit PNG, a few RGBA.

Every decoder raises `ImageDecodeError` with a short reason; callers turn it
into a rejection row that names the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

JSRT_SIDE = 2048
JSRT_BYTES = JSRT_SIDE * JSRT_SIDE * 2
JSRT_BITS = 12
JSRT_MAX = (1 << JSRT_BITS) - 1

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageDecodeError(Exception):
    """The file exists but cannot be used as an image of the expected format."""


@dataclass(frozen=True)
class ImageInfo:
    height: int
    width: int
    bit_depth: int
    channels: int


# ---------------------------------------------------------------- JSRT raw
def read_jsrt_raw(path: Path) -> np.ndarray:
    """Decode a JSRT `.IMG` to uint16 (2048, 2048) in the file's own polarity."""
    size = path.stat().st_size
    if size != JSRT_BYTES:
        raise ImageDecodeError(
            f"raw file of the wrong size: {size} bytes, expected {JSRT_BYTES} "
            f"({JSRT_SIDE}x{JSRT_SIDE} 16-bit big-endian)"
        )
    data = np.fromfile(path, dtype=">u2").reshape(JSRT_SIDE, JSRT_SIDE)
    if int(data.max()) > JSRT_MAX:
        raise ImageDecodeError(f"values above {JSRT_MAX}: not 12-bit JSRT data (wrong byte order?)")
    return data.astype(np.uint16)


def write_jsrt_raw(path: Path, raw: np.ndarray) -> None:
    """Write uint16 values (already in JSRT polarity: larger = darker)."""
    if raw.shape != (JSRT_SIDE, JSRT_SIDE):
        raise ValueError(f"JSRT images are {JSRT_SIDE}x{JSRT_SIDE}, got {raw.shape}")
    path.write_bytes(np.clip(raw, 0, JSRT_MAX).astype(">u2").tobytes())


# ---------------------------------------------------------------- PNG / JPEG / GIF
def png_bit_depth(path: Path) -> int:
    """Bit depth from the PNG IHDR chunk (PIL's mode hides 1/2/4/16)."""
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ImageDecodeError("not a PNG file (bad signature or IHDR)")
    return head[24]


def _channels(mode: str) -> int:
    return {"L": 1, "P": 1, "I;16": 1, "I;16B": 1, "I": 1, "1": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}.get(mode, 0)


def decode_failure(exc: Exception) -> ImageDecodeError:
    reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return ImageDecodeError(f"unreadable or truncated image ({reason})")


def read_image(path: Path) -> tuple[np.ndarray, ImageInfo]:
    """Fully decode a PNG/JPEG/GIF (catches truncation) and return pixels + info.

    Pixels are returned as stored: uint8 or uint16, 2-D for greyscale,
    (H, W, C) for colour. Conversion to one channel happens in preprocessing.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode, fmt = im.mode, im.format
            arr = np.asarray(im)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError…
        raise decode_failure(exc) from None
    bits = png_bit_depth(path) if fmt == "PNG" else 8
    channels = _channels(mode)
    if channels == 0:
        raise ImageDecodeError(f"unsupported pixel mode {mode!r}")
    if mode == "I":  # some 16-bit PNGs open as 32-bit 'I'; the values still fit 16 bits
        arr = arr.astype(np.uint16)
    h, w = arr.shape[:2]
    return arr, ImageInfo(height=h, width=w, bit_depth=bits, channels=channels)


def read_mask(path: Path) -> np.ndarray:
    """Decode a binary mask image (GIF or PNG; 0/255 or 0/1) to bool."""
    try:
        with Image.open(path) as im:
            # convert("L") maps GIF palette indices to their grey levels.
            arr = np.asarray(im.convert("L"))
    except Exception as exc:
        raise decode_failure(exc) from None
    peak = int(arr.max())
    return arr > peak // 2 if peak > 0 else np.zeros(arr.shape, dtype=bool)


def write_mask_gif(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path, format="GIF")


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path, format="PNG", compress_level=6)


def write_png(path: Path, pixels: np.ndarray, compress_level: int = 6) -> None:
    """Greyscale 8/16-bit or RGBA PNG, chosen by dtype and shape."""
    # Pillow infers the mode from dtype and shape: uint16 -> I;16, (H, W, 4) -> RGBA.
    im = Image.fromarray(pixels if pixels.dtype == np.uint16 else pixels.astype(np.uint8))
    im.save(path, format="PNG", compress_level=compress_level)


def write_palette_png(path: Path, pixels: np.ndarray) -> None:
    """An 8-bit greyscale image stored as a palette PNG (mode P with a grey ramp), as some archives do."""
    im = Image.frombuffer("P", (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels, np.uint8).tobytes(),
                          "raw", "P", 0, 1)
    im.putpalette([v for level in range(256) for v in (level, level, level)])
    im.save(path, format="PNG", compress_level=1)


def write_jpeg(path: Path, pixels: np.ndarray, quality: int = 90) -> None:
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG", quality=quality)


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) from the IHDR chunk without decoding pixels."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE:
        raise ImageDecodeError("not a PNG file")
    w, h = struct.unpack(">II", head[16:24])
    return h, w
