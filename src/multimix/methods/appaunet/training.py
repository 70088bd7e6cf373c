"""Seed 003 (Imran & Terzopoulos, MLMI 2019) as one training method: a
segmentor trained with one segmentation loss, alone (`<segmentor>_<loss>`,
the paper's Table 1) or adversarially with an (n+1)-class discriminator that
also classifies the disease (`appaunet_<loss>`, APPAU-Net, Table 2).

Networks (`multimix.methods.appaunet.network`): the segmentor S (U-Net, Attention U-Net
or PPAU-Net) and, for APPAU-Net, the discriminator D(image, mask) -> n + 1
logits: the n disease classes of the segmentation source (e.g. JSRT: no
nodule / nodule) and class n+1 = "the mask was predicted by S".

Streams: `seg_l`, the labelled images (image, lung mask, class label), and
for APPAU-Net `seg_u`, the unlabelled images of the same source (the image
only). One step is Algorithm 1's two updates on the same batches:

  1. D (Adam, `seed003.lr_discriminator`), S's output detached (S(x) is computed
     once per step and read by both updates: S does not change in between):
       Eq. 6  -log p(z = class | x_l, y_l)        labelled real pairs, true class
       Eq. 7  -log (1 - p(z = n+1 | x_l, y_l))    real pairs are not "predicted"
       Eq. 8  -log p(z = n+1 | x, S(x))           predicted pairs, x in l and u
  2. S (Adam, `seed003.lr_segmentor`), D's parameters frozen:
       Eq. 1  sum_i w_i L_seg(side_i, y_l)         labelled images, deep supervision
       + c *  Eq. 5  -log (1 - p(z = n+1 | x, S(x)))   x in l and u
     so the discriminator's update never reaches S, and S's only gradient from
     D is Eq. 5's, through D's input.

`-log(1 - p(z = n+1))` is computed as logsumexp over all n+1 logits minus
logsumexp over the n real ones (no 1 - p underflow). The masks D sees are
probabilities: sigmoid(S(x)) for predictions, {0, 1} for real masks.

At test time the class is D's arg-max over the n real classes for
(x, sigmoid(S(x))). The segmentation-only presets build no D and read only
`seg_l`. Batch norm is in train mode in both updates (the paper's networks
have it everywhere but the side outputs); D's dropout is `seed003.discriminator_dropout` (0.4).
Validation on the source's val set: Dice of S (`val_dice`), and for APPAU-Net
D's accuracy (`val_accuracy`); `val_score` is their mean, `val_loss` the
segmentation loss (+ D's cross-entropy over the real classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from multimix import augment, losses
from multimix.data import layout
from multimix.methods.base import Method, RunSpec
from multimix.methods.appaunet.network import Discriminator, PyramidAttentionUNet, build_segmentor
from multimix.methods.appaunet.presets import PRESETS, SegmentorVariant
from multimix.streams import Streams

if TYPE_CHECKING:
    from multimix.config import Config


# ------------------------------------------------------------------ the loss terms
def log_not_predicted(logits: torch.Tensor) -> torch.Tensor:
    """log(1 - p(z = n+1)) per row, from n+1 logits (the last one is "predicted")."""
    logits = logits.float()
    return torch.logsumexp(logits[:, :-1], dim=1) - torch.logsumexp(logits, dim=1)


def discriminator_losses(real_logits: torch.Tensor, labels: torch.Tensor, fake_logits: torch.Tensor) -> dict:
    """Eqs. 6, 7 and 8 (means over their pairs)."""
    predicted = fake_logits.shape[1] - 1
    return {
        "supervised": F.cross_entropy(real_logits.float(), labels),  # Eq. 6
        "real": -log_not_predicted(real_logits).mean(),  # Eq. 7
        "predicted": F.cross_entropy(fake_logits.float(), torch.full((len(fake_logits),), predicted,  # Eq. 8
                                                                     dtype=torch.long, device=fake_logits.device)),
    }


def adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 5: the segmentor wants its pairs taken for real ones."""
    return -log_not_predicted(fake_logits).mean()


def class_logits(d_logits: torch.Tensor) -> torch.Tensor:
    """The n real classes' logits (test-time classification ignores class n+1)."""
    return d_logits[:, :-1]


@dataclass
class Prediction:
    """What the shared test-set evaluation reads (`multimix.testsets`)."""

    logits: torch.Tensor | None  # (B, n) class logits, None for segmentation-only presets
    mask_logits: torch.Tensor | None
    saliency: torch.Tensor | None = None


class Predictor(torch.nn.Module):
    """Trained S (and D) behind the interface of the shared test-set evaluation (`multimix.testsets`)."""

    def __init__(self, segmentor: PyramidAttentionUNet, discriminator: Discriminator | None):
        super().__init__()
        self.segmentor, self.discriminator = segmentor, discriminator

    def forward(self, x: torch.Tensor, with_decoder: bool = True, with_classifier: bool = True) -> Prediction:
        mask_logits = self.segmentor(x).mask_logits
        logits = None
        if with_classifier and self.discriminator is not None:
            logits = class_logits(self.discriminator(x, torch.sigmoid(mask_logits)))
        return Prediction(logits=logits, mask_logits=mask_logits if with_decoder else None)

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """|d (predicted-class logit) / d x| through S and D (|d sum of mask logits / d x| without D)."""
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            out = self(x)
            if out.logits is not None:
                score = out.logits.gather(1, out.logits.argmax(1, keepdim=True)).sum()
            else:
                score = out.mask_logits.sum()
            (grad,) = torch.autograd.grad(score, x)
        return grad.abs()


# ------------------------------------------------------------------ the method
class APPAUNetMethod(Method):
    name = "appaunet"

    def __init__(self, cfg: Config, spec: RunSpec, device, precision=None):
        super().__init__(cfg, spec, device, precision)
        s3 = cfg.seed003
        self.variant: SegmentorVariant = PRESETS[spec.preset]
        self.classes = len(layout.CLASS_NAMES[cfg.split.segmentation_dataset])
        self.segmentor = self.precision.prepare(build_segmentor(self.variant.architecture).to(device))
        betas = (s3.adam_beta1, 0.999)
        self.optimisers = {"segmentor": torch.optim.Adam(self.segmentor.parameters(), lr=s3.lr_segmentor, betas=betas)}
        self.discriminator = None
        if self.variant.adversarial:
            self.discriminator = self.precision.prepare(
                Discriminator(self.classes, dropout=s3.discriminator_dropout).to(device))
            self.optimisers["discriminator"] = torch.optim.Adam(self.discriminator.parameters(),
                                                                lr=s3.lr_discriminator, betas=betas)
        tc = cfg.train
        # one loss scaler per optimiser, active for fp16 only (their states are checkpointed)
        self.scalers = {name: self.precision.grad_scaler() for name in self.optimisers}
        self.schedulers = {name: torch.optim.lr_scheduler.StepLR(opt, step_size=tc.lr_step_epochs, gamma=tc.lr_gamma)
                           for name, opt in self.optimisers.items()}
        self.loss_options = dict(kind=self.variant.loss, alpha=s3.tversky_alpha, beta=s3.tversky_beta,
                                 kl_weight=s3.kl_weight, tversky_weight=s3.tversky_weight, eps=s3.eps)

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        nets = {"segmentor": self.segmentor}
        if self.discriminator is not None:
            nets["discriminator"] = self.discriminator
        return nets

    @property
    def streams(self) -> tuple[str, ...]:
        return self.variant.streams

    def parameter_count(self) -> int:
        return sum(p.numel() for net in self.networks.values() for p in net.parameters())

    def open_streams(self, splits: dict) -> Streams:
        return Streams(self.cfg, self.spec, splits, self.streams)

    def train_mode(self) -> None:
        for net in self.networks.values():
            net.train()

    def segmentation_loss(self, out, masks: torch.Tensor) -> torch.Tensor:
        """Eq. 1 over the side outputs (PPAU-Net), or the loss of the one output."""
        if out.side_logits:
            return losses.deep_supervision_loss(out.side_logits, masks, self.cfg.seed003.side_weights,
                                                **self.loss_options)
        return losses.segmentation_loss(out.mask_logits, masks, **self.loss_options)

    def step(self, batch: dict, gen: torch.Generator, epoch: int) -> dict[str, float]:
        x_l, y_l = augment.weak(batch["seg_l"]["image"], gen, batch["seg_l"]["mask"])
        terms: dict[str, float] = {}
        if self.discriminator is None:
            with self.amp():
                loss = self.segmentation_loss(self.segmentor(x_l), y_l)
            self._update("segmentor", loss)
            return {"loss_seg": loss.item(), "loss_total": loss.item()}

        z_l = batch["seg_l"]["label"]
        if (z_l < 0).any() or (z_l >= self.classes).any():
            raise ValueError(f"APPAU-Net needs class labels 0..{self.classes - 1} for the labelled "
                             f"{self.cfg.split.segmentation_dataset} images; got {sorted(set(z_l.tolist()))}")
        x = torch.cat([x_l, augment.weak(batch["seg_u"]["image"], gen)])
        # S's output, computed once: S does not change during D's update, so both updates read the same
        # S(x) (one forward pass, and batch norm's running statistics move once per step)
        with self.amp():
            out = self.segmentor(x)
            predicted = torch.sigmoid(out.mask_logits.float())
        # 1. the discriminator, on real pairs and on S's predictions, detached
        with self.amp():
            real = self.discriminator(x_l, y_l.float())
            fake = self.discriminator(x, predicted.detach())
            d_terms = discriminator_losses(real, z_l, fake)
            d_loss = d_terms["supervised"] + d_terms["real"] + d_terms["predicted"]
        self._update("discriminator", d_loss)
        # 2. the segmentor: its loss on labelled images + c * Eq. 5 through the updated D; D's weights frozen
        self.discriminator.requires_grad_(False)
        try:
            with self.amp():
                seg = self.segmentation_loss(_rows(out, slice(0, len(x_l))), y_l)
                adv = adversarial_loss(self.discriminator(x, predicted))
                s_loss = seg + self.cfg.seed003.adversarial_weight * adv
            self._update("segmentor", s_loss)
        finally:
            self.discriminator.requires_grad_(True)
        terms.update(loss_seg=seg.item(), loss_adversarial=adv.item(), loss_d_supervised=d_terms["supervised"].item(),
                     loss_d_real=d_terms["real"].item(), loss_d_predicted=d_terms["predicted"].item(),
                     loss_discriminator=d_loss.item(), loss_total=s_loss.item())
        return terms

    def _update(self, name: str, loss: torch.Tensor) -> None:
        optimiser, scaler = self.optimisers[name], self.scalers[name]
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    def end_epoch(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimisers["segmentor"].param_groups[0]["lr"]

    def predictor(self) -> Predictor:
        return Predictor(self.segmentor, self.discriminator)

    @torch.no_grad()
    def validate(self, streams) -> dict[str, float]:
        for net in self.networks.values():
            net.eval()
        data = streams.val["seg"]
        dices, seg_loss, correct, ce, n = [], 0.0, 0, 0.0, 0
        for batch in DataLoader(data, batch_size=10, shuffle=False):
            x, masks = batch["image"].to(self.device), batch["mask"].to(self.device)
            with self.amp():
                out = self.segmentor(x)
                # D's classes from the same segmentor output, as Predictor computes them
                logits = None if self.discriminator is None else \
                    class_logits(self.discriminator(x, torch.sigmoid(out.mask_logits)))
            dices.append(losses.dice_scores(out.mask_logits.float(), masks).cpu())
            seg_loss += self.segmentation_loss(out, masks).item() * len(x)
            if logits is not None:
                y = batch["label"].to(self.device)
                correct += (logits.argmax(1) == y).sum().item()
                ce += F.cross_entropy(logits.float(), y, reduction="sum").item()
            n += len(x)
        self.train_mode()
        metrics = {"val_dice": torch.cat(dices).mean().item(), "val_loss_seg": seg_loss / n}
        if self.discriminator is not None:
            metrics.update(val_accuracy=correct / n, val_loss_cls=ce / n)
        metrics["val_score"] = float(np.mean([metrics[k] for k in ("val_dice", "val_accuracy") if k in metrics]))
        metrics["val_loss"] = float(sum(metrics[k] for k in ("val_loss_seg", "val_loss_cls") if k in metrics))
        return metrics

    # -- checkpoints ----------------------------------------------------------
    def state(self) -> dict:
        state = {f"net_{k}": v.state_dict() for k, v in self.networks.items()}
        state |= {f"optimizer_{k}": v.state_dict() for k, v in self.optimisers.items()}
        state |= {f"scheduler_{k}": v.state_dict() for k, v in self.schedulers.items()}
        state |= {f"scaler_{k}": v.state_dict() for k, v in self.scalers.items()}
        return state

    def load_state(self, state: dict) -> None:
        for k, net in self.networks.items():
            net.load_state_dict(state[f"net_{k}"])
        for k in self.optimisers:
            self.optimisers[k].load_state_dict(state[f"optimizer_{k}"])
            self.schedulers[k].load_state_dict(state[f"scheduler_{k}"])
            self.scalers[k].load_state_dict(state[f"scaler_{k}"])

    def weights(self) -> dict:
        return {k: {n: t.detach().clone() for n, t in net.state_dict().items()} for k, net in self.networks.items()}

    def load_weights(self, weights: dict) -> None:
        for k, net in self.networks.items():
            net.load_state_dict(weights[k])

    def checkpoint_meta(self) -> dict:
        return {"method": self.name, "architecture": self.variant.architecture, "classes": self.classes,
                "discriminator_dropout": self.cfg.seed003.discriminator_dropout}

    def figures(self, streams, out_dir: Path, count: int) -> list[Path]:
        return save_figures(self.predictor(), streams, out_dir, self.device, count, self.spec,
                            layout.CLASS_NAMES[self.cfg.split.segmentation_dataset])


def _rows(out, rows: slice):
    """The segmentor output of a slice of the batch (side outputs too)."""
    return type(out)(out.mask_logits[rows], [s[rows] for s in out.side_logits])


def save_figures(predictor: Predictor, streams, out_dir: Path, device, count: int, spec: RunSpec,
                 class_names) -> list[Path]:
    """Predicted vs reference lung boundaries (and D's class) on a few validation images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    data = streams.val["seg"]
    n = min(count, len(data))
    if n == 0:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = next(iter(DataLoader(data, batch_size=n, shuffle=False)))
    predictor.eval()
    with torch.no_grad():
        out = predictor(batch["image"].to(device))
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.6), squeeze=False)
    for i in range(n):
        image = batch["image"][i, 0].numpy()
        overlay = np.stack([image] * 3, -1)
        overlay[find_boundaries(batch["mask"][i, 0].numpy() > 0.5)] = [0, 1, 0]  # reference green
        overlay[find_boundaries((out.mask_logits[i, 0] > 0).cpu().numpy())] = [1, 0, 0]  # prediction red
        axes[0, i].imshow(overlay)
        title = "reference green, prediction red"
        if out.logits is not None:
            truth = class_names[int(batch["label"][i])]
            title += f"\nD: {class_names[int(out.logits[i].argmax())]} (true {truth})"
        axes[0, i].set_title(title, fontsize=6)
        axes[0, i].axis("off")
    fig.suptitle(f"{spec.name} — validation images", fontsize=8)
    fig.tight_layout()
    path = out_dir / "seg_val_boundaries.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def load_predictor(best: dict, device) -> Predictor:
    """The networks of a best.pt, in eval mode, for evaluation."""
    segmentor = build_segmentor(str(best["architecture"])).to(device)
    segmentor.load_state_dict(best["segmentor"])
    discriminator = None
    if "discriminator" in best:
        discriminator = Discriminator(int(best["classes"]), dropout=float(best["discriminator_dropout"])).to(device)
        discriminator.load_state_dict(best["discriminator"])
    return Predictor(segmentor, discriminator).eval()
