"""Native decoders on hand-made files, including broken ones."""

from __future__ import annotations

import numpy as np
import pytest

from multimix.data import formats


def test_jsrt_raw_round_trip(tmp_path):
    raw = (np.arange(2048 * 2048) % 4096).astype(np.uint16).reshape(2048, 2048)
    path = tmp_path / "JPCLN001.IMG"
    formats.write_jsrt_raw(path, raw)
    assert path.read_bytes()[:4] == bytes([0, 0, 0, 1])  # big-endian words
    assert np.array_equal(formats.read_jsrt_raw(path), raw)


def test_jsrt_raw_wrong_size_is_refused(tmp_path):
    path = tmp_path / "JPCLN001.IMG"
    path.write_bytes(b"\0" * 1000)
    with pytest.raises(formats.ImageDecodeError, match="wrong size: 1000 bytes, expected 8388608"):
        formats.read_jsrt_raw(path)


def test_jsrt_raw_little_endian_is_refused(tmp_path):
    path = tmp_path / "JPCLN001.IMG"
    path.write_bytes(np.full((2048, 2048), 100, dtype="<u2").tobytes())  # 100 LE reads as 25600 BE
    with pytest.raises(formats.ImageDecodeError, match="not 12-bit"):
        formats.read_jsrt_raw(path)


def test_png_bit_depth_and_truncation(tmp_path):
    path = tmp_path / "a.png"
    formats.write_png(path, np.full((40, 30), 3000, np.uint16))
    pixels, info = formats.read_image(path)
    assert (info.height, info.width, info.bit_depth, info.channels) == (40, 30, 16, 1)
    assert pixels.dtype == np.uint16 and pixels.max() == 3000
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(formats.ImageDecodeError, match="unreadable or truncated"):
        formats.read_image(path)


def test_rgba_png_reports_four_channels(tmp_path):
    path = tmp_path / "rgba.png"
    formats.write_png(path, np.zeros((8, 8, 4), np.uint8))
    assert formats.read_image(path)[1].channels == 4


def test_masks_binary_from_gif_and_png(tmp_path):
    mask = np.zeros((16, 16), bool)
    mask[4:9, 3:12] = True
    formats.write_mask_gif(tmp_path / "m.gif", mask)
    formats.write_mask_png(tmp_path / "m.png", mask)
    assert np.array_equal(formats.read_mask(tmp_path / "m.gif"), mask)
    assert np.array_equal(formats.read_mask(tmp_path / "m.png"), mask)
