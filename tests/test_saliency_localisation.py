"""The pneumonia phantoms' opacity masks, and MultiMix's saliency scored against them."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from multimix.config import load_config
from multimix.data.loader import open_images
from multimix.data.preprocess import read_manifest
from multimix.evaluation import evaluate
from multimix.localisation import phantom_lesions
from multimix.training.loop import train

from test_training import tiny_params, tiny_project  # noqa: F401  (module fixture, reused)

STUDY = {"name": "tiny-saliency", "repeats": [0], "presets": {"multitask": ["multimix"]},
         "multitask_labels": [{"segmentation": 1, "classification": 2}]}


@pytest.fixture
def project(tmp_path, tiny_project):  # noqa: F811
    for name in ("raw", "interim", "processed", "splits"):
        os.symlink(tiny_project / name, tmp_path / name)
    return tmp_path


def test_opacity_masks_exist_for_exactly_the_pneumonia_phantoms_and_sit_on_their_opacities(project):
    cfg = load_config(tiny_params(project, study=STUDY))
    ids = json.loads((project / "splits" / "splits.json").read_text())["partitions"]["chex"]["test"]
    data = open_images(cfg.processed_dir, "chex", ids, masks=False)
    manifest = read_manifest(cfg.interim_dir / "manifest.csv").set_index("id")
    lesions = phantom_lesions(manifest, cfg.raw_dir / "chex", data.ids, cfg.preprocess.size, cfg.preprocess.aspect)
    pneumonia = {image_id for image_id, label in zip(data.ids, data.labels) if label == 1}
    assert pneumonia and set(lesions) == pneumonia
    for index, image_id in enumerate(data.ids):
        if image_id not in lesions:
            continue
        lesion, image = lesions[image_id], data[index]["image"][0].numpy()
        assert lesion.shape == image.shape and 0 < lesion.mean() < 0.5
        # the opacities are denser than the same place in the other lung (the mask mirrored left-right):
        # the mask lies on them, not flipped or on another grid
        mirrored = lesion[:, ::-1] & ~lesion
        assert image[lesion].mean() > image[mirrored].mean() + 0.05


def test_real_sources_have_no_masks_and_nothing_is_scored(project, tmp_path):
    cfg = load_config(tiny_params(project, study=STUDY))
    manifest = read_manifest(cfg.interim_dir / "manifest.csv").set_index("id")
    ids = list(manifest.index[manifest["dataset"] == "chex"])
    assert phantom_lesions(manifest, tmp_path / "elsewhere", [], 64, "squash") == {}
    copy = manifest.copy()
    copy["image_path"] = [str(tmp_path / "real" / "chest_xray" / "x.jpeg")] * len(copy)
    assert phantom_lesions(copy, tmp_path / "real", ids, 64, "squash") == {}


def test_evaluate_scores_the_saliency_of_the_pneumonia_phantoms(project, monkeypatch):
    monkeypatch.chdir(project)  # evaluate.dir is relative: data/eval
    cfg = load_config(tiny_params(project, study=STUDY, epochs=1, steps_per_epoch=2))
    name = "multimix-s1-c2-r0"
    train(cfg, name, show_progress=False, log=lambda *_: None)
    summary = evaluate(cfg, name, use_mlflow=False)
    rows = pd.read_csv(project / "data" / "eval" / name / "per_image.csv")
    chex = rows[(rows.dataset == "chex") & (rows.task == "classification")]
    scored = chex.dropna(subset=["saliency_hit"])
    assert len(scored) == (chex.label == 1).sum() > 0 and (scored.label == 1).all()
    assert scored["saliency_hit"].isin([0.0, 1.0]).all() and scored["saliency_mass"].between(0, 1).all()
    assert scored["lesion_share"].between(0, 0.5).all()
    assert summary["chex"]["saliency_images"] == len(scored)
    assert summary["chex"]["saliency_mass"] == pytest.approx(scored["saliency_mass"].mean())
    assert summary["chex"]["saliency_chance"] == pytest.approx(scored["lesion_share"].mean())
    assert np.isfinite(summary["nihx"]["saliency_hit"])  # the NIHX pneumonia phantoms carry masks too
