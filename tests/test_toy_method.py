"""A fourth method costs one folder: a toy method in a package of its own, registered by an entry
point (as another project would install it), runs through study expansion, training, evaluation
and the report — by the `multimix` commands, with no shared file touched
(docs/adding-a-method.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from test_training import tiny_params, tiny_project, linked_data  # noqa: F401  (module fixture, reused)

TOY = '''
"""A toy segmentation method: per-pixel logistic regression on the intensity (two weights)."""

from dataclasses import dataclass

from multimix.methods.base import MethodPlugin


@dataclass(frozen=True)
class ToyVariant:
    segmentation: bool = True
    classification: bool = False
    tasks: str = "segmentation"  # listed under study.presets.segmentation
    method: str = "toy"
    streams: tuple = ("seg_l",)


@dataclass(frozen=True)
class ToyConfig:
    lr: float = 0.5


class ToyPlugin(MethodPlugin):
    name = "toy"
    presets = {"toy_threshold": ToyVariant()}
    sections = {"toy": ToyConfig}
    test_set_results = True

    def validate(self, cfg, where):
        from multimix.errors import InputError

        if cfg.toy.lr <= 0:
            raise InputError(f"{where}: toy.lr is {cfg.toy.lr!r}; expected a number > 0")

    def trainer(self, spec):
        from toy_method.training import ToyMethod

        return ToyMethod

    def load_predictor(self, best, device):
        from toy_method.training import Pixelwise

        net = Pixelwise().to(device)
        net.load_state_dict(best["net"])
        return net.eval()

    def evaluate(self, cfg, spec, device):
        from multimix import testsets

        return testsets.evaluate(cfg, spec, self.load_best(cfg, spec, device), device)

    def summary_lines(self, run, summary):
        return [f"{run} — {dataset}: Dice {values['dice']:.4f}" for dataset, values in summary.items()]

    def report(self, cfg, runs, out):
        from multimix import tables, testsets

        summary, _, _ = testsets.load_results(cfg, runs)
        table = summary.groupby("dataset")["dice"].mean().reset_index() if len(summary) else pd.DataFrame()
        return [tables.write_table(cfg, out, "toy", "The toy method", "", table, empty="No toy runs.\\n")]


import pandas as pd  # noqa: E402

PLUGIN = ToyPlugin()
'''

TRAINING = '''
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from multimix import losses
from multimix.methods.base import Method
from multimix.streams import Streams


@dataclass
class Output:
    logits: object
    mask_logits: object
    saliency: object = None


class Pixelwise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(-1.0))
        self.bias = torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, x, with_decoder=True, with_classifier=True):
        return Output(logits=None, mask_logits=self.weight * 10 * (x - 0.5) + self.bias)

    def saliency(self, x):
        return torch.full_like(x, float(self.weight.abs()))


class ToyMethod(Method):
    name = "toy"

    def __init__(self, cfg, spec, device, precision=None):
        super().__init__(cfg, spec, device, precision)
        self.net = Pixelwise().to(device)
        self.optimiser = torch.optim.SGD(self.net.parameters(), lr=cfg.toy.lr)

    streams = ("seg_l",)

    def parameter_count(self):
        return 2

    def open_streams(self, splits):
        return Streams(self.cfg, self.spec, splits, self.streams)

    def train_mode(self):
        self.net.train()

    def step(self, batch, gen, epoch):
        x, masks = batch["seg_l"]["image"].to(self.device), batch["seg_l"]["mask"].to(self.device)
        loss = F.binary_cross_entropy_with_logits(self.net(x).mask_logits, masks)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        return {"loss_total": float(loss)}

    @property
    def lr(self):
        return self.cfg.toy.lr

    @torch.no_grad()
    def validate(self, streams):
        dices, bce = [], 0.0
        for batch in DataLoader(streams.val["seg"], batch_size=10):
            logits = self.net(batch["image"]).mask_logits
            dices.append(losses.dice_scores(logits, batch["mask"]))
            bce += float(F.binary_cross_entropy_with_logits(logits, batch["mask"]))
        return {"val_score": float(torch.cat(dices).mean()), "val_loss": bce}

    def state(self):
        return {"net": self.net.state_dict(), "optimiser": self.optimiser.state_dict()}

    def load_state(self, state):
        self.net.load_state_dict(state["net"])
        self.optimiser.load_state_dict(state["optimiser"])

    def weights(self):
        return {"net": self.net.state_dict()}

    def load_weights(self, weights):
        self.net.load_state_dict(weights["net"])
'''


def install_toy(folder: Path) -> Path:
    """The toy package and its distribution metadata (an entry point in group multimix.methods),
    importable from `folder`: what `pip install` of another project would leave."""
    package = folder / "toy_method"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(TOY))
    (package / "training.py").write_text(textwrap.dedent(TRAINING))
    info = folder / "toy_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[multimix.methods]\ntoy = toy_method\n")
    return folder


@pytest.fixture
def toy_project(tmp_path, tiny_project):  # noqa: F811
    project = linked_data(tiny_project, tmp_path / "project")
    study = {"name": "toy", "repeats": [0], "segmentation_labels": [1], "classification_labels": [2],
             "multitask_labels": [], "presets": {"segmentation": ["toy_threshold", "unet"]}}
    tiny_params(project, study=study, epochs=2, steps_per_epoch=3)
    return project


def multimix(project: Path, site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    return subprocess.run([str(Path(sys.executable).with_name("multimix")), "-q", *args], cwd=project, env=env,
                          capture_output=True, text=True)


@pytest.mark.heavy
def test_a_method_from_another_package_runs_through_every_stage(toy_project, tmp_path):
    site = install_toy(tmp_path / "site")
    before = {p: p.stat().st_mtime_ns for p in (Path(__file__).parents[1] / "src" / "multimix").rglob("*.py")}

    listed = multimix(toy_project, site, "study", "--names")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["toy_threshold-s1-r0", "unet-s1-r0"]
    for run in ("toy_threshold-s1-r0", "unet-s1-r0"):
        for stage in ("train", "evaluate"):
            done = multimix(toy_project, site, stage, "--run", run)
            assert done.returncode == 0, f"{stage} {run}: {done.stderr[-2000:]}"
    evaluated = multimix(toy_project, site, "evaluate", "--run", "toy_threshold-s1-r0")
    assert "toy_threshold-s1-r0 — jsrt: Dice" in evaluated.stdout  # the method's own summary line
    best = json.loads((toy_project / "runs" / "toy_threshold-s1-r0" / "metrics.json").read_text())
    assert best["epochs_done"] == 2
    reported = multimix(toy_project, site, "report")
    assert reported.returncode == 0, reported.stderr[-2000:]

    reports = toy_project / "reports"
    assert (reports / "toy.md").read_text().startswith("# The toy method")
    toy = pd.read_csv(reports / "toy.csv")
    assert set(toy["dataset"]) == {"jsrt", "mcu"} and toy["dice"].between(0, 1).all()
    summary = json.loads((reports / "summary.json").read_text())
    assert {"toy_threshold-s1", "unet-s1"} <= set(summary)  # the study's metrics list both methods
    table2 = (reports / "table2_in_domain.md").read_text()
    assert "unet" in table2 and "toy_threshold" not in table2  # MultiMix's table has MultiMix's runs only
    assert list((reports / "figures").glob("dice_distribution.png"))
    # the toy's section is checked like every other: a bad value is a one-line error naming the key
    params = toy_project / "params.yaml"
    params.write_text(params.read_text() + "toy:\n  lr: -1\n")
    bad = multimix(toy_project, site, "study")
    assert bad.returncode == 2 and "toy.lr is -1" in bad.stderr and "Traceback" not in bad.stderr
    after = {p: p.stat().st_mtime_ns for p in (Path(__file__).parents[1] / "src" / "multimix").rglob("*.py")}
    assert after == before  # no shared file was touched


def test_without_its_package_the_method_is_unknown(toy_project, tmp_path):
    result = multimix(toy_project, tmp_path / "empty", "study")
    assert result.returncode == 2 and "toy_threshold" in result.stderr and "Traceback" not in result.stderr
