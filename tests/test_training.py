"""train: every preset learns, resume equals uninterrupted, checkpoints are plain."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from multimix.config import load_config
from multimix.data.harmonise import harmonise, write_outputs
from multimix.data.preprocess import preprocess
from multimix.data.split import write_splits
from multimix.models.multimix import MultiMixNet
from multimix.presets import PRESETS
from multimix.study import RunSpec, run_names
from multimix.training import Streams, train, train_step

from conftest import write_params

STUDY = {"name": "tiny", "repeats": [0], "segmentation_labels": [1], "classification_labels": [2],
         "multitask_labels": [{"segmentation": 1, "classification": 2}],
         "presets": {group: [p for p, v in PRESETS.items() if v.tasks == group]
                     for group in ("segmentation", "classification", "multitask")}}
TRAIN = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "figures": 1}


def tiny_params(folder, study=None, **train):
    return write_params(
        folder,
        preprocess={"size": 64, "processed_dir": str(folder / "processed"), "workers": 1},
        split={"split_dir": str(folder / "splits"), "segmentation_sizes": [1, "full"],
               "classification_sizes": [2, "full"], "repeats": [0]},
        study=study or STUDY,
        train=dict(TRAIN, runs_dir=str(folder / "runs"), **train),
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


@pytest.fixture
def project(tmp_path, tiny_project):
    for name in ("raw", "interim", "processed", "splits"):
        os.symlink(tiny_project / name, tmp_path / name)
    tiny_params(tmp_path)
    return tmp_path


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_lowers_its_loss_on_a_fixed_batch(project, preset):
    cfg = load_config(project / "params.yaml")
    variant = PRESETS[preset]
    spec = RunSpec("x", preset, "full" if variant.segmentation else None, "full" if variant.classification else None, 0)
    streams = Streams(cfg, spec, json.loads((project / "splits" / "splits.json").read_text()))
    batch = {}
    for name, data in streams.train.items():
        items = [data[i % len(data)] for i in range(2)]
        batch[name] = {"image": torch.stack([it["image"] for it in items]),
                       "label": torch.tensor([it["label"] for it in items])}
        if "mask" in items[0]:
            batch[name]["mask"] = torch.stack([it["mask"] for it in items])
    torch.manual_seed(0)
    model = MultiMixNet(bridge=spec.variant.bridge, dropout=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(12):
        loss, terms = train_step(model, batch, spec.variant, cfg, torch.Generator().manual_seed(0), epoch=5)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
        assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert min(history[-3:]) < history[0], history


def test_train_run_logs_to_mlflow_and_writes_plain_checkpoints(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    cfg = load_config(project / "params.yaml")
    summary = train(cfg, "multimix-s1-c2-r0", show_progress=False, log=lambda *_: None)
    run_dir = project / "runs" / "multimix-s1-c2-r0"
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run_dir / name, weights_only=True)  # plain tensors and numbers only
        MultiMixNet(bridge=True).load_state_dict(ckpt["model"])
    assert (run_dir / "metrics.json").exists() and (run_dir / "history.csv").exists()
    assert list((run_dir / "figures").glob("*.png"))
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "multimix-s1-c2-r0" and run.info.status == "FINISHED"
    for key in ("loss_total", "loss_dice", "loss_seg_consistency", "loss_cls_unlabelled", "pseudo_label_rate",
                "lr", "val_dice", "val_accuracy", "images_per_s"):
        assert key in run.data.metrics, key
    assert run.data.params["train.loss.threshold"] == "0.7" and run.data.tags["preset"] == "multimix"
    assert len(run.data.tags["data_digest"]) == 64
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "figures", "config.json"} <= artifacts
    history = client.get_metric_history(run.info.run_id, "val_score")
    assert [m.step for m in history] == [2, 4]  # x = optimiser steps done (2 epochs of 2 steps)
    logged = pd.read_csv(run_dir / "history.csv")
    assert [m.value for m in history] == pytest.approx(logged["val_score"].tolist())
    assert logged["val_bridge_logit_change"].gt(0).all()  # a bridge model: zeroing its saliency changes masks


def test_every_preset_runs_through_train(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    cfg = load_config(tiny_params(project, epochs=1, steps_per_epoch=1))
    for name in run_names(cfg):
        summary = train(cfg, name, show_progress=False, log=lambda *_: None)
        assert summary["epochs_done"] == 1 and summary["best_epoch"] == 0


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_resume_after_kill_equals_uninterrupted(tmp_path, tiny_project):
    """SIGKILL a run mid-training; resuming must end with bit-identical weights."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    dirs = {}
    for case in ("straight", "killed"):
        folder = tmp_path / case
        folder.mkdir()
        for name in ("raw", "interim", "processed", "splits"):
            os.symlink(tiny_project / name, folder / name)
        tiny_params(folder, epochs=3, steps_per_epoch=3)
        dirs[case] = folder
    cmd = [sys.executable, "-m", "multimix", "-q", "train", "--run", "umtl_ssl_s-s1-c2-r0"]
    subprocess.run(cmd, cwd=dirs["straight"], env=env, check=True, capture_output=True)

    last = dirs["killed"] / "runs" / "umtl_ssl_s-s1-c2-r0" / "last.pt"
    proc = subprocess.Popen(cmd, cwd=dirs["killed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline:  # killed during epoch 2, after epoch 1's checkpoint
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(last, weights_only=True)["epoch"] < 2, "the run finished before it could be killed"
    resumed = subprocess.run(cmd, cwd=dirs["killed"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = weights(dirs["straight"] / "runs" / "umtl_ssl_s-s1-c2-r0" / "last.pt")
    b = weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(last, weights_only=True)["epoch"] == 2


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
