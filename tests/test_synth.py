"""The synthetic default writes every source in its official format and layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from multimix.config import load_config
from multimix.data import formats
from multimix.data.acquire import fingerprint, synthesise
from multimix.errors import InputError

from conftest import write_params


def test_jsrt_layout_and_raw_format(tiny_raw):
    images = sorted((tiny_raw / "jsrt" / "All247images").iterdir())
    assert [p.name for p in images] == ["JPCLN001.IMG", "JPCLN002.IMG", "JPCNN001.IMG", "JPCNN002.IMG"]
    for path in images:
        assert path.stat().st_size == 2048 * 2048 * 2
        raw = formats.read_jsrt_raw(path)
        assert raw.max() <= 4095
        # Big-endian: reading the same bytes little-endian gives values far above 12 bits.
        assert np.fromfile(path, dtype="<u2").max() > 4095
    masks = sorted(p.relative_to(tiny_raw / "jsrt").as_posix() for p in (tiny_raw / "jsrt").rglob("*.gif"))
    assert "scr/fold1/masks/left lung/JPCLN001.gif" in masks
    assert "scr/fold2/masks/right lung/JPCNN002.gif" in masks
    assert len(masks) == 8
    with Image.open(tiny_raw / "jsrt/scr/fold1/masks/left lung/JPCLN001.gif") as im:
        assert im.format == "GIF" and im.size == (1024, 1024)
        assert set(np.unique(np.asarray(im.convert("L")))) == {0, 255}


def test_jsrt_polarity_larger_is_darker(tiny_raw):
    raw = formats.read_jsrt_raw(tiny_raw / "jsrt/All247images/JPCLN001.IMG").astype(float)
    left = formats.read_mask(tiny_raw / "jsrt/scr/fold1/masks/left lung/JPCLN001.gif")
    right = formats.read_mask(tiny_raw / "jsrt/scr/fold1/masks/right lung/JPCLN001.gif")
    lungs = np.kron(left | right, np.ones((2, 2), bool))  # masks are at half resolution
    # Lungs hold air: dark on display, hence *larger* raw values than the body around them.
    assert raw[lungs].mean() > raw[~lungs].mean() + 400


def test_chex_layout(tiny_raw):
    root = tiny_raw / "chex" / "chest_xray"
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]  # Mendeley's layout (the default)
    files = sorted(root.rglob("*.jpeg"))
    assert len(files) == 8
    pneumonia = [p for p in files if p.parent.name == "PNEUMONIA"]
    assert all(("bacteria" in p.name) or ("virus" in p.name) for p in pneumonia)
    for path in files:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode in ("L", "RGB")
            assert 1000 <= im.size[0] <= 2100


def test_mcu_layout_sizes_and_bit_depth(tiny_raw):
    root = tiny_raw / "mcu" / "MontgomerySet"
    images = sorted((root / "CXR_png").iterdir())
    assert [p.name[-6:] for p in images] == ["_0.png", "_1.png"] or len(images) == 2
    for path in images:
        h, w = formats.png_size(path)
        assert (h, w) in {(4892, 4020), (4020, 4892)}
        assert formats.png_bit_depth(path) in (8, 16)
        for side in ("leftMask", "rightMask"):
            assert formats.png_size(root / "ManualMask" / side / path.name) == (h, w)
        assert (root / "ClinicalReadings" / path.with_suffix(".txt").name).exists()


def test_nih_layout_and_label_file(tiny_raw):
    root = tiny_raw / "nihx"
    header = (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()[0]
    assert header.startswith("Image Index,Finding Labels,Follow-up #,Patient ID")
    images = sorted((root / "images").iterdir())
    assert len(images) == 13
    for path in images:
        assert formats.png_size(path) == (1024, 1024)
        assert formats.png_bit_depth(path) == 8


def test_synth_is_deterministic_for_a_seed(tmp_path, tiny_raw):
    cfg = load_config(write_params(tmp_path))
    synthesise(cfg, ["jsrt", "nihx"], show_progress=False)
    for dataset in ("jsrt", "nihx"):
        assert fingerprint(tmp_path / "raw" / dataset, True) == fingerprint(tiny_raw / dataset, True)


def test_synth_changes_with_the_seed(tmp_path, tiny_raw):
    cfg = load_config(write_params(tmp_path, synth={"seed": 1}))
    synthesise(cfg, ["nihx"], show_progress=False)
    assert fingerprint(tmp_path / "raw" / "nihx", True) != fingerprint(tiny_raw / "nihx", True)


def test_synth_refuses_to_overwrite_real_files(tmp_path):
    (tmp_path / "raw" / "jsrt").mkdir(parents=True)
    (tmp_path / "raw" / "jsrt" / "JPCLN001.IMG").write_bytes(b"real data")
    cfg = load_config(write_params(tmp_path))
    with pytest.raises(InputError, match="did not write"):
        synthesise(cfg, ["jsrt"], show_progress=False)
    assert (tmp_path / "raw" / "jsrt" / "JPCLN001.IMG").read_bytes() == b"real data"


@pytest.mark.parametrize("chex_layout", ["mendeley", "with_val"])
def test_chex_layouts(tmp_path, chex_layout):
    """Mendeley's archive has train/ and test/ (val images inside train/, with the
    redistributed copy's names when there are Table 1's 8 + 8); the copy has val/."""
    from multimix.data import layout

    counts = {"chex": {"train_normal": 2, "train_pneumonia": 2, "val_normal": 8, "val_pneumonia": 8,
                       "test_normal": 1, "test_pneumonia": 1}}
    cfg = load_config(write_params(tmp_path, synth={"counts": counts, "chex_layout": chex_layout}))
    synthesise(cfg, ["chex"], show_progress=False)
    root = tmp_path / "raw" / "chex" / layout.CHEX_ROOT
    folders = sorted(p.name for p in root.iterdir())
    names = {cls: sorted(p.stem for p in (root / "train" / cls).glob("*.jpeg")) for cls in layout.CHEX_CLASSES}
    if chex_layout == "mendeley":
        assert folders == ["test", "train"]
        assert len(names["NORMAL"]) == len(names["PNEUMONIA"]) == 10
        for cls, known in layout.KERMANY_VAL.items():
            assert set(known) <= set(names[cls])
    else:
        assert folders == ["test", "train", "val"]
        assert len(list((root / "val").rglob("*.jpeg"))) == 16 and len(names["NORMAL"]) == 2


def test_shenzhen_layout_sizes_masks_and_readings(tiny_raw):
    root = tiny_raw / "shenzhen"
    images = sorted((root / "ChinaSet_AllFiles" / "CXR_png").iterdir())
    assert [p.name[:7] for p in images] == ["CHNCXR_"] * 3
    assert sorted(p.name[-6:] for p in images) == ["_0.png", "_1.png", "_1.png"]  # 1 normal, 2 TB
    masks = sorted((root / "mask").iterdir())
    assert len(masks) == 2  # the mask release covers all but the `unmasked` image
    for path in images:
        h, w = formats.png_size(path)
        assert 2400 <= h <= 3000 and 2500 <= w <= 3000 and formats.png_bit_depth(path) == 8
        mask = root / "mask" / f"{path.stem}_mask.png"
        if mask.exists():
            assert formats.png_size(mask) == (h, w)
            assert set(np.unique(np.asarray(Image.open(mask)))) == {0, 255}
        assert (root / "ChinaSet_AllFiles" / "ClinicalReadings" / f"{path.stem}.txt").exists()


def test_shenzhen_counts_are_checked():
    from multimix.data import synth

    with pytest.raises(ValueError, match="shenzhen.unmasked"):
        synth.resolve_counts("small", {"shenzhen": {"normal": 1, "tb": 1, "unmasked": 3}})
    assert synth.image_count("shenzhen", {"normal": 336, "tb": 326, "unmasked": 96}) == 662


def test_jsrt_nodules_follow_the_file_names_and_are_listed_in_clndat(tmp_path, tiny_raw):
    root = tiny_raw / "jsrt"
    clndat = (root / "CLNDAT_EN.txt").read_text().splitlines()
    cnndat = (root / "CNNDAT_EN.TXT").read_text().splitlines()
    assert [line.split("\t")[0] for line in clndat] == ["JPCLN001.IMG", "JPCLN002.IMG"]
    assert [line.split("\t")[0] for line in cnndat] == ["JPCNN001.IMG", "JPCNN002.IMG"]
    name, subtlety, size_mm, age, sex, x, y, pathology, position = clndat[0].split("\t")
    assert 1 <= int(subtlety) <= 5 and 5 <= int(size_mm) <= 60 and 0 < int(x) < 2048 and 0 < int(y) < 2048
    # the listed position is inside the nodule: brighter (smaller raw value) than its surroundings
    raw = formats.read_jsrt_raw(root / "All247images" / name).astype(float)
    r, c, half = int(y), int(x), max(2, int(int(size_mm) / 0.175 / 4))
    core = raw[r - half:r + half, c - half:c + half].mean()
    ring = raw[r - 8 * half:r + 8 * half, c - 8 * half:c + 8 * half].mean()
    assert core < ring
    # without findings: no clinical files, and the non-nodule images are the same bytes
    cfg = load_config(write_params(tmp_path, synth={"findings": False}))
    synthesise(cfg, ["jsrt"], show_progress=False)
    plain = tmp_path / "raw" / "jsrt"
    assert not (plain / "CLNDAT_EN.txt").exists()
    for stem in ("JPCNN001", "JPCNN002"):
        assert (plain / "All247images" / f"{stem}.IMG").read_bytes() == (root / "All247images" / f"{stem}.IMG").read_bytes()
    assert (plain / "All247images" / "JPCLN001.IMG").read_bytes() != (root / "All247images" / "JPCLN001.IMG").read_bytes()


