"""train: every preset learns, resume equals uninterrupted, checkpoints are plain."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from multimix.config import load_config
from multimix.data.harmonise import harmonise, write_outputs
from multimix.data.loader import open_images
from multimix.data.preprocess import preprocess, read_manifest
from multimix.evaluation import evaluate
from multimix.localisation import phantom_lesions
from multimix.data.split import write_splits
from multimix.methods.multimix.network import MultiMixNet
from multimix.methods import PRESETS
from multimix.study import RunSpec, run_names
from multimix.methods.multimix.training import train_step
from multimix.training.loop import train
from multimix.streams import Streams

from conftest import write_params

# MultiMix's nine presets (seed 003's are tested in test_appaunet.py)
MULTIMIX_PRESETS = {p: v for p, v in PRESETS.items() if v.method == "multimix"}
STUDY = {"name": "tiny", "repeats": [0], "segmentation_labels": [1], "classification_labels": [2],
         "multitask_labels": [{"segmentation": 1, "classification": 2}],
         "presets": {group: [p for p, v in MULTIMIX_PRESETS.items() if v.tasks == group]
                     for group in ("segmentation", "classification", "multitask")}}
TRAIN = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "figures": 1}


def tiny_params(folder, study=None, **train):
    return write_params(
        folder,
        preprocess={"size": 64, "processed_dir": str(folder / "processed"), "workers": 1},
        split={"split_dir": str(folder / "splits"), "segmentation_sizes": [1, "full"],
               "classification_sizes": [2, "full"], "repeats": [0]},
        study=study or STUDY,
        train=dict(TRAIN, runs_dir=str(folder / "runs"), checkpoint_dir=str(folder / "checkpoints"), **train),
    )


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, tiny_raw):
    folder = tmp_path_factory.mktemp("train")
    shutil.copytree(tiny_raw, folder / "raw")
    cfg = load_config(tiny_params(folder))
    write_outputs(cfg.interim_dir, *harmonise(cfg))
    preprocess(cfg)
    write_splits(cfg)
    return folder


def linked_data(tiny_project, folder):
    """`folder` sharing the tiny project's data (raw to splits), for a run of its own."""
    folder.mkdir(exist_ok=True)
    for name in ("raw", "interim", "processed", "splits"):
        os.symlink(tiny_project / name, folder / name)
    return folder


@pytest.fixture
def project(tmp_path, tiny_project):
    tiny_params(linked_data(tiny_project, tmp_path))
    return tmp_path


def fixed_batch(project, preset):
    cfg = load_config(project / "params.yaml")
    variant = PRESETS[preset]
    spec = RunSpec("x", preset, "full" if variant.segmentation else None, "full" if variant.classification else None, 0)
    streams = Streams(cfg, spec, json.loads((project / "splits" / "splits.json").read_text()), variant.streams)
    assert set(streams.train) == set(variant.streams)
    batch = {}
    for name, data in streams.train.items():
        items = [data[i % len(data)] for i in range(2)]
        batch[name] = {"image": torch.stack([it["image"] for it in items]),
                       "label": torch.tensor([it["label"] for it in items])}
        if "mask" in items[0]:
            batch[name]["mask"] = torch.stack([it["mask"] for it in items])
    return cfg, spec, batch


# The loss terms each preset must log (and therefore compute).
TERMS = {"segmentation": {"loss_dice"}, "classification": {"loss_cls"}, "fixmatch": {"loss_cls_unlabelled",
         "pseudo_label_rate"}, "mixmatch": {"loss_cls_unlabelled"}, "consistency": {"loss_seg_consistency"}}


@pytest.mark.parametrize("preset", sorted(MULTIMIX_PRESETS))
def test_every_preset_lowers_each_of_its_losses_on_a_fixed_batch(project, preset):
    cfg, spec, batch = fixed_batch(project, preset)
    v = spec.variant
    expected = {"loss_total"} | set().union(*(TERMS[k] for k, on in (
        ("segmentation", v.segmentation), ("classification", v.classification), ("fixmatch", v.ssl == "fixmatch"),
        ("mixmatch", v.ssl == "mixmatch"), ("consistency", v.consistency)) if on))
    torch.manual_seed(0)
    model = MultiMixNet(bridge=v.bridge, dropout=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(12):
        loss, terms = train_step(model, batch, v, cfg, torch.Generator().manual_seed(0), epoch=5)
        assert set(terms) == expected, (set(terms), expected)
        optimiser.zero_grad()
        loss.backward()
        if step == 0 and v.bridge:  # the saliency channel of the bridge receives gradient: it is wired in
            assert model.decoder[0][0].weight.grad[:, -1].abs().sum() > 0
        optimiser.step()
        history.append(terms)
        assert all(torch.isfinite(torch.tensor(x)) for x in terms.values())
    first, last = history[0], history[-3:]
    assert min(h["loss_total"] for h in last) < first["loss_total"]
    for term in {"loss_dice", "loss_cls"} & expected:  # each supervised term falls on its own
        assert min(h[term] for h in last) < first[term], (term, [h[term] for h in history])
    if v.consistency:
        assert all(h["loss_seg_consistency"] > 0 for h in history)
    if v.ssl:
        assert max(h["loss_cls_unlabelled"] for h in history) > 0  # the unlabelled term is live


def test_fixmatch_pseudo_labels_come_from_the_weak_view_and_the_loss_from_the_strong(project, monkeypatch):
    """Tag the views by value: weak images are 0.25, strong 0.75; record what the model sees and
    what the FixMatch loss is given."""
    from multimix import augment, losses
    from multimix.methods.multimix import training as method

    cfg, spec, batch = fixed_batch(project, "enc_ssl")
    monkeypatch.setattr(augment, "weak", lambda x, gen, mask=None: torch.full_like(x, 0.25) if mask is None
                        else (torch.full_like(x, 0.25), mask))
    monkeypatch.setattr(augment, "strong", lambda x, gen, max_ops=3: torch.full_like(x, 0.75))
    seen, given = [], {}
    model = MultiMixNet(bridge=False, dropout=0.0)
    original = model.forward

    def spy(x, **kwargs):
        seen.append((torch.is_grad_enabled(), x.detach().flatten(1).mean(1).tolist()))
        return original(x, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    real = losses.fixmatch_loss

    def fixmatch(weak_logits, strong_logits, threshold):
        given.update(weak=weak_logits.detach().clone(), strong=strong_logits.detach().clone())
        return real(weak_logits, strong_logits, threshold)

    monkeypatch.setattr(method.losses, "fixmatch_loss", fixmatch)
    train_step(model, batch, spec.variant, cfg, torch.Generator().manual_seed(0), epoch=0)
    no_grad = [values for grad, values in seen if not grad]
    with_grad = [values for grad, values in seen if grad]
    assert no_grad == [[0.25, 0.25]]  # pseudo-labels: the weak view of the unlabelled batch, without gradient
    assert with_grad == [[0.25, 0.25, 0.75, 0.75]]  # labelled (weak-augmented) + strong views, with gradient
    model.eval()
    with torch.no_grad():
        weak_logits = original(torch.full_like(batch["cls_u"]["image"], 0.25), with_decoder=False).logits
        strong_logits = original(torch.full_like(batch["cls_u"]["image"], 0.75), with_decoder=False).logits
    assert torch.allclose(given["weak"], weak_logits, atol=1e-5)
    assert torch.allclose(given["strong"], strong_logits, atol=1e-5)


def test_every_epoch_reshuffles_and_covers_its_streams():
    from multimix.streams import epoch_plan

    plans = [epoch_plan(23, 5, 4, "run", 0, epoch, "cls_l") for epoch in range(3)]
    assert plans[0] != plans[1] != plans[2]
    for plan in plans:
        flat = [i for b in plan for i in b]
        assert len(flat) == 20 and len(set(flat)) == 20  # no repeat within one pass
    long = [i for b in epoch_plan(7, 6, 3, "run", 0, 0, "seg_l") for i in b]  # 18 draws of 7 items
    assert sorted(long[:7]) == list(range(7)) and sorted(long[7:14]) == list(range(7))  # full passes
    assert epoch_plan(23, 5, 4, "run", 0, 1, "cls_l") == plans[1]  # a pure function of its seeds


def test_validate_reports_what_it_measures(project):
    """val_dice, val_accuracy and val_loss_cls equal a hand computation over the validation sets."""
    import contextlib

    import torch.nn.functional as F

    from multimix.losses import dice_scores
    from multimix.methods.multimix.training import validate

    cfg, spec, _ = fixed_batch(project, "umtl")
    streams = Streams(cfg, spec, json.loads((project / "splits" / "splits.json").read_text()), spec.variant.streams)
    torch.manual_seed(1)
    model = MultiMixNet(bridge=False)
    got = validate(model, streams, torch.device("cpu"), contextlib.nullcontext)
    model.eval()
    seg = streams.val["seg"]
    x = torch.stack([seg[i]["image"] for i in range(len(seg))])
    m = torch.stack([seg[i]["mask"] for i in range(len(seg))])
    cls = streams.val["cls"]
    xc = torch.stack([cls[i]["image"] for i in range(len(cls))])
    y = torch.tensor([cls[i]["label"] for i in range(len(cls))])
    with torch.no_grad():
        dice = dice_scores(model(x).mask_logits, m).mean().item()
        logits = model(xc).logits
    assert got["val_dice"] == pytest.approx(dice)
    assert got["val_accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert got["val_loss_cls"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert got["val_score"] == pytest.approx((got["val_dice"] + got["val_accuracy"]) / 2)
    assert got["val_loss"] == pytest.approx(got["val_loss_dice"] + got["val_loss_cls"])
    assert got["val_bridge_logit_change"] == 0.0  # no bridge
    assert model.training is False and validate(model, streams, "cpu", contextlib.nullcontext) == got


def test_model_selection_breaks_ties_by_validation_loss():
    from multimix.training.loop import better

    best = {"val_score": 0.875, "val_loss": 0.40}
    assert better({"val_score": 0.9, "val_loss": 0.9}, best)
    assert not better({"val_score": 0.8, "val_loss": 0.1}, best)
    assert better({"val_score": 0.875, "val_loss": 0.30}, best)  # the same accuracy, a smoother score decides
    assert not better({"val_score": 0.875, "val_loss": 0.40}, best)  # a full tie keeps the earlier epoch
    assert better({"val_score": 0.1, "val_loss": 9.0}, None)


def test_train_run_logs_to_mlflow_and_writes_plain_checkpoints(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    cfg = load_config(project / "params.yaml")
    summary = train(cfg, "multimix-s1-c2-r0", show_progress=False, log=lambda *_: None)
    run_dir = project / "runs" / "multimix-s1-c2-r0"
    for path in (run_dir / "best.pt", project / "checkpoints" / "multimix-s1-c2-r0" / "last.pt"):
        torch.load(path, weights_only=True)  # plain tensors and numbers only
        MultiMixNet(bridge=True).load_state_dict(weights(path))
    assert not (run_dir / "last.pt").exists()  # the runs folder holds results only
    assert (run_dir / "metrics.json").exists() and (run_dir / "history.csv").exists()
    assert list((run_dir / "figures").glob("*.png"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "multimix-s1-c2-r0" and run.info.status == "FINISHED"
    for key in ("loss_total", "loss_dice", "loss_seg_consistency", "loss_cls_unlabelled", "pseudo_label_rate",
                "lr", "val_dice", "val_accuracy", "images_per_s"):
        assert key in run.data.metrics, key
    assert run.data.params["multimix.loss.threshold"] == "0.7" and run.data.tags["preset"] == "multimix"
    assert len(run.data.tags["data_digest"]) == 64
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"figures", "config.json"} <= artifacts
    # the MLflow model (a pyfunc with a signature) and the data the run read (the Dataset column)
    model = mlflow.models.get_model_info(run.data.tags["model_uri"])
    assert list(model.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 64, 64]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert {"splits.json", "jsrt.h5", "chex.h5"} <= set(inputs)
    assert all(d.dataset.digest and {t.key: t.value for t in d.tags}["subset"]
               == "segmentation labels 1, classification labels 2, repeat 0"
               for d in inputs.values())
    history = client.get_metric_history(run.info.run_id, "val_score")
    assert [m.step for m in history] == [2, 4]  # x = optimiser steps done (2 epochs of 2 steps)
    logged = pd.read_csv(run_dir / "history.csv")
    assert [m.value for m in history] == pytest.approx(logged["val_score"].tolist())
    assert logged["val_bridge_logit_change"].gt(0).all()  # a bridge model: zeroing its saliency changes masks


def test_system_metrics_are_logged_when_asked(tmp_path, tiny_project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    import mlflow

    for asked in (True, False):
        folder = linked_data(tiny_project, tmp_path / str(asked))
        cfg = load_config(tiny_params(folder, epochs=2, steps_per_epoch=6, system_metrics=asked))
        summary = train(cfg, "multimix-s1-c2-r0", show_progress=False, log=lambda *_: None)
        metrics = mlflow.get_run(summary["mlflow_run_id"]).data.metrics
        system = {k for k in metrics if k.startswith("system/")}
        assert bool(system) == asked, system
        if asked:
            assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system


def test_every_preset_runs_through_train_and_best_pt_is_the_best_epoch(project, monkeypatch):
    import contextlib

    from multimix.methods.multimix.training import validate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    cfg = load_config(tiny_params(project, epochs=3, steps_per_epoch=1))
    splits = json.loads((project / "splits" / "splits.json").read_text())
    for name in run_names(cfg):
        summary = train(cfg, name, show_progress=False, log=lambda *_: None)
        history = pd.read_csv(project / "runs" / name / "history.csv")
        assert summary["epochs_done"] == 3 and list(history["step"]) == [1, 2, 3]
        # the selection rule over the recorded epochs picks the epoch best.pt holds
        ranked = history.sort_values(["val_score", "val_loss"], ascending=[False, True], kind="stable")
        assert summary["best_epoch"] == ranked.iloc[0]["epoch"]
        best = torch.load(project / "runs" / name / "best.pt", weights_only=True)
        assert best["epoch"] == summary["best_epoch"]
        spec = run_spec_of(cfg, name)
        model = MultiMixNet(bridge=spec.variant.bridge, saliency_norm=best["saliency_norm"])
        model.load_state_dict(best["model"])
        again = validate(model, Streams(cfg, spec, splits, spec.variant.streams), torch.device("cpu"),
                         contextlib.nullcontext)
        assert again["val_score"] == pytest.approx(ranked.iloc[0]["val_score"])  # best.pt is that epoch's weights
        assert "scaler" in torch.load(project / "checkpoints" / name / "last.pt", weights_only=True)["state"]  # fp16


def run_spec_of(cfg, name):
    from multimix.study import find_run

    return find_run(cfg, name)


def weights(path):
    ckpt = torch.load(path, weights_only=True)
    return ckpt["state"]["model"] if "state" in ckpt else ckpt["model"]  # last.pt or best.pt


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_after_kill_equals_uninterrupted(tmp_path, tiny_project, precision):
    """SIGKILL a run mid-training; resuming must end with bit-identical weights, in each precision."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    dirs = {}
    for case in ("straight", "killed"):
        dirs[case] = linked_data(tiny_project, tmp_path / case)
        # two epochs: the kill lands in the second, after the first one's checkpoint
        tiny_params(dirs[case], epochs=2, steps_per_epoch=3, precision=precision)
    cmd = [sys.executable, "-m", "multimix", "-q", "train", "--run", "umtl_ssl_s-s1-c2-r0"]
    subprocess.run(cmd, cwd=dirs["straight"], env=env, check=True, capture_output=True)

    last = dirs["killed"] / "checkpoints" / "umtl_ssl_s-s1-c2-r0" / "last.pt"
    proc = subprocess.Popen(cmd, cwd=dirs["killed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline:  # killed during the second epoch
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(last, weights_only=True)["epoch"] < 1, "the run finished before it could be killed"
    resumed = subprocess.run(cmd, cwd=dirs["killed"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = weights(dirs["straight"] / "checkpoints" / "umtl_ssl_s-s1-c2-r0" / "last.pt")
    b = weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(last, weights_only=True)["epoch"] == 1


def test_changed_parameters_do_not_resume(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    messages = []
    cfg = load_config(tiny_params(project, epochs=1, steps_per_epoch=1))
    train(cfg, "enc-c2-r0", show_progress=False, log=messages.append)
    cfg = load_config(tiny_params(project, epochs=1, steps_per_epoch=1, lr=5e-4))
    train(cfg, "enc-c2-r0", show_progress=False, log=messages.append)
    assert any("starting afresh" in m for m in messages)


def test_unknown_run_is_a_clear_error(project):
    from multimix.errors import InputError

    cfg = load_config(project / "params.yaml")
    with pytest.raises(InputError, match="study 'tiny' has no run 'nope'"):
        train(cfg, "nope", use_mlflow=False)
    bad = yaml.safe_load((project / "params.yaml").read_text())
    bad["study"]["presets"]["multitask"] = ["vnet"]
    (project / "params.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match="study.presets.multitask has 'vnet'; expected presets among"):
        load_config(project / "params.yaml")


# ---- MultiMix's saliency scored against the pneumonia phantoms' known opacities

SALIENCY_STUDY = {"name": "tiny-saliency", "repeats": [0], "presets": {"multitask": ["multimix"]},
         "multitask_labels": [{"segmentation": 1, "classification": 2}]}


def test_opacity_masks_exist_for_exactly_the_pneumonia_phantoms_and_sit_on_their_opacities(project):
    """The pneumonia phantoms' opacity masks (evaluation only), on the processed grid."""
    cfg = load_config(tiny_params(project, study=SALIENCY_STUDY))
    partitions = json.loads((project / "splits" / "splits.json").read_text())["partitions"]["chex"]
    ids = [image_id for part in partitions.values() for image_id in part]
    data = open_images(cfg.processed_dir, "chex", ids, masks=False)
    manifest = read_manifest(cfg.interim_dir / "manifest.csv").set_index("id")
    lesions = phantom_lesions(manifest, cfg.raw_dir / "chex", data.ids, cfg.preprocess.size, cfg.preprocess.aspect)
    pneumonia = {image_id for image_id, label in zip(data.ids, data.labels) if label == 1}
    assert pneumonia and set(lesions) == pneumonia
    on, mirrored_on = [], []
    for index, image_id in enumerate(data.ids):
        if image_id not in lesions:
            continue
        lesion, image = lesions[image_id], data[index]["image"][0].numpy()
        assert lesion.shape == image.shape and 0 < lesion.mean() < 0.5
        on.append(image[lesion].mean())
        mirrored_on.append(image[lesion[:, ::-1] & ~lesion].mean())
    # the opacities are denser than the same place in the other lung (the mask mirrored
    # left-right), on average over the phantoms: the mask lies on them, not flipped or on another
    # grid. One image alone can fail it, where the mirror lands on the denser heart border.
    assert np.mean(on) > np.mean(mirrored_on) + 0.05


def test_real_sources_have_no_masks_and_nothing_is_scored(project, tmp_path):
    cfg = load_config(tiny_params(project, study=SALIENCY_STUDY))
    manifest = read_manifest(cfg.interim_dir / "manifest.csv").set_index("id")
    ids = list(manifest.index[manifest["dataset"] == "chex"])
    assert phantom_lesions(manifest, tmp_path / "elsewhere", [], 64, "squash") == {}
    copy = manifest.copy()
    copy["image_path"] = [str(tmp_path / "real" / "chest_xray" / "x.jpeg")] * len(copy)
    assert phantom_lesions(copy, tmp_path / "real", ids, 64, "squash") == {}


def test_evaluate_scores_the_saliency_of_the_pneumonia_phantoms(project, monkeypatch):
    monkeypatch.chdir(project)  # evaluate.dir is relative: data/eval
    cfg = load_config(tiny_params(project, study=SALIENCY_STUDY, epochs=1, steps_per_epoch=2))
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


# ------------------------------------------------------------------ training streams on the device
def test_streams_kept_on_the_device_give_the_loaders_batches(project):
    """train.data_on_device: the same batches as the HDF5 DataLoader (float32 exactly; float16
    rounded to 11 significant bits), and `auto` keeps the DataLoader on a CPU."""
    from multimix.streams import data_dtype

    cfg = load_config(project / "params.yaml")
    spec = RunSpec("x", "multimix", "1", "2", 0)
    splits = json.loads((project / "splits" / "splits.json").read_text())
    streams = Streams(cfg, spec, splits, MULTIMIX_PRESETS["multimix"].streams)
    assert data_dtype("auto", torch.device("cpu"), streams.train) is None
    assert data_dtype("float16", torch.device("cpu"), streams.train) == torch.float16

    def epoch(streams, number):
        loaders = streams.loaders(cfg, spec, number, 3)
        return [dict(zip(loaders, parts)) for parts in zip(*loaders.values())]

    from_files = [epoch(streams, n) for n in (0, 1)]
    streams.keep_on_device(torch.device("cpu"), torch.float32)
    on_device = [epoch(streams, n) for n in (0, 1)]
    assert from_files[0] != [] and from_files[0][0].keys() == {"seg_l", "seg_u", "cls_l", "cls_u"}
    for a_epoch, b_epoch in zip(from_files, on_device):
        for a, b in zip(a_epoch, b_epoch, strict=True):
            for name in a:
                assert a[name].keys() == b[name].keys()
                assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
                assert all(a[name][k].dtype == b[name][k].dtype for k in a[name]), name
    size = streams.keep_on_device(torch.device("cpu"), torch.float16)
    half = epoch(streams, 0)
    assert size < 0.55 * sum(4 * t.numel() for r in streams.resident.values() for t in r.tensors.values()
                             if t.is_floating_point())  # about half of float32 (masks are float too)
    for a, b in zip(from_files[0], half):
        for name in a:
            assert torch.allclose(a[name]["image"], b[name]["image"], atol=2 ** -11, rtol=0)
            assert torch.equal(a[name]["label"], b[name]["label"])
            if "mask" in a[name]:
                assert torch.equal(a[name]["mask"], b[name]["mask"])


def test_a_training_with_its_streams_on_the_device_equals_one_through_the_loader(tmp_path, tiny_project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    got = {}
    for setting in ("off", "float32"):
        folder = linked_data(tiny_project, tmp_path / setting)
        messages = []
        train(load_config(tiny_params(folder, epochs=2, steps_per_epoch=2, data_on_device=setting)),
              "multimix-s1-c2-r0", show_progress=False, log=messages.append, use_mlflow=False)
        assert any("training streams on cpu" in m for m in messages) == (setting == "float32"), messages
        got[setting] = weights(folder / "runs" / "multimix-s1-c2-r0" / "best.pt")
    assert all(torch.equal(got["off"][k], got["float32"][k]) for k in got["off"])


def test_evaluation_summaries_become_flat_mlflow_metric_names():
    from multimix.evaluation import metric_names

    summary = {"jsrt": {"domain": "in-domain", "task": "segmentation", "dice": 0.9, "images": 3},
               "auc": {"Pleural Effusion": 0.7, "Edema": float("nan")}, "mean_auc": 0.7, "ok": True}
    assert metric_names(summary) == {"test_jsrt_dice": 0.9, "test_jsrt_images": 3.0,
                                     "test_auc_Pleural_Effusion": 0.7, "test_mean_auc": 0.7}
