"""Seed 004's training streams and runs: what each role reads, and that a run resumes exactly.

On a tiny phantom project (CheXpert + CheXlocalize, 32², the real harmonise / preprocess / split)
with a pseudo-label file written by hand, so that the streams can be checked against known masks.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from multimix.config import load_config
from multimix.data.acquire import synthesise
from multimix.data.harmonise import harmonise, write_outputs
from multimix.data.preprocess import preprocess
from multimix.data.split import write_splits
from multimix.methods import method_subsets
from multimix.methods.chexseg.checkpoints import pseudo_label_file
from multimix.methods.chexseg.training import ChexsegStreams
from multimix.study import find_run
from multimix.training.loop import train

from conftest import write_params

COUNTS = {"chexpert": {"train": 8, "valid": 2}, "chexlocalize": {"val": 6, "test": 2}}


def params(folder, **train):
    return write_params(
        folder, data={"datasets": ["chexpert", "chexlocalize"]}, synth={"counts": COUNTS},
        preprocess={"size": 32, "workers": 1, "processed_dir": str(folder / "processed")},
        split={"split_dir": str(folder / "splits"), "chexlocalize_val": 0.34},
        study={"name": "chexseg-tiny", "presets": {"segmentation": [], "classification": [], "multitask": []},
               "segmentation_labels": [], "classification_labels": [], "multitask_labels": [],
               "chexseg": {"classifiers": ["resnet18"], "cam": ["resnet18"], "p": [0.5], "trials": [0, 1],
                           "init": "random", "distill_inits": ["random"], "distill_unlabelled": [0.5]}},
        seed004={"classifier_batch": 2, "segmentation_batch": 2, "pseudo_dir": str(folder / "pseudo"),
                 "subsets": {"pseudo_labelled": 3, "trials": [0, 1], "unlabelled": [0.5]}},
        train={"epochs": 2, "steps_per_epoch": 2, "figures": 1, "runs_dir": str(folder / "runs"),
               "checkpoint_dir": str(folder / "checkpoints"), **train},
    )


@pytest.fixture(scope="module")
def chexseg_project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chexseg-train")
    cfg = load_config(params(folder))
    synthesise(cfg, show_progress=False)
    write_outputs(cfg.interim_dir, *harmonise(cfg))
    preprocess(cfg)
    splits = write_splits(cfg, lambda partitions: method_subsets(cfg, partitions))
    # pseudo-labels by hand: image k of the file gets a mask whose pathology-c plane is all c == k % 10
    ids = sorted({i for trial in splits["subsets"]["chexseg"]["pseudo"].values() for i in trial})
    masks = np.zeros((len(ids), 10, 32, 32), np.uint8)
    for k in range(len(ids)):
        masks[k, k % 10] = 1
    path = pseudo_label_file(cfg)
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("masks", data=masks)
        f.attrs.update(complete=True, size=32)
    return folder


def streams_of(folder, run):
    cfg = load_config(folder / "params.yaml")
    splits = json.loads((folder / "splits" / "splits.json").read_text())
    return cfg, splits, ChexsegStreams(cfg, find_run(cfg, run), splits)


def test_each_role_reads_its_own_streams(chexseg_project):
    cfg, splits, classifier = streams_of(chexseg_project, "pathology_resnet18")
    parts, subsets = splits["partitions"], splits["subsets"]["chexseg"]
    assert set(classifier.train) == {"pathology"} and classifier.train["pathology"].ids == parts["chexpert"]["train"]
    assert classifier.val["pathology"].ids == parts["chexpert"]["val"]
    assert classifier.batch_size == cfg.seed004.classifier_batch and not classifier.train["pathology"].masks

    for trial in (0, 1):
        _, _, segmenter = streams_of(chexseg_project, f"chexseg_random-p0.5-t{trial}")
        assert set(segmenter.train) == {"expert", "pseudo"}
        assert segmenter.train["expert"].ids == parts["chexlocalize"]["train"]   # the expert pool
        assert segmenter.val["expert"].ids == parts["chexlocalize"]["val"]       # its held-out share
        assert segmenter.train["pseudo"].ids == subsets["pseudo"][str(trial)]    # this trial's draw
        assert segmenter.images_per_step == cfg.seed004.segmentation_batch       # one mixed batch per step
    assert subsets["pseudo"]["0"] != subsets["pseudo"]["1"]  # trials differ in their pseudo-labelled images
    assert not set(parts["chexlocalize"]["train"]) & set(parts["chexlocalize"]["val"])

    # the pseudo stream's masks are the pseudo-label file's, its images CheXpert's
    with h5py.File(pseudo_label_file(cfg)) as f:
        order = list(f["ids"].asstr()[:])
    for k, image_id in enumerate(segmenter.train["pseudo"].ids):
        mask = segmenter.train["pseudo"][k]["mask"]
        row = order.index(image_id)
        assert mask.shape == (10, 32, 32) and mask[row % 10].all() and mask.sum() == 32 * 32, image_id
    with h5py.File(cfg.processed_dir / "chexlocalize.h5") as f:
        first = list(f["ids"].asstr()[:]).index(parts["chexlocalize"]["train"][0])
        assert torch.equal(segmenter.train["expert"][0]["mask"], torch.from_numpy(f["masks"][first].astype(np.float32)))

    _, _, teacher = streams_of(chexseg_project, "teacher_random")
    assert set(teacher.train) == {"expert"} and teacher.images_per_step == cfg.seed004.segmentation_batch
    _, _, student = streams_of(chexseg_project, "student_random-u0.5")
    assert set(student.train) == {"unlabelled"} and not student.train["unlabelled"].masks
    assert student.train["unlabelled"].ids == subsets["unlabelled"]["0.5"]
    assert set(student.train["unlabelled"].ids) <= set(parts["chexpert"]["train"])


def test_chexseg_streams_kept_on_the_device_give_the_loaders_batches(chexseg_project):
    cfg, _, streams = streams_of(chexseg_project, "chexseg_random-p0.5-t0")
    spec = find_run(cfg, "chexseg_random-p0.5-t0")
    loaders = streams.loaders(cfg, spec, 1, 3)
    from_files = [dict(zip(loaders, parts)) for parts in zip(*loaders.values())]
    streams.keep_on_device(torch.device("cpu"), torch.float32)
    loaders = streams.loaders(cfg, spec, 1, 3)
    on_device = [dict(zip(loaders, parts)) for parts in zip(*loaders.values())]
    assert len(from_files) == len(on_device) == 3
    for a, b in zip(from_files, on_device):
        for name in a:
            assert a[name].keys() == b[name].keys() == {"image", "labels", "mask"}
            for key in a[name]:  # labels hold NaN where a pathology's label is ignored
                assert torch.equal(torch.nan_to_num(a[name][key], -9), torch.nan_to_num(b[name][key], -9)), key


def test_a_killed_chexseg_run_resumes_to_the_uninterrupted_weights(tmp_path, chexseg_project, monkeypatch):
    """The pathology classifier and a p-sweep segmenter: one epoch, then resume, equals two straight."""
    import os

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in ("pathology_resnet18", "chexseg_random-p0.5-t0"):
        got = {}
        for case in ("straight", "resumed"):
            folder = tmp_path / run / case
            folder.mkdir(parents=True)
            for name in ("raw", "interim", "processed", "splits", "pseudo"):
                os.symlink(chexseg_project / name, folder / name)
            cfg = load_config(params(folder))
            if case == "resumed":
                train(cfg, run, show_progress=False, log=lambda m: None, use_mlflow=False, stop_after_epochs=1)
                assert torch.load(folder / "checkpoints" / run / "last.pt", weights_only=True)["epoch"] == 0
            messages = []
            train(cfg, run, show_progress=False, log=messages.append, use_mlflow=False)
            assert any("resuming after epoch 1" in m for m in messages) == (case == "resumed"), messages
            got[case] = torch.load(folder / "checkpoints" / run / "last.pt", weights_only=True)["state"]
            if case == "straight":  # `multimix predict` on the trained run: ten pathologies
                from multimix.serving import Bundle

                said = Bundle.from_run(cfg, run).predict(np.full((3, 32, 32), 0.4, np.float32))
                if run.startswith("pathology"):
                    assert said["probabilities"].shape == (3, 10) and len(said["class_names"]) == 10
                    assert said["saliency"].shape == (3, 32, 32) and "masks" not in said
                else:
                    assert said["masks"].shape == (3, 10, 32, 32) and said["mask_names"][0] == "Enlarged Cardiomediastinum"
                    assert "probabilities" not in said
        a, b = got["straight"], got["resumed"]
        assert a.keys() == b.keys()
        for part in a:
            if isinstance(a[part], dict) and all(torch.is_tensor(v) for v in a[part].values()):
                assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), (run, part)


def test_each_slot_of_a_segmenter_batch_takes_the_expert_or_the_pseudo_image_with_its_own_mask(
        chexseg_project, monkeypatch):
    """CheXseg's mixing, per sample: slot b holds the expert image and its expert mask where the slot's
    own Bernoulli(p) draw says expert, else the pseudo-labelled image with its pseudo mask. Expert
    inputs are all ones and pseudo ones all zeros, so what the network and the loss receive shows
    which was taken; the draws are replayed from an identically seeded generator."""
    from multimix import losses
    from multimix.methods import method_class

    cfg = load_config(chexseg_project / "params.yaml")
    spec = find_run(cfg, "chexseg_random-p0.5-t0")
    method = method_class(spec)(cfg, spec, torch.device("cpu"))
    seen = {}

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            seen["x"] = x.detach().clone()
            return self.w * x.expand(-1, 10, -1, -1)

    def dice(logits, target):
        seen["y"] = target.detach().clone()
        return logits.mean()

    method.net = Recorder()
    monkeypatch.setattr(losses, "class_average_dice_loss", dice)
    b = 64
    batch = {"expert": {"image": torch.ones(b, 1, 4, 4), "mask": torch.ones(b, 10, 4, 4)},
             "pseudo": {"image": torch.zeros(b, 1, 4, 4), "mask": torch.zeros(b, 10, 4, 4)}}
    terms = method.step(batch, torch.Generator().manual_seed(7), epoch=0)
    expected = losses.expert_slots(b, 0.5, torch.Generator().manual_seed(7))
    assert 0 < int(expected.sum()) < b                       # one draw per sample: a mixed batch
    took_expert_image = seen["x"].flatten(1).eq(1).all(1)
    took_expert_mask = seen["y"].flatten(1).eq(1).all(1)
    assert torch.equal(took_expert_image, expected) and torch.equal(took_expert_mask, expected)
    assert seen["x"].flatten(1).eq(0).all(1).eq(~expected).all()  # the others wholly pseudo
    assert terms["expert_share"] == pytest.approx(float(expected.float().mean()))
