"""Seed 003's parameters: the `seed003` section and its checks."""

from __future__ import annotations

from dataclasses import dataclass

from multimix.errors import InputError


@dataclass(frozen=True)
class Seed003Config:
    """Seed 003's losses and adversarial training (presets `<segmentor>_<loss>`, `appaunet_<loss>`).

    The paper gives none of a, b, alpha, beta, c or w_i: these are our choices
    (docs/methods/appaunet.md). Its optimiser settings are the defaults."""

    tversky_alpha: float = 0.3  # Eq. 4: weight of false positives
    tversky_beta: float = 0.7  # weight of false negatives (the paper weighs them higher)
    kl_weight: float = 1.0  # a: |KL| term of KLTV (Eq. 3), a mean over pixels
    tversky_weight: float = 1.0  # b: Tversky term of KLTV
    eps: float = 1.0e-6  # clamp of y and p inside |KL|'s logarithms
    # w_i of Eq. 1 over PPAU-Net's side outputs, finest (the segmentation) first
    side_weights: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    adversarial_weight: float = 0.1  # c: weight of Eq. 5 in the segmentor's loss
    lr_segmentor: float = 1.0e-5
    lr_discriminator: float = 1.0e-4
    adam_beta1: float = 0.9  # "momentum 0.9"
    discriminator_dropout: float = 0.4



def validate(cfg, where: str) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise InputError(f"{where}: {message}")

    s3 = cfg.seed003
    for name in ("tversky_alpha", "tversky_beta", "kl_weight", "tversky_weight", "adversarial_weight"):
        need(getattr(s3, name) >= 0, f"seed003.{name} is {getattr(s3, name)!r}; expected a number >= 0")
    need(0 < s3.eps < 0.5, f"seed003.eps is {s3.eps!r}; expected a number in (0, 0.5)")
    need(len(s3.side_weights) >= 1 and all(w >= 0 for w in s3.side_weights),
         f"seed003.side_weights is {list(s3.side_weights)}; expected numbers >= 0, the segmentation's first")
    need(s3.lr_segmentor > 0 and s3.lr_discriminator > 0, "seed003.lr_segmentor and lr_discriminator must be > 0")
    need(0 <= s3.adam_beta1 < 1, f"seed003.adam_beta1 is {s3.adam_beta1!r}; expected a number in [0, 1)")
    need(0 <= s3.discriminator_dropout < 1,
         f"seed003.discriminator_dropout is {s3.discriminator_dropout!r}; expected a number in [0, 1)")
