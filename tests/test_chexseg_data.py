"""Seed 004's data: CheXpert label files, CheXlocalize masks (RLE and polygons), and the
pathology phantoms written in both layouts."""

from __future__ import annotations

import json
from shutil import copyfile as shutil_copy

import numpy as np
import pandas as pd
import pytest

from multimix.data import chexpert, layout, pathology, synth_chexseg
from multimix.errors import InputError

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(layout.CHEXPERT_OBSERVATIONS)


def _csv(tmp_path, rows: list[dict], name="train.csv"):
    """A CheXpert label file; rows give observation values by name (others blank)."""
    lines = [HEADER]
    for k, values in enumerate(rows):
        path = values.get("Path", f"CheXpert-v1.0-small/train/patient{k + 1:05d}/study1/view1_frontal.jpg")
        obs = [str(values.get(o, "")) for o in layout.CHEXPERT_OBSERVATIONS]
        lines.append(",".join([path, "Male", "60", "Frontal", "AP", *obs]))
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir(exist_ok=True)
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def test_uncertain_label_under_each_policy(tmp_path):
    path = _csv(tmp_path, [{"Edema": "-1.0", "Cardiomegaly": "1.0", "Lung Opacity": "0.0"}])
    expected = {"ones": 1.0, "zeros": 0.0}
    for policy in chexpert.POLICIES:
        row = chexpert.read_labels(path, policy).iloc[0]
        if policy == "ignore":
            assert np.isnan(row["Edema"])
        else:
            assert row["Edema"] == expected[policy]
        assert row["Cardiomegaly"] == 1.0 and row["Airspace Opacity"] == 0.0
        assert row["Pneumothorax"] == 0.0  # blank = not mentioned = negative
        assert row["uncertain"] == 1
    with pytest.raises(ValueError, match="uncertainty policy 'maybe'"):
        chexpert.apply_policy(pd.Series([1.0]), "maybe")


def test_label_file_ids_and_image_paths(tmp_path):
    path = _csv(tmp_path, [{"Path": "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"}],
                name="valid.csv")
    row = chexpert.read_labels(path).iloc[0]
    assert row["id"] == "patient64541_study1_view1_frontal"
    assert row["file"] == str(path.parent / "valid" / "patient64541" / "study1" / "view1_frontal.jpg")
    elsewhere = chexpert.read_labels(path, image_dir=tmp_path / "CheXpert" / "val").iloc[0]
    assert elsewhere["file"] == str(tmp_path / "CheXpert" / "val" / "patient64541" / "study1" / "view1_frontal.jpg")


@pytest.mark.parametrize("values, message", [
    ({"Edema": "2"}, r"row 2, column 'Edema': '2'; expected 1, 0, -1 or blank"),
    ({"Path": "images/00000001_000.png"}, r"row 2, column 'Path': .* not a CheXpert image path"),
])
def test_bad_label_rows_name_file_row_and_column(tmp_path, values, message):
    path = _csv(tmp_path, [values])
    with pytest.raises(InputError, match=message):
        chexpert.read_labels(path)


def test_a_label_file_without_an_observation_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("Path,Edema\nCheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,1\n")
    with pytest.raises(InputError, match=r"train.csv: missing column 'Enlarged Cardiomediastinum'"):
        chexpert.read_labels(path)


def test_a_row_whose_image_is_missing_is_listed(tmp_path):
    path = _csv(tmp_path, [{}, {}])
    present = path.parent / "train" / "patient00001" / "study1" / "view1_frontal.jpg"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"\xff\xd8")
    found, missing = chexpert.with_images(chexpert.read_labels(path), "chexpert")
    assert list(found["id"]) == ["patient00001_study1_view1_frontal"]
    assert len(missing) == 1 and missing[0][0].endswith("patient00002/study1/view1_frontal.jpg")
    assert "has no image file" in missing[0][1]


def test_rle_and_polygon_give_the_same_mask(tmp_path):
    # a square with corners (2, 1) and (5, 4) in (x, y), and a triangle
    polygons = [[[2, 1], [5, 1], [5, 4], [2, 4]], [[8, 6], [11, 6], [8, 9]]]
    mask = chexpert.rasterise(polygons, (12, 14))
    expected = np.zeros((12, 14), bool)
    expected[1:5, 2:6] = True  # filled with its outline: rows 1-4, columns 2-5
    assert mask[:6].tolist() == expected[:6].tolist()
    assert mask[6, 8:12].all() and mask[9, 8] and not mask[9, 9]  # the triangle's corners
    # a sliver: its fill covers no pixel centre, its outline (CheXlocalize's convention) does
    assert chexpert.rasterise([[[1, 1], [6, 1], [6, 1.3]]], (4, 8))[1, 1:7].all()
    ann = {"patient64541_study1_view1_frontal": {"img_size": [12, 14], "Cardiomegaly": polygons}}
    seg = {"patient64541_study1_view1_frontal": {"Cardiomegaly": chexpert.encode(mask)}}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "seg.json").write_text(json.dumps(seg))
    from_polygons = chexpert.read_annotations(tmp_path / "ann.json")["patient64541_study1_view1_frontal"]
    from_rle = chexpert.read_segmentations(tmp_path / "seg.json")["patient64541_study1_view1_frontal"]
    decoded = chexpert.decode(from_rle["Cardiomegaly"])
    assert decoded.shape == (12, 14) and (decoded == from_polygons["Cardiomegaly"]).all()
    assert (decoded == mask).all()


@pytest.mark.parametrize("content, message", [
    ({"x": {"Heart": {"size": [2, 2], "counts": "04"}}}, r"'x' has key 'Heart'; expected one of"),
    ({"x": {"Edema": {"size": [2, 2]}}}, r"'x' / 'Edema': expected"),
    ([1, 2], r"expected an object keyed by CXR id"),
])
def test_malformed_segmentation_files(tmp_path, content, message):
    (tmp_path / "seg.json").write_text(json.dumps(content))
    with pytest.raises(InputError, match=message):
        chexpert.read_segmentations(tmp_path / "seg.json")


def test_every_pathology_has_an_exact_mask_and_changes_the_pixels():
    for name in pathology.PATHOLOGIES:
        anat, found = pathology.sample_patient(np.random.default_rng(1), present=(name,))
        healthy, _ = pathology.sample_patient(np.random.default_rng(1), present=())
        masks = pathology.masks(anat, found, 200, 240)
        assert masks[name].any(), name
        assert not any(m.any() for p, m in masks.items() if p != name), name
        # the same mask at another size: the shape, not a resampled picture
        big = pathology.masks(anat, found, 400, 480)[name]
        assert abs(big.mean() - masks[name].mean()) < 0.2 * masks[name].mean() + 1e-3, name
        diff = np.abs(pathology.line_integrals(anat, found, 200, 240)
                      - pathology.line_integrals(healthy, pathology.Findings(), 200, 240))
        if name not in ("Cardiomegaly", "Enlarged Cardiomediastinum"):  # these reshape the whole chest
            inside = diff[masks[name]].mean()
            assert inside > 2 * diff[~masks[name]].mean() and inside > 0.02, name
    with pytest.raises(ValueError, match="unknown pathology 'Fracture'"):
        pathology.sample_patient(np.random.default_rng(0), present=("Fracture",))


def test_phantom_sources_in_both_layouts(tmp_path):
    n = synth_chexseg.write_chexpert(tmp_path / "chexpert", {"train": 8, "valid": 3}, seed=0)
    assert n == 11
    root = tmp_path / "chexpert" / "CheXpert-v1.0-small"
    assert (root / "train.csv").read_text().splitlines()[0] == HEADER
    train = chexpert.read_labels(root / "train.csv", "zeros")
    found, missing = chexpert.with_images(train, "chexpert")
    assert len(found) == 8 and not missing
    assert train["id"].iloc[0] == "patient00001_study1_view1_frontal"
    truth = json.loads((tmp_path / "chexpert" / layout.PHANTOM_TRAIN_MASKS).read_text())
    raw = pd.read_csv(root / "train.csv")
    for k, image_id in enumerate(train["id"]):
        for p in pathology.PATHOLOGIES:
            present = chexpert.decode(truth[image_id][p]).any()
            value = raw[layout.CHEXPERT_COLUMN[p]].iloc[k]
            # the labeler: present -> 1 or -1, absent -> blank, 0 or -1
            assert (value in (1.0, -1.0)) if present else (np.isnan(value) or value in (0.0, -1.0))
    valid = chexpert.read_labels(root / "valid.csv")
    assert list(valid["id"]) == [f"patient{64541 + k}_study1_view1_frontal" for k in range(3)]

    synth_chexseg.write_chexlocalize(tmp_path / "chexlocalize", {"val": 3, "test": 2}, seed=0)
    loc = tmp_path / "chexlocalize"
    for split, first in (("val", 64541), ("test", 64741)):
        labels = chexpert.read_labels(loc / "CheXpert" / f"{split}_labels.csv", image_dir=loc / "CheXpert" / split)
        assert chexpert.with_images(labels, "chexlocalize")[1] == []
        assert labels["id"].iloc[0] == f"patient{first}_study1_view1_frontal"
        seg = chexpert.read_segmentations(loc / "CheXlocalize" / f"gt_segmentations_{split}.json")
        ann = chexpert.read_annotations(loc / "CheXlocalize" / f"gt_annotations_{split}.json")
        assert set(seg) == set(ann) == {i for i, row in labels.set_index("id").iterrows()
                                        if row[list(pathology.PATHOLOGIES)].sum() > 0}
        for image_id in seg:
            assert set(seg[image_id]) == set(pathology.PATHOLOGIES)  # all ten, empty ones too
            row = labels.set_index("id").loc[image_id]
            for p, rle in seg[image_id].items():
                mask = chexpert.decode(rle)
                assert mask.any() == (row[p] == 1.0)  # radiologist labels follow the masks
                assert (mask == ann[image_id][p]).all() if p in ann[image_id] else not mask.any()
    # the small valid/ image and the native val image are the same patient
    native = synth_chexseg._native_size(0, "val", 0)
    anat, found = synth_chexseg.patient(0, "val", 0, native[1] / native[0])
    assert tuple(valid.iloc[0][list(pathology.PATHOLOGIES)] == 1.0) == tuple(p in found.present
                                                                              for p in pathology.PATHOLOGIES)


# ------------------------------------------------------------------ harmonise and preprocess
CHEXSEG_COUNTS = {"chexpert": {"train": 5, "valid": 2}, "chexlocalize": {"val": 3, "test": 2}}


@pytest.fixture(scope="module")
def chexseg_raw(tmp_path_factory):
    from multimix.config import load_config
    from multimix.data.acquire import synthesise

    from conftest import write_params

    folder = tmp_path_factory.mktemp("chexseg")
    synthesise(load_config(write_params(folder, data={"datasets": ["chexpert", "chexlocalize"]},
                                        synth={"counts": CHEXSEG_COUNTS})), show_progress=False)
    return folder / "raw"


def _project(tmp_path, chexseg_raw):
    import shutil

    from multimix.config import load_config

    from conftest import write_params

    shutil.copytree(chexseg_raw, tmp_path / "raw")
    return load_config(write_params(tmp_path, data={"datasets": ["chexpert", "chexlocalize"]},
                                    synth={"counts": CHEXSEG_COUNTS}, preprocess={"size": 32, "workers": 1}))


def test_harmonise_and_preprocess_the_seed_004_sources(tmp_path, chexseg_raw):
    import h5py

    from multimix.data.harmonise import harmonise
    from multimix.data.preprocess import preprocess

    cfg = _project(tmp_path, chexseg_raw)
    manifest, rejected, summaries = harmonise(cfg)
    assert rejected.empty
    for s in summaries:
        assert s.files_used + s.rejected_files + s.skipped == s.files_found, s
    assert manifest["dataset"].value_counts().to_dict() == {"chexpert": 7, "chexlocalize": 5}
    row = manifest.set_index("id").loc["chexlocalize/val/patient64541_study1_view1_frontal"]
    assert row["mask_paths"].endswith("gt_segmentations_val.json") and row["official_split"] == "val"
    cfg.interim_dir.mkdir(parents=True)
    manifest.to_csv(cfg.interim_dir / "manifest.csv", index=False)
    preprocess(cfg)
    with h5py.File(cfg.processed_dir / "chexlocalize.h5") as f:
        ids = [i.decode() for i in f["ids"][:]]
        k = ids.index("chexlocalize/val/patient64541_study1_view1_frontal")
        assert f["masks"].shape == (5, 10, 32, 32) and f["labels"].shape == (5, 10)
        seg = chexpert.read_segmentations(chexseg_raw / "chexlocalize" / "CheXlocalize" / "gt_segmentations_val.json")
        for c, p in enumerate(pathology.PATHOLOGIES):
            native = chexpert.decode(seg["patient64541_study1_view1_frontal"][p])
            assert f["labels"][k, c] == float(native.any())
            # the area rule: a 32 x 32 mask covers about the native mask's share of the image
            assert abs(f["masks"][k, c].mean() - native.mean()) < 0.02, p
        assert tuple(f["native_hw"][k]) == native.shape
    with h5py.File(cfg.processed_dir / "chexpert.h5") as f:
        assert "masks" not in f and f["labels"].shape == (7, 10)
        raw = pd.read_csv(chexseg_raw / "chexpert" / "CheXpert-v1.0-small" / "train.csv")
        first = [raw[layout.CHEXPERT_COLUMN[p]].iloc[0] for p in pathology.PATHOLOGIES]
        ids = [i.decode() for i in f["ids"][:]]
        got = f["labels"][ids.index("chexpert/train/patient00001_study1_view1_frontal")]
        assert np.array_equal(got, np.array(first, np.float32), equal_nan=True)  # raw: 1 / 0 / -1 / NaN


def test_harmonise_lists_every_bad_seed_004_input(tmp_path, chexseg_raw):
    from multimix.data.harmonise import harmonise

    cfg = _project(tmp_path, chexseg_raw)
    raw = tmp_path / "raw"
    train = raw / "chexpert" / "CheXpert-v1.0-small" / "train"
    (train / "patient00002" / "study1" / "view1_frontal.jpg").unlink()          # a row without its image
    stray = train / "patient09999" / "study1" / "view1_frontal.jpg"
    stray.parent.mkdir(parents=True)
    shutil_copy(train / "patient00001" / "study1" / "view1_frontal.jpg", stray)  # an image without a row
    seg_path = raw / "chexlocalize" / "CheXlocalize" / "gt_segmentations_val.json"
    seg = json.loads(seg_path.read_text())
    first = next(iter(seg))
    seg[first] = {p: chexpert.encode(np.zeros((10, 12), bool)) for p in pathology.PATHOLOGIES}  # wrong size
    seg["patient99999_study1_view1_frontal"] = seg[first]                         # masks of an unlisted image
    seg_path.write_text(json.dumps(seg))
    manifest, rejected, summaries = harmonise(cfg)
    for s in summaries:
        assert s.files_used + s.rejected_files + s.skipped == s.files_found, s
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert any("patient00002/study1/view1_frontal.jpg is absent" in r for r in reasons.values())
    assert "image with no row in train.csv, valid.csv" in reasons[str(stray)]
    assert any("masks of an image that val_labels.csv does not list" in r for r in reasons.values())
    bad = next(r for p, r in reasons.items() if first.split("_")[0] in p)
    assert "are 12x10, the image" in bad
    assert len(manifest) == 7 + 5 - 2  # the absent image and the mis-sized masks' image


def test_the_pipelines_targets_follow_each_uncertainty_policy(tmp_path):
    """`policy_targets` is what training reads (through `PathologyImages`, from the HDF5's raw
    labels): -1 becomes 1 under U-ones, 0 under U-zeros, NaN (ignored) under U-ignore; blank is 0."""
    import h5py

    from multimix.data.loader import PathologyImages

    raw = np.full((2, 10), np.nan, np.float32)
    raw[0, :4] = [1.0, 0.0, -1.0, np.nan]
    raw[1, :4] = [-1.0, -1.0, 1.0, 0.0]
    expected = {"ones": [[1, 0, 1, 0], [1, 1, 1, 0]], "zeros": [[1, 0, 0, 0], [0, 0, 1, 0]],
                "ignore": [[1, 0, np.nan, 0], [np.nan, np.nan, 1, 0]]}
    for policy, rows in expected.items():
        np.testing.assert_array_equal(chexpert.policy_targets(raw, policy)[:, :4], np.array(rows, np.float32))
        assert (chexpert.policy_targets(raw, policy)[:, 4:] == 0).all()  # never mentioned = negative
    path = tmp_path / "chexpert.h5"
    with h5py.File(path, "w") as f:
        f["ids"], f["images"], f["labels"] = ["a", "b"], np.zeros((2, 4, 4), np.float32), raw
        f.attrs["complete"], f.attrs["size"] = True, 4
    for policy, rows in expected.items():
        targets = PathologyImages(path, ["b", "a"], policy=policy).targets  # in the split's order
        np.testing.assert_array_equal(targets[:, :4], np.array(rows[::-1], np.float32))
    with pytest.raises(ValueError, match="uncertainty policy 'maybe'"):
        chexpert.policy_targets(raw, "maybe")


def test_rle_is_pycocotools_column_major_pinned():
    """CheXlocalize's RLE runs down the columns (pycocotools, Fortran order), starting with zeros:
    this 3x4 mask's runs are 3 zeros, 1 one, 2 zeros, 2 ones, 3 zeros, 1 one, which pycocotools
    writes as '31211O'. A row-major (transposed) encoder and decoder would round-trip too, but
    would write another string and misread CheXlocalize's own files."""
    mask = np.zeros((3, 4), bool)
    mask[0, 1] = mask[0, 2] = mask[1, 2] = mask[2, 3] = True
    assert chexpert.encode(mask) == {"size": [3, 4], "counts": "31211O"}
    np.testing.assert_array_equal(chexpert.decode({"size": [3, 4], "counts": "31211O"}), mask)
