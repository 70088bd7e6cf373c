"""The NIH reader and the NIHX selection on real NIH material (../shared/data/nih)."""

from __future__ import annotations

import gzip
import shutil

import pandas as pd
import pytest

from multimix.config import load_config
from multimix.data import formats
from multimix.data.harmonise import harmonise, read_nih_labels, select_nihx

from conftest import write_params


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    from conftest import SHARED_NIH

    source = SHARED_NIH / "Data_Entry_2017_v2020.csv.gz"
    if not source.exists():
        pytest.skip("../shared/data/nih is not present")
    path = tmp_path_factory.mktemp("nih") / "Data_Entry_2017_v2020.csv"
    with gzip.open(source, "rb") as fin, open(path, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return path


def test_real_images_decode(shared_nih):
    for name in ("00000001_000.png", "00000002_000.png", "00000013_003.png"):
        pixels, info = formats.read_image(shared_nih / "images" / name)
        assert (info.height, info.width, info.bit_depth, info.channels) == (1024, 1024, 8, 1)
        assert pixels.dtype.name == "uint8" and pixels.std() > 10


def test_real_label_file_reads(labels):
    table = read_nih_labels(labels)
    assert len(table) == 112_120
    assert table.columns[0] == "Image Index"


def test_nihx_selection_matches_the_paper(labels):
    table = read_nih_labels(labels)
    chosen = select_nihx(table, "auto", seed=0)
    assert (chosen["label"] == 1).sum() == 1431
    assert (chosen["label"] == 0).sum() == 2754
    assert len(chosen) == 4185 and chosen["Image Index"].is_unique
    # every abnormal row really lists Pneumonia (never just Pneumothorax)
    assert chosen.loc[chosen.label == 1, "Finding Labels"].str.split("|").map(lambda t: "Pneumonia" in t).all()
    assert (chosen.loc[chosen.label == 0, "Finding Labels"] == "No Finding").all()


def test_nihx_selection_is_deterministic_per_seed(labels):
    table = read_nih_labels(labels)
    a = select_nihx(table, "auto", seed=0)["Image Index"].tolist()
    b = select_nihx(table.sample(frac=1.0, random_state=5), "auto", seed=0)["Image Index"].tolist()
    c = select_nihx(table, "auto", seed=1)["Image Index"].tolist()
    assert a == b  # row order of the label file does not matter
    assert a != c
    assert select_nihx(table, 100, seed=0)["label"].eq(0).sum() == 100


def test_harmonise_on_real_nih_files(tmp_path, labels, shared_nih):
    root = tmp_path / "raw" / "nihx"
    (root / "images_001" / "images").mkdir(parents=True)
    shutil.copy(labels, root / labels.name)
    for png in (shared_nih / "images").iterdir():
        shutil.copy(png, root / "images_001" / "images" / png.name)
    cfg = load_config(write_params(tmp_path, data={"datasets": ["nihx"]}))
    manifest, rejected, summaries = harmonise(cfg)
    chosen = set(select_nihx(read_nih_labels(labels), "auto", 0)["Image Index"])
    present = {p.name for p in (shared_nih / "images").iterdir()}
    accepted = {p.split("/")[-1] for p in manifest["image_path"]}
    assert accepted == present & chosen
    excluded = rejected[rejected.kind == "excluded"]
    assert len(excluded) == len(present - chosen)
    assert "Cardiomegaly" in " ".join(excluded["reason"])  # 00000001_000 is not in NIHX
    (summary,) = summaries
    assert summary.rejected_rows == 4185 - len(accepted)
    assert summary.files_used + summary.rejected_files + summary.skipped == summary.files_found
    assert set(manifest["height"]) <= {1024}
    assert pd.Series(manifest["label"]).isin([0, 1]).all()
