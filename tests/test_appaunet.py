"""Seed 003's method: Algorithm 1's loss terms on hand cases, both networks learn, the
discriminator's update never reaches the segmentor (and S's reaches D only through Eq. 5),
and every seed-003 preset trains through the shared loop and evaluates."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from multimix.config import load_config
from multimix.evaluation import evaluate
from multimix.methods import load_predictor, method_class
from multimix.methods.appaunet.training import (APPAUNetMethod, adversarial_loss, class_logits, discriminator_losses,
                                       log_not_predicted)
from multimix.methods import PRESETS
from multimix.study import RunSpec, run_names
from multimix.training.loop import train
from multimix.streams import Streams

from test_training import tiny_params, tiny_project  # noqa: F401  (module fixture, reused)

SEED003 = sorted(p for p, v in PRESETS.items() if v.method == "appaunet")
STUDY = {"name": "tiny-seed003", "repeats": [0], "segmentation_labels": [1], "classification_labels": [2],
         "multitask_labels": [], "presets": {"segmentation": ["unet_tv", "ppaunet_kltv", "appaunet_kltv"]}}


@pytest.fixture
def project(tmp_path, tiny_project):  # noqa: F811
    for name in ("raw", "interim", "processed", "splits"):
        os.symlink(tiny_project / name, tmp_path / name)
    tiny_params(tmp_path, study=STUDY)
    return tmp_path


# ------------------------------------------------------------------ the loss terms by hand
def test_log_not_predicted_is_log_one_minus_p_of_the_last_class():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
    p_last = torch.softmax(logits, 1)[:, -1]
    assert torch.allclose(log_not_predicted(logits), torch.log(1 - p_last))
    assert log_not_predicted(logits)[0].item() == pytest.approx(math.log(2 / 3))
    # no underflow where the last class is all but certain
    assert torch.isfinite(log_not_predicted(torch.tensor([[-60.0, -60.0, 60.0]]))).all()


def test_discriminator_and_adversarial_losses_on_a_hand_case():
    # n = 2 real classes + "predicted"; uniform logits: every probability is 1/3
    real = torch.zeros(2, 3)
    fake = torch.zeros(4, 3)
    terms = discriminator_losses(real, torch.tensor([0, 1]), fake)
    assert terms["supervised"].item() == pytest.approx(math.log(3))  # Eq. 6: -log 1/3
    assert terms["real"].item() == pytest.approx(-math.log(2 / 3))  # Eq. 7: -log(1 - 1/3)
    assert terms["predicted"].item() == pytest.approx(math.log(3))  # Eq. 8: -log 1/3
    assert adversarial_loss(fake).item() == pytest.approx(-math.log(2 / 3))  # Eq. 5
    # a confident, correct discriminator pays almost nothing; the segmentor it sees through pays a lot
    sure_real = torch.tensor([[9.0, -9.0, -9.0]])
    sure_fake = torch.tensor([[-9.0, -9.0, 9.0]])
    terms = discriminator_losses(sure_real, torch.tensor([0]), sure_fake)
    assert max(t.item() for t in terms.values()) < 1e-3
    assert adversarial_loss(sure_fake).item() > 17


# ------------------------------------------------------------------ steps
def batch_of(project, preset):
    cfg = load_config(project / "params.yaml")
    spec = RunSpec("x", preset, "full", None, 0)
    streams = Streams(cfg, spec, json.loads((project / "splits" / "splits.json").read_text()), spec.variant.streams)
    batch = {}
    for name, data in streams.train.items():
        items = [data[i % len(data)] for i in range(4)]
        batch[name] = {"image": torch.stack([it["image"] for it in items]),
                       "label": torch.tensor([it["label"] for it in items])}
        if "mask" in items[0]:
            batch[name]["mask"] = torch.stack([it["mask"] for it in items])
    return cfg, spec, batch


def snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}


def changed(before, net):
    now = net.state_dict()
    return any(not torch.equal(before[k], now[k]) for k in before)


def test_a_few_steps_change_both_networks_and_lower_their_losses(project):
    cfg, spec, batch = batch_of(project, "appaunet_kltv")
    assert set(batch) == {"seg_l", "seg_u"} and set(batch["seg_l"]["label"].tolist()) <= {0, 1}
    torch.manual_seed(0)
    method = method_class(spec)(cfg, spec, torch.device("cpu"))
    assert isinstance(method, APPAUNetMethod) and method.discriminator is not None
    s0, d0 = snapshot(method.segmentor), snapshot(method.discriminator)
    history = [method.step(batch, torch.Generator().manual_seed(0), epoch=0) for _ in range(8)]
    assert changed(s0, method.segmentor) and changed(d0, method.discriminator)
    expected = {"loss_seg", "loss_adversarial", "loss_d_supervised", "loss_d_real", "loss_d_predicted",
                "loss_discriminator", "loss_total"}
    assert all(set(h) == expected for h in history)
    assert all(np.isfinite(list(h.values())).all() for h in history)
    assert history[-1]["loss_discriminator"] < history[0]["loss_discriminator"]
    assert history[-1]["loss_seg"] < history[0]["loss_seg"]


def test_segmentation_only_presets_have_no_discriminator(project):
    cfg, spec, batch = batch_of(project, "ppaunet_kltv")
    method = method_class(spec)(cfg, spec, torch.device("cpu"))
    assert method.discriminator is None and method.streams == ("seg_l",)
    before = snapshot(method.segmentor)
    terms = method.step(batch, torch.Generator().manual_seed(0), epoch=0)
    assert set(terms) == {"loss_seg", "loss_total"} and changed(before, method.segmentor)


class Recording(APPAUNetMethod):
    """Records which network holds gradient when each optimiser steps, and the loss it steps on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen, self.losses = [], {}

    def _update(self, name, loss):
        self.losses[name] = loss.item()
        for net in self.networks.values():
            net.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        self.seen.append((name, {k: any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
                                 for k, net in self.networks.items()}))
        for net in self.networks.values():
            net.zero_grad(set_to_none=True)
        super()._update(name, loss)


def test_no_gradient_crosses_between_the_updates_except_through_eq5(project):
    cfg, spec, batch = batch_of(project, "appaunet_kltv")
    torch.manual_seed(0)
    method = Recording(cfg, spec, torch.device("cpu"))
    method.step(batch, torch.Generator().manual_seed(0), epoch=0)
    assert method.seen == [("discriminator", {"segmentor": False, "discriminator": True}),
                           ("segmentor", {"segmentor": True, "discriminator": False})]
    # ... and Eq. 5 alone does carry gradient into the segmentor, through D's input
    x = batch["seg_u"]["image"]
    method.segmentor.zero_grad(set_to_none=True)
    method.discriminator.requires_grad_(False)
    adversarial_loss(method.discriminator(x, torch.sigmoid(method.segmentor(x).mask_logits))).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.segmentor.parameters())
    assert all(p.grad is None for p in method.discriminator.parameters())


def test_class_logits_are_the_first_n_of_d_and_the_predictor_reads_them(project):
    """D has n real classes + "predicted" (the last): classification reads the first n."""
    assert class_logits(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist() == [[1.0, 2.0, 3.0]]
    cfg, spec, batch = batch_of(project, "appaunet_kltv")
    method = method_class(spec)(cfg, spec, torch.device("cpu"))
    predictor = method.predictor().eval()
    x = batch["seg_u"]["image"]
    with torch.no_grad():
        d = method.discriminator.eval()(x, torch.sigmoid(method.segmentor.eval()(x).mask_logits))
        assert torch.equal(predictor(x).logits, d[:, :2])


@pytest.mark.parametrize("c", [0.0, 0.37, 2.0])
def test_d_steps_on_eqs_6_7_8_and_s_on_its_loss_plus_c_times_eq5(project, c):
    """The losses the two optimisers step on: D on Eq. 6 + Eq. 7 + Eq. 8, S on L_seg + c * Eq. 5, with
    c = seed003.adversarial_weight (so a dropped term or an ignored c changes the numbers)."""
    cfg, spec, batch = batch_of(project, "appaunet_kltv")
    cfg = dataclasses.replace(cfg, seed003=dataclasses.replace(cfg.seed003, adversarial_weight=c))
    torch.manual_seed(0)
    method = Recording(cfg, spec, torch.device("cpu"))
    terms = method.step(batch, torch.Generator().manual_seed(0), epoch=0)
    assert min(terms["loss_d_supervised"], terms["loss_d_real"], terms["loss_d_predicted"]) > 1e-3
    assert method.losses["discriminator"] == pytest.approx(
        terms["loss_d_supervised"] + terms["loss_d_real"] + terms["loss_d_predicted"], rel=1e-6)
    assert terms["loss_adversarial"] > 1e-3
    assert method.losses["segmentor"] == pytest.approx(terms["loss_seg"] + c * terms["loss_adversarial"], rel=1e-6)


def test_the_side_weights_of_the_params_reach_eq1(project, monkeypatch):
    """PPAU-Net's deep supervision is weighted by seed003.side_weights (Eq. 1), not by a default."""
    from multimix import losses

    cfg, spec, batch = batch_of(project, "ppaunet_kltv")
    weights = (0.9, 0.3, 0.2, 0.1)
    cfg = dataclasses.replace(cfg, seed003=dataclasses.replace(cfg.seed003, side_weights=weights))
    seen = []
    original = losses.deep_supervision_loss

    def recording(side_logits, target, w, **kwargs):
        seen.append((len(side_logits), tuple(w)))
        return original(side_logits, target, w, **kwargs)

    monkeypatch.setattr(losses, "deep_supervision_loss", recording)
    method = method_class(spec)(cfg, spec, torch.device("cpu"))
    terms = method.step(batch, torch.Generator().manual_seed(0), epoch=0)
    assert seen == [(4, weights)]
    # and they weigh the side outputs: the coarsest alone gives another loss
    out = method.segmentor(batch["seg_l"]["image"])
    y = batch["seg_l"]["mask"]
    only_finest = original(out.side_logits, y, (1.0, 0, 0, 0), **method.loss_options)
    assert only_finest.item() != pytest.approx(original(out.side_logits, y, (0, 0, 0, 1.0), **method.loss_options).item())
    assert np.isfinite(terms["loss_seg"])


def test_missing_class_labels_are_a_clear_error(project):
    cfg, spec, batch = batch_of(project, "appaunet_tv")
    batch["seg_l"]["label"] = torch.full_like(batch["seg_l"]["label"], -1)
    method = method_class(spec)(cfg, spec, torch.device("cpu"))
    with pytest.raises(ValueError, match="needs class labels 0..1 for the labelled jsrt images"):
        method.step(batch, torch.Generator().manual_seed(0), epoch=0)


# ------------------------------------------------------------------ through the loop and evaluation
def test_seed003_presets_train_resume_and_evaluate(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.chdir(project)  # evaluate.dir is relative: data/eval
    cfg = load_config(tiny_params(project, study=STUDY, epochs=2, steps_per_epoch=2))
    for name in run_names(cfg):
        summary = train(cfg, name, show_progress=False, log=lambda *_: None)
        assert summary["epochs_done"] == 2 and summary["method"] == "appaunet"
        history = pd.read_csv(project / "runs" / name / "history.csv")
        best = torch.load(project / "runs" / name / "best.pt", weights_only=True)
        predictor = load_predictor(best, torch.device("cpu"))
        adversarial = name.startswith("appaunet")
        assert (predictor.discriminator is not None) == adversarial
        assert ("val_accuracy" in history) == adversarial and history["val_dice"].between(0, 1).all()
        assert (project / "runs" / name / "figures" / "seg_val_boundaries.png").is_file()
        # a second call finds the finished checkpoint and does not train again
        again = train(cfg, name, show_progress=False, log=lambda *_: None)
        assert again["best_epoch"] == summary["best_epoch"]
        metrics = evaluate(cfg, name, use_mlflow=False)
        assert metrics["jsrt"]["task"] == "segmentation" and 0 <= metrics["jsrt"]["dice"] <= 1
        if adversarial:  # D classifies JSRT's own test images (nodule or not), nothing else
            assert metrics["jsrt_classification"]["task"] == "classification"
            assert "chex" not in metrics and "nihx" not in metrics
            per_image = pd.read_csv(project / "data" / "eval" / name / "per_image.csv")
            assert set(per_image["task"]) == {"segmentation", "classification"}
            cls = per_image[per_image.task == "classification"]
            assert set(cls["dataset"]) == {"jsrt"} and cls["probability"].between(0, 1).all()
        else:
            assert set(metrics) <= {"jsrt", "mcu"}
        # `multimix predict` and the MLflow model: the lung mask, and D's classes where there is a D
        from multimix.serving import Bundle

        said = Bundle.from_run(cfg, name).predict(np.full((2, 64, 64), 0.5, np.float32))
        assert said["masks"].shape == (2, 1, 64, 64) and said["mask_names"] == ["lungs"]
        assert ("probabilities" in said) == adversarial == ("saliency" in said)
        if adversarial:
            assert said["class_names"] == ["no nodule", "nodule"] and said["probabilities"].shape == (2, 2)
            assert np.allclose(said["probabilities"].sum(1), 1) and said["saliency"].shape == (2, 64, 64)
    out = predictor(torch.zeros(2, 1, 64, 64))
    assert out.logits.shape == (2, 2) and out.mask_logits.shape == (2, 1, 64, 64)
    assert torch.allclose(F.softmax(out.logits, 1).sum(1), torch.ones(2))


def test_appaunet_on_ccx_three_classes_from_three_sources(tmp_path, tiny_project, monkeypatch):  # noqa: F811
    """Seed 003's CCX: JSRT + Montgomery + Shenzhen images in one stream, classes normal / TB / nodule,
    D with 3 + 1 outputs, evaluated on CCX's own test images with the three-class scores."""
    from multimix.data.split import write_splits

    for name in ("raw", "interim", "processed"):
        os.symlink(tiny_project / name, tmp_path / name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    study = STUDY | {"presets": {"segmentation": ["appaunet_kltv"]}}
    params = tiny_params(tmp_path, study=study, epochs=1, steps_per_epoch=2)
    import yaml

    raw = yaml.safe_load(params.read_text())
    raw["split"]["segmentation_dataset"] = "ccx"
    params.write_text(yaml.safe_dump(raw))
    cfg = load_config(params)
    splits = write_splits(cfg)
    ccx = splits["partitions"]["ccx"]
    assert {i.split("/")[0] for i in ccx["train"] + ccx["test"]} == {"jsrt", "mcu", "shenzhen"}
    spec = RunSpec("appaunet_kltv-s1-r0", "appaunet_kltv", "1", None, 0)
    streams = Streams(cfg, spec, splits, PRESETS["appaunet_kltv"].streams)
    pool = streams.train["seg_l"].labels.tolist() + streams.train["seg_u"].labels.tolist()
    assert set(pool) <= {0, 1, 2} and 2 in pool  # JSRT's nodule is CCX's class 2
    train(cfg, spec.name, show_progress=False, log=lambda *_: None)
    best = torch.load(tmp_path / "runs" / spec.name / "best.pt", weights_only=True)
    assert load_predictor(best, torch.device("cpu"))(torch.zeros(1, 1, 64, 64)).logits.shape == (1, 3)
    metrics = evaluate(cfg, spec.name, use_mlflow=False)
    assert set(metrics) == {"ccx", "ccx_classification"}
    assert metrics["ccx"]["images"] == len(ccx["test"]) and 0 <= metrics["ccx"]["specificity"] <= 1
    cls = metrics["ccx_classification"]
    assert {"accuracy", "precision", "recall", "f1_0", "f1_1", "f1_2", "auc"} <= set(cls)
    per_image = pd.read_csv(tmp_path / "data" / "eval" / spec.name / "per_image.csv")
    rows = per_image[per_image.task == "classification"]
    probabilities = rows[["probability_0", "probability_1", "probability_2"]].to_numpy()
    assert np.allclose(probabilities.sum(1), 1) and (rows["predicted"] == probabilities.argmax(1)).all()
    assert cls["accuracy"] == pytest.approx((rows["predicted"] == rows["label"]).mean())
