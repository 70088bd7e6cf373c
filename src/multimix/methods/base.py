"""What a training method provides to the shared loop (after USB's AlgorithmBase).

A method owns its networks, optimisers, learning-rate schedules and loss
scalers, says which streams it reads, and does one optimiser step (or
several, for adversarial methods) per batch. The loop owns everything else —
epochs and budget, seeds, data, validation calls, checkpoints and resume,
MLflow — and never asks which method it runs. Adding a method is a new
module registering a subclass; no other method's file changes.

Checkpoints hold only what `state()` / `weights()` return: plain tensors and
numbers (`torch.load(weights_only=True)` loads them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch

from multimix.config import Config
from multimix.study import RunSpec


class Method:
    """Base class; `multimix.methods.method_class(spec)` picks the subclass of a run."""

    name = "method"

    def __init__(self, cfg: Config, spec: RunSpec, device: torch.device,
                 amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.cfg, self.spec, self.device, self.amp = cfg, spec, device, amp

    # -- what the loop reads -------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        """Training streams read each step (of seg_l, seg_u, cls_l, cls_u)."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        raise NotImplementedError

    def open_streams(self, splits: dict):
        """The run's training streams and validation sets (`streams.Streams` by default: the
        segmentation / classification sources of the split file)."""
        from multimix.training.streams import Streams

        return Streams(self.cfg, self.spec, splits, self.streams)

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
