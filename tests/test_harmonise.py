"""harmonise: every input is used or rejected with its reason; good files kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multimix.config import load_config
from multimix.data import formats
from multimix.data.harmonise import MANIFEST_COLUMNS, harmonise, write_outputs
from multimix.errors import InputError

from conftest import TINY_COUNTS, write_params


def run(project, **params):
    cfg = load_config(write_params(project, **params)) if params else load_config(project / "params.yaml")
    return harmonise(cfg)


def reasons_for(rejected: pd.DataFrame, name: str) -> list[str]:
    return rejected.loc[rejected["path"].str.contains(name, regex=False), "reason"].tolist()


def assert_counting_rule(summaries):
    for s in summaries:
        assert s.files_used + s.rejected_files + s.skipped == s.files_found, s


def test_clean_synthetic_tree(project):
    manifest, rejected, summaries = run(project)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    counts = manifest["dataset"].value_counts().to_dict()
    chex_total = sum(TINY_COUNTS["chex"].values())
    # NIHX: all 3 Pneumonia rows + round(3 * 2754 / 1431) = 6 "No Finding" rows.
    # Shenzhen: 3 images, one of them outside the mask release
    assert counts == {"jsrt": 4, "chex": chex_total, "mcu": 2, "nihx": 9, "shenzhen": 2}
    assert set(rejected["kind"]) == {"excluded"}  # NIH images outside NIHX, the unmasked Shenzhen image
    assert len(rejected) == 13 - 9 + 1
    assert manifest["id"].is_unique
    jsrt = manifest[manifest.dataset == "jsrt"].iloc[0]
    assert (jsrt.height, jsrt.width, jsrt.bit_depth, jsrt.format) == (2048, 2048, 12, "jsrt_raw")
    assert len(jsrt.mask_paths.split(";")) == 2
    # class labels of the segmentation sources come from their file names
    for row in manifest[manifest.dataset.isin(["jsrt", "mcu", "shenzhen"])].itertuples():
        name = Path(row.image_path).stem
        assert int(row.label) == (name.startswith("JPCLN") if row.dataset == "jsrt" else name.endswith("_1")), name
    assert set(manifest.loc[manifest.dataset == "jsrt", "label"].astype(int)) == {0, 1}
    chex = manifest[manifest.dataset == "chex"]
    assert set(chex["official_split"]) == {"train", "test"}  # Mendeley's layout: no val folder
    assert set(manifest.loc[manifest.dataset == "jsrt", "official_split"]) == {"fold1", "fold2"}  # SCR folds
    assert set(chex["label"]) == {0, 1}
    assert set(manifest[manifest.dataset == "nihx"]["label"]) == {0, 1}
    assert set(manifest[manifest.dataset == "mcu"]["bit_depth"]) <= {8, 16}
    assert_counting_rule(summaries)


def test_outputs_written(project):
    manifest, rejected, summaries = run(project)
    write_outputs(project / "interim", manifest, rejected, summaries)
    back = pd.read_csv(project / "interim" / "manifest.csv")
    assert len(back) == len(manifest)
    assert (project / "interim" / "rejected.csv").exists()
    assert (project / "interim" / "harmonise_summary.json").exists()


def test_truncated_images_are_rejected(project):
    victim = sorted((project / "raw/chex/chest_xray/train/NORMAL").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    manifest, rejected, summaries = run(project)
    assert reasons_for(rejected, victim.name)[0].startswith("unreadable or truncated image")
    assert not manifest["image_path"].str.contains(victim.name, regex=False).any()
    assert (manifest.dataset == "chex").sum() == sum(TINY_COUNTS["chex"].values()) - 1
    assert_counting_rule(summaries)


def test_raw_file_of_wrong_size(project):
    victim = project / "raw/jsrt/All247images/JPCLN002.IMG"
    victim.write_bytes(victim.read_bytes()[:-2])
    manifest, rejected, summaries = run(project)
    assert "raw file of the wrong size: 8388606 bytes, expected 8388608" in reasons_for(rejected, "JPCLN002.IMG")[0]
    # its two masks are listed too, not silently dropped
    assert len(reasons_for(rejected, "JPCLN002.gif")) == 2
    assert (manifest.dataset == "jsrt").sum() == 3
    assert_counting_rule(summaries)


def test_missing_mask(project):
    (project / "raw/jsrt/scr/fold1/masks/right lung/JPCLN001.gif").unlink()
    manifest, rejected, summaries = run(project)
    assert any("missing mask(s): right lung" in r for r in reasons_for(rejected, "JPCLN001.IMG"))
    assert any("its other mask is missing" in r for r in reasons_for(rejected, "left lung/JPCLN001.gif"))
    assert "jsrt/JPCLN001" not in set(manifest["id"])
    assert (manifest.dataset == "jsrt").sum() == 3
    assert_counting_rule(summaries)


def test_mask_of_another_size(project):
    mask_dir = project / "raw/mcu/MontgomerySet/ManualMask/leftMask"
    victim = sorted(mask_dir.iterdir())[0]
    formats.write_mask_png(victim, np.ones((100, 80), bool))
    scr = project / "raw/jsrt/scr/fold2/masks/left lung/JPCNN002.gif"
    formats.write_mask_gif(scr, np.ones((512, 512), bool))
    manifest, rejected, summaries = run(project)
    image = victim.parents[2] / "CXR_png" / victim.name
    assert any("is 80x100, expected" in r for r in reasons_for(rejected, str(image)))
    assert any("is 512x512, expected 1024x1024" in r for r in rejected["reason"])
    assert (manifest.dataset == "mcu").sum() == 1 and (manifest.dataset == "jsrt").sum() == 3
    assert_counting_rule(summaries)


def test_unknown_label_folder_and_stray_files(project):
    covid = project / "raw/chex/chest_xray/train/COVID"
    covid.mkdir()
    src = sorted((project / "raw/chex/chest_xray/train/NORMAL").iterdir())[0]
    shutil.copy(src, covid / "x.jpeg")
    (project / "raw/chex/chest_xray/train/NORMAL/notes.bin").write_bytes(b"?")
    (project / "raw/chex/chest_xray/.DS_Store").write_bytes(b"")
    manifest, rejected, summaries = run(project)
    assert reasons_for(rejected, "COVID/x.jpeg") == ["unknown label folder 'COVID' (expected NORMAL or PNEUMONIA)"]
    assert reasons_for(rejected, "notes.bin")[0].startswith("unrecognised file")
    assert (manifest.dataset == "chex").sum() == sum(TINY_COUNTS["chex"].values())
    chex = next(s for s in summaries if s.dataset == "chex")
    # evaluation-only: the lesion masks and the truth table (phantom_lesions/) are skipped, and counted
    lesion_masks = list((project / "raw/chex/phantom_lesions").rglob("*.png"))
    assert len(lesion_masks) == sum(n for key, n in TINY_COUNTS["chex"].items() if key.endswith("pneumonia"))
    assert (project / "raw/chex/phantom_lesions/truth.csv").is_file()
    assert chex.skipped == 1 + len(lesion_masks) + 1
    assert_counting_rule(summaries)


def test_label_row_whose_image_is_absent(project):
    manifest, _, _ = run(project)
    chosen = Path(manifest[manifest.dataset == "nihx"].iloc[0].image_path)
    chosen.unlink()
    manifest2, rejected, summaries = run(project)
    name = chosen.name
    assert any(f"label-file row whose image {name} is absent" in r for r in rejected["reason"])
    assert (manifest2.dataset == "nihx").sum() == 8
    nih = next(s for s in summaries if s.dataset == "nihx")
    assert nih.rejected_rows == 1
    assert_counting_rule(summaries)


def test_duplicate_ids(project):
    dup_dir = project / "raw/jsrt/extra_copy"
    dup_dir.mkdir()
    shutil.copy(project / "raw/jsrt/All247images/JPCLN001.IMG", dup_dir / "JPCLN001.IMG")
    nih_images = sorted((project / "raw/nihx/images").iterdir())
    other = project / "raw/nihx/images_002/images"
    other.mkdir(parents=True)
    shutil.copy(nih_images[0], other / nih_images[0].name)
    manifest, rejected, summaries = run(project)
    assert any(r.startswith("duplicate id 'JPCLN001'") for r in reasons_for(rejected, "extra_copy/JPCLN001.IMG"))
    assert any(r.startswith("duplicate id") for r in reasons_for(rejected, f"images_002/images/{nih_images[0].name}"))
    assert (manifest.dataset == "jsrt").sum() == 4
    assert_counting_rule(summaries)


def test_missing_source_fails_with_one_line(project):
    shutil.rmtree(project / "raw/mcu")
    with pytest.raises(InputError) as info:
        run(project)
    message = str(info.value)
    assert "\n" not in message
    assert "mcu" in message and "MontgomerySet/CXR_png/MCUCXR_XXXX_Y.png" in message


def test_empty_source_fails(project):
    shutil.rmtree(project / "raw/chex")
    (project / "raw/chex").mkdir()
    with pytest.raises(InputError, match=r"chex: .* is missing or empty; expected .*chest_xray"):
        run(project)


def test_sources_are_a_parameter(project):
    shutil.rmtree(project / "raw/mcu")
    manifest, _, summaries = run(project, data={"datasets": ["jsrt", "nihx"]})
    assert set(manifest["dataset"]) == {"jsrt", "nihx"}
    assert [s.dataset for s in summaries] == ["jsrt", "nihx"]


def test_label_rows_are_named_by_their_line_in_the_file(project):
    labels = project / "raw/nihx/Data_Entry_2017_v2020.csv"
    lines = labels.read_text().splitlines()
    lines.insert(1, lines[1])  # a duplicated first row shifts every later line by one
    labels.write_text("\n".join(lines) + "\n")
    manifest, _, _ = run(project)
    victim = Path(manifest[manifest.dataset == "nihx"].iloc[-1].image_path)
    victim.unlink()
    _, rejected, _ = run(project)
    absent = rejected[rejected["reason"].str.contains(f"image {victim.name} is absent", regex=False)].iloc[0]
    line = int(absent["path"].rsplit("row ", 1)[1])
    assert lines[line - 1].startswith(victim.name)
    assert any("duplicate id" in r for r in rejected["reason"])


# ------------------------------------------------------------------ Shenzhen
SHENZHEN = "raw/shenzhen/ChinaSet_AllFiles/CXR_png"
SHENZHEN_MASKS = "raw/shenzhen/mask"


def shenzhen_masked(project) -> list[Path]:
    """The Shenzhen phantoms that the mask release covers."""
    return sorted(p for p in (project / SHENZHEN).glob("*.png")
                  if (project / SHENZHEN_MASKS / f"{p.stem}_mask.png").exists())


def test_shenzhen_native_layout_one_mask_per_image_and_tb_labels(project):
    manifest, rejected, summaries = run(project)
    rows = manifest[manifest.dataset == "shenzhen"]
    assert len(rows) == 2 and all(len(m.split(";")) == 1 for m in rows.mask_paths)
    assert all(m.endswith("_mask.png") for m in rows.mask_paths)
    unmasked = rejected[rejected.path.str.contains("CHNCXR")]
    assert len(unmasked) == 1 and unmasked.kind.iloc[0] == "excluded"
    assert "no lung mask in the mask release" in unmasked.reason.iloc[0]
    # clinical readings are known non-inputs
    shenzhen = next(s for s in summaries if s.dataset == "shenzhen")
    assert shenzhen.skipped == 3 and shenzhen.excluded == 1
    assert_counting_rule(summaries)


def test_shenzhen_palette_and_rgb_pngs_are_read_as_grey(project):
    from PIL import Image

    first, second = shenzhen_masked(project)
    grey = np.asarray(Image.open(first).convert("L"))
    formats.write_palette_png(first, grey)
    formats.write_png(second, np.repeat(np.asarray(Image.open(second).convert("L"))[..., None], 3, axis=2))
    assert Image.open(first).mode == "P" and Image.open(second).mode == "RGB"
    manifest, rejected, summaries = run(project)
    rows = manifest[manifest.dataset == "shenzhen"].set_index("id")
    assert len(rows) == 2 and rows.loc[f"shenzhen/{second.stem}", "channels"] == 3
    from multimix.data.preprocess import decode as _decode

    decoded, inverted = _decode(first, "png", (256, 256))
    assert decoded.mode == "L" and not inverted
    assert np.array_equal(np.asarray(decoded), grey)  # the grey ramp palette maps back exactly
    assert_counting_rule(summaries)


def test_shenzhen_missing_mask_truncated_image_and_stray_mask(project):
    first, second = shenzhen_masked(project)
    (project / SHENZHEN_MASKS / f"{first.stem}_mask.png").unlink()
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 3])
    formats.write_mask_png(project / SHENZHEN_MASKS / "CHNCXR_0999_1_mask.png", np.ones((8, 8), bool))
    manifest, rejected, summaries = run(project)
    assert (manifest.dataset == "shenzhen").sum() == 0
    assert any("no lung mask" in r for r in reasons_for(rejected, first.name))
    assert any("truncated" in r for r in reasons_for(rejected, second.name))
    # the truncated image's mask is listed with it, and the mask without an image too
    assert any("mask of rejected image" in r for r in reasons_for(rejected, f"{second.stem}_mask.png"))
    assert any("mask without a matching image" in r for r in reasons_for(rejected, "CHNCXR_0999_1_mask.png"))
    assert_counting_rule(summaries)


def test_shenzhen_mask_of_another_size_is_rejected(project):
    first, _ = shenzhen_masked(project)
    formats.write_mask_png(project / SHENZHEN_MASKS / f"{first.stem}_mask.png", np.ones((100, 80), bool))
    manifest, rejected, summaries = run(project)
    assert f"shenzhen/{first.stem}" not in set(manifest.id)
    assert any("is 80x100, expected" in r for r in reasons_for(rejected, first.name))
    assert_counting_rule(summaries)
