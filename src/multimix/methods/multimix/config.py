"""MultiMix's parameters: the `multimix` section (the saliency bridge, the loss of Eq. 5 and the
Enc-MixMatch baseline) and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from multimix.errors import InputError


@dataclass(frozen=True)
class LossConfig:
    """The weights of the paper's loss (section 2.4, Eq. 5)."""

    threshold: float = 0.7  # t: pseudo-label confidence
    lambda_u: float = 0.25  # λ: unlabelled classification weight
    alpha: float = 5.0  # α: Dice weight
    beta: float = 0.01  # β: segmentation consistency weight


@dataclass(frozen=True)
class MixMatchConfig:
    """The Enc-MixMatch baseline (Berthelot et al. 2019)."""

    augmentations: int = 2  # K
    temperature: float = 0.5  # T
    alpha: float = 0.75  # Beta(α, α) for MixUp
    lambda_u: float = 75.0
    rampup_epochs: int = 4  # λ_u ramps up linearly over these epochs


@dataclass(frozen=True)
class MultiMixConfig:
    # Per-image scaling of the saliency map before the bridge: none (the
    # reference: raw gradients, ~40x smaller than the image), max (divide by
    # the image's own maximum) or p99 (by its 99th percentile, clipped to 1).
    saliency_norm: Literal["none", "max", "p99"] = "p99"
    loss: LossConfig = field(default_factory=LossConfig)
    mixmatch: MixMatchConfig = field(default_factory=MixMatchConfig)


def validate(cfg, where: str) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise InputError(f"{where}: {message}")

    loss = cfg.multimix.loss
    need(0 <= loss.threshold <= 1, f"multimix.loss.threshold is {loss.threshold!r}; expected a number in [0, 1]")
    for name in ("lambda_u", "alpha", "beta"):
        value = getattr(loss, name)
        need(value >= 0, f"multimix.loss.{name} is {value!r}; expected a number >= 0")
    mm = cfg.multimix.mixmatch
    need(mm.augmentations >= 1 and mm.temperature > 0 and mm.alpha >= 0 and mm.lambda_u >= 0
         and mm.rampup_epochs >= 0, "multimix.mixmatch: augmentations >= 1, temperature > 0, alpha, lambda_u and "
         "rampup_epochs >= 0 expected")
