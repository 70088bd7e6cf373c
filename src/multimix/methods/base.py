"""What a method provides to the shared stages: a plugin (`MethodPlugin`: its presets,
params sections, runs, evaluation, report and extra commands) and a trainer (`Method`,
after USB's AlgorithmBase). Each method is one folder, `multimix/methods/<name>/`
(docs/adding-a-method.md); the registry (`multimix.methods`) lists them.

A trainer owns its networks, optimisers, learning-rate schedules and loss
scalers (in the run's `Precision`), says which streams it reads, and does one optimiser step (or
several, for adversarial methods) per batch. The loop owns everything else —
epochs and budget, seeds, data, validation calls, checkpoints and resume,
MLflow — and never asks which method it runs. Adding a method is a new
folder; no other method's file and no shared file changes.

Checkpoints hold only what `state()` / `weights()` return: plain tensors and
numbers (`torch.load(weights_only=True)` loads them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from multimix.precision import FP32_CPU, Precision
from multimix.runs import RunSpec

if TYPE_CHECKING:  # types only: config and the stages sit above the methods (tests/test_architecture.py)
    import argparse

    import pandas as pd
    import torch

    from multimix.config import Config


class MethodPlugin:
    """A method as the shared stages see it; one instance per method folder (`PLUGIN` in its
    `__init__.py`), listed by the registry. Everything here is cheap to import: the hooks
    that need torch import the method's own modules when called.

    A preset's variant says which study group lists it (`tasks`: segmentation, classification
    or multitask) — or another value, for runs the method derives from its own study section
    (`runs`) — and which streams it reads."""

    name = "method"
    presets: dict[str, object] = {}
    # top-level params.yaml sections the method owns: name -> frozen dataclass
    sections: dict[str, type] = {}
    # sub-sections of `study` the method owns (e.g. seed 004's `study.chexseg`)
    study_sections: dict[str, type] = {}
    # its own pipeline stages, each a `multimix <command>` (`add_commands`) and a DVC stage /
    # Snakemake rule of that name (seed 004: pseudolabel)
    commands: tuple[str, ...] = ()

    # -- configuration and study -------------------------------------------
    def validate(self, cfg: "Config", where: str) -> None:
        """One-line errors (`InputError`) for values of its sections out of range, and for its
        study section's runs that the split file cannot feed."""

    def runs(self, cfg: "Config") -> list[RunSpec]:
        """Runs beyond the preset x label count x repeat groups (from its study section)."""
        return []

    # -- the split file -------------------------------------------------------
    def subsets(self, cfg: "Config", partitions: dict) -> dict | None:
        """Subsets of its own that `multimix split` draws from the partitions (splits.json's
        `subsets.<name>`; seed 004: the pseudo-labelled and unlabelled CheXpert images), or None."""
        return None

    def describe_subsets(self, info: dict) -> str:
        """One line of `multimix split`'s output for the subsets it drew."""
        return f"{self.name}: subsets {', '.join(sorted(info))}"

    # -- training and evaluation ----------------------------------------------
    def trainer(self, spec: RunSpec) -> type["Method"]:
        raise NotImplementedError

    def load_predictor(self, best: dict, device):
        """The trained networks of a best.pt, ready for evaluation or use."""
        raise NotImplementedError

    def load_best(self, cfg: "Config", spec: RunSpec, device):
        """Run `spec`'s best.pt, read onto `device` as the method's predictor."""
        import torch

        from multimix import paths

        return self.load_predictor(torch.load(paths.best(cfg, spec.name), map_location=device, weights_only=True),
                                   device)

    def evaluate(self, cfg: "Config", spec: RunSpec, device) -> tuple["pd.DataFrame", dict, dict]:
        """(per-image rows, summary per test set, example arrays) of a trained run."""
        raise NotImplementedError

    def predict(self, cfg: "Config", spec: RunSpec, predictor, x: "torch.Tensor") -> dict:
        """What a trained run says of new images (`multimix predict`, the MLflow model): `x` is
        (N, 1, S, S) as the pipeline preprocesses images. Returns numpy arrays and names:
          probabilities (N, C) with class_names (C); masks (N, K, S, S) in [0, 1] with
          mask_names (K); saliency (N, S, S) in [0, 1] — each only where the run has it."""
        raise NotImplementedError

    def summary_lines(self, run: str, summary: dict) -> list[str]:
        """What `multimix evaluate` prints of a run's summary: by default that of the shared test
        sets (`multimix.testsets`), one line per test set."""
        from multimix import testsets

        return testsets.summary_lines(run, summary)

    # -- report and commands --------------------------------------------------
    def report(self, cfg: "Config", runs: list[RunSpec], out: Path) -> list[Path]:
        """The method's tables and figures for its runs of the study (possibly none: files the
        pipeline declares must still be written); returns the paths written."""
        return []

    # Methods scored on the shared test sets (`multimix.testsets`) say so: the report reads
    # their results into the study's summary.json and its shared figures.
    test_set_results = False
    # presets whose examples the shared saliency figures show first
    featured_presets: tuple[str, ...] = ()

    def add_commands(self, subparsers: "argparse._SubParsersAction") -> None:
        """Extra `multimix` sub-commands: parsers whose default `func(args, cfg)` runs them."""


class Method:
    """A trainer; `MethodPlugin.trainer(spec)` picks the subclass of a run."""

    name = "method"

    def __init__(self, cfg: "Config", spec: RunSpec, device: "torch.device", precision: Precision | None = None):
        # The run's numeric precision (multimix/precision.py): forward passes under `self.amp()`,
        # optimiser steps through `self.precision.grad_scaler()`, networks and images in the
        # memory layout of `self.precision.prepare` / `.images`. The same calls on CPU and CUDA.
        self.cfg, self.spec, self.device = cfg, spec, device
        self.precision = precision or FP32_CPU
        self.amp = self.precision.autocast

    # -- what the loop reads -------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        """Training streams read each step (of seg_l, seg_u, cls_l, cls_u)."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        raise NotImplementedError

    def open_streams(self, splits: dict):
        """The run's training streams and validation sets (e.g. `multimix.streams.Streams`: the
        segmentation / classification sources of the split file)."""
        raise NotImplementedError

    def inputs(self) -> list[Path]:
        """Files besides the split file and the sources' HDF5 that the run reads (pseudo-labels,
        another run's weights): part of the fingerprint a checkpoint is resumed by."""
        return []

    # -- one step, one epoch --------------------------------------------------
    def train_mode(self) -> None:
        raise NotImplementedError

    def step(self, batch: dict, gen: torch.Generator, epoch: int) -> dict[str, float]:
        """One optimisation step on one batch of every stream; returns the logged terms
        (`loss_total` among them)."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        """After an epoch's steps (learning-rate schedules)."""

    @property
    def lr(self) -> float:
        raise NotImplementedError

    def validate(self, streams) -> dict[str, float]:
        """Validation metrics; must include `val_score` (higher is better) and `val_loss`
        (lower is better: the tie-breaker of model selection)."""
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to resume (networks, optimisers, schedules, scalers)."""
        raise NotImplementedError

    def load_state(self, state: dict) -> None:
        raise NotImplementedError

    def weights(self) -> dict:
        """The networks alone: what best.pt keeps and evaluation loads."""
        raise NotImplementedError

    def load_weights(self, weights: dict) -> None:
        raise NotImplementedError

    def checkpoint_meta(self) -> dict:
        """Plain values best.pt records beside the weights so that evaluation can rebuild the networks."""
        return {}

    def figures(self, streams, out_dir: Path, count: int) -> list[Path]:
        """A few validation images as the method sees them (saved after training)."""
        return []
