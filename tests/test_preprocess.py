"""preprocess: polarity, geometry, masks, completeness and atomic output."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from multimix.config import load_config
from multimix.data import phantom, synth
from multimix.data.harmonise import harmonise, write_outputs
from multimix.data.loader import H5Images
from multimix.data.preprocess import PARTIAL_SUFFIX, preprocess
from multimix.errors import InputError

from conftest import write_params


@pytest.fixture(scope="module")
def processed(tmp_path_factory, tiny_raw):
    """Tiny raw tree -> manifest -> HDF5, once for the module."""
    import shutil

    folder = tmp_path_factory.mktemp("pp")
    shutil.copytree(tiny_raw, folder / "raw")
    cfg = load_config(write_params(folder, preprocess={"processed_dir": str(folder / "processed"), "workers": 2}))
    write_outputs(cfg.interim_dir, *harmonise(cfg))
    summary = preprocess(cfg)
    return folder, cfg, summary


def read(folder: Path, dataset: str):
    with h5py.File(folder / "processed" / f"{dataset}.h5", "r") as f:
        out = {k: f[k][:] for k in f}
        out["attrs"] = dict(f.attrs)
    out["ids"] = out["ids"].astype(str)
    return out


def test_every_manifest_row_is_in_hdf5(processed):
    folder, cfg, summary = processed
    manifest = pd.read_csv(cfg.interim_dir / "manifest.csv")
    stored = set()
    for dataset in cfg.data.datasets:
        data = read(folder, dataset)
        stored |= set(data["ids"])
        assert data["images"].shape[1:] == (256, 256) and data["images"].dtype == np.float32
        assert np.isfinite(data["images"]).all()
        assert data["images"].min() >= 0 and data["images"].max() <= 1
        attrs = data["attrs"]
        assert attrs["complete"] and attrs["size"] == 256 and attrs["count"] == len(data["ids"])
        assert len(attrs["manifest_sha256"]) == 64 and "percentile" in attrs["normalisation"]
    assert stored == set(manifest["id"])
    assert summary["rejected"] == 0


def test_labels_and_official_splits(processed):
    folder, _, _ = processed
    chex, jsrt = read(folder, "chex"), read(folder, "jsrt")
    assert set(chex["labels"]) == {0, 1} and set(jsrt["labels"]) == {0, 1}  # JSRT: nodule or not
    assert set(chex["splits"].astype(str)) == {"train", "test"}  # Mendeley's folders
    assert set(jsrt["splits"].astype(str)) == {"fold1", "fold2"}  # the SCR folds
    assert "masks" not in chex and "masks" in jsrt


def _phantom_mask(dataset: str, index: int, shape) -> np.ndarray:
    """The exact lung mask of synthetic image `index`, rendered analytically at 256x256."""
    rng = synth._rng(0, dataset, index)
    height, width = shape
    anat = phantom.sample_anatomy(rng, pediatric=False, abnormal=False, aspect=width / height)
    return phantom.lung_mask(anat, 256, 256)


def dice(a, b) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_masks_binary_and_aligned(processed):
    folder, cfg, _ = processed
    manifest = pd.read_csv(cfg.interim_dir / "manifest.csv").set_index("id")
    for dataset in ("jsrt", "mcu"):
        data = read(folder, dataset)
        assert set(np.unique(data["masks"])) == {0, 1}
        for k, image_id in enumerate(data["ids"]):
            mask = data["masks"][k].astype(bool)
            # aligned with the image: the lung region is the dark (air) region
            assert data["images"][k][mask].mean() < data["images"][k][~mask].mean() - 0.15
            if dataset == "jsrt":  # synth index = position in name order
                expected = _phantom_mask("jsrt", k, (2048, 2048))
                assert dice(mask, expected) > 0.97
            else:
                index = int(image_id.split("_")[1])
                row = manifest.loc[image_id]
                expected = _phantom_mask("mcu", index, (row.height, row.width))
                assert dice(mask, expected) > 0.97


def test_polarity_lungs_darker_than_mediastinum_everywhere(processed):
    folder, cfg, _ = processed
    for dataset in cfg.data.datasets:
        images = read(folder, dataset)["images"]
        mediastinum = images[:, 100:170, 122:134].mean()
        lungs = (images[:, 90:150, 50:90].mean() + images[:, 90:150, 166:206].mean()) / 2
        assert lungs < mediastinum - 0.1, dataset


def test_pad_keeps_aspect_and_alignment(tmp_path, tiny_raw):
    import shutil

    shutil.copytree(tiny_raw / "mcu", tmp_path / "raw" / "mcu")
    cfg = load_config(write_params(tmp_path, data={"datasets": ["mcu"]},
                                   preprocess={"aspect": "pad", "size": 64, "processed_dir": str(tmp_path / "p")}))
    write_outputs(cfg.interim_dir, *harmonise(cfg))
    preprocess(cfg)
    with h5py.File(tmp_path / "p" / "mcu.h5") as f:
        images, masks = f["images"][:], f["masks"][:]
    assert images.shape == (2, 64, 64)
    for image, mask in zip(images, masks):
        cols, rows = (image.max(axis=0) > 0), (image.max(axis=1) > 0)
        # one axis is fully used, the other is letterboxed (4020/4892 * 64 ≈ 53 pixels)
        assert sorted([cols.sum(), rows.sum()]) == [53, 64]
        assert not mask[~rows, :].any() and not mask[:, ~cols].any()


def test_undecodable_row_is_rejected_with_reason(tmp_path, tiny_raw):
    import shutil

    shutil.copytree(tiny_raw / "nihx", tmp_path / "raw" / "nihx")
    cfg = load_config(write_params(tmp_path, data={"datasets": ["nihx"]},
                                   preprocess={"processed_dir": str(tmp_path / "p"), "workers": 1}))
    manifest, rejected, summaries = harmonise(cfg)
    write_outputs(cfg.interim_dir, manifest, rejected, summaries)
    victim = Path(manifest.iloc[0].image_path)
    victim.write_bytes(victim.read_bytes()[:500])  # damaged after harmonise
    summary = preprocess(cfg)
    assert summary["rejected"] == 1 and summary["images"] == len(manifest) - 1
    table = pd.read_csv(tmp_path / "p" / "preprocess_rejected.csv")
    assert table.iloc[0]["id"] == manifest.iloc[0].id
    assert "unreadable or truncated image" in table.iloc[0]["reason"]


def test_killed_preprocess_leaves_no_valid_looking_output(tmp_path, tiny_raw):
    import shutil

    shutil.copytree(tiny_raw, tmp_path / "raw")
    out = tmp_path / "processed"
    write_params(tmp_path, preprocess={"processed_dir": str(out), "workers": 1})
    cfg = load_config(tmp_path / "params.yaml")
    write_outputs(cfg.interim_dir, *harmonise(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "multimix", "-q", "preprocess"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(out.glob(f"*{PARTIAL_SUFFIX}")) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(out.glob(f"*{PARTIAL_SUFFIX}")), "the run was not caught mid-way"
    assert not list(out.glob("*.h5")), "a killed run left a complete-looking HDF5 file"
    with pytest.raises(InputError, match="not found"):
        H5Images(out / "jsrt.h5")
    rerun = subprocess.run([sys.executable, "-m", "multimix", "-q", "preprocess"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in out.glob("*.h5")) == ["chex.h5", "jsrt.h5", "mcu.h5", "nihx.h5", "shenzhen.h5"]
    assert not list(out.glob(f"*{PARTIAL_SUFFIX}"))


def test_output_is_byte_identical_across_runs(tmp_path, processed):
    folder, cfg, _ = processed
    again = tmp_path / "again"
    preprocess(cfg, out_dir=again, datasets=["jsrt", "nihx"])
    for name in ("jsrt.h5", "nihx.h5"):
        assert (again / name).read_bytes() == (folder / "processed" / name).read_bytes()


def test_loader_reads_ids_lazily_in_workers(processed):
    folder, _, _ = processed
    ids = list(read(folder, "jsrt")["ids"])[::-1][:3]
    data = H5Images(folder / "processed" / "jsrt.h5", ids)
    assert data._file is None  # nothing opened until an item is read
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(len(b["image"]) for b in batches) == 3
    assert batches[0]["image"].shape == (2, 1, 256, 256) and batches[0]["mask"].shape == (2, 1, 256, 256)
    stored = read(folder, "jsrt")
    row = list(stored["ids"]).index(ids[0])
    assert torch.equal(batches[0]["image"][0, 0], torch.from_numpy(stored["images"][row]))
    with pytest.raises(InputError, match="not in this file"):
        H5Images(folder / "processed" / "jsrt.h5", ["jsrt/NOPE"])
