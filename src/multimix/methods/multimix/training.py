"""MultiMix and its eight baselines (paper section 3.2) as one training method.

The nine presets of `presets.py` switch one network (`MultiMixNet`):
segmentation, classification, FixMatch- or MixMatch-style SSL, the saliency
bridge and the unlabelled segmentation consistency. A preset reads the
streams it needs (`Variant.streams`), batch `train.batch_size` (10) each.

One training step (the efficient schedule; `bench/train_step.py` compares it
with the reference's):
  classification: the weak view of the unlabelled batch runs the encoder only,
    without gradient, for pseudo-labels; labelled + strong views run the
    encoder only, in one batch;
  segmentation: labelled (+ unlabelled, for the consistency term) images run
    one saliency pass and one encoder-decoder pass, in one batch.
Classification images never touch the decoder or the saliency pass.

Adam (lr `train.lr`) with ×`train.lr_gamma` every `train.lr_step_epochs`
epochs, in the run's precision (`train.precision`: bf16 autocast where the
device runs it fast, fp16 with a loss scaler whose state is checkpointed on
older GPUs, else fp32). Validation in eval mode (dropout off everywhere) on
JSRT val (Dice) and CheX val (accuracy): `val_score` is the mean of the task
scores the preset trains, `val_loss` the sum of its validation losses
(cross-entropy, soft Dice). For bridge models validation also measures the
bridge's sensitivity: the mean |change| of the mask logits, and the change
of Dice, when the saliency channel is replaced by zeros (0 for models
without a bridge).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from multimix import augment, losses
from multimix.methods.base import Method, RunSpec
from multimix.methods.multimix.network import MultiMixNet, parameter_count
from multimix.methods.multimix.presets import PRESETS, Variant
from multimix.runtime import memory_mode
from multimix.streams import Streams

if TYPE_CHECKING:
    from multimix.config import Config


# ------------------------------------------------------------------ one step
def train_step(model: MultiMixNet, batch: dict, variant: Variant, cfg: Config, gen: torch.Generator,
               epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one step (Eq. 5) with the efficient schedule; returns (loss, logged terms)."""
    tc, lc = cfg.train, cfg.multimix.loss
    terms: dict[str, float] = {}
    total = torch.zeros((), device=next(model.parameters()).device)
    if variant.classification:
        x_l = augment.weak(batch["cls_l"]["image"], gen)
        y_l = batch["cls_l"]["label"]
        if variant.ssl == "fixmatch":
            x_u = batch["cls_u"]["image"]
            x_w, x_s = augment.weak(x_u, gen), augment.strong(x_u, gen, tc.strong_max_ops)
            with torch.no_grad():
                weak_logits = model(x_w, with_decoder=False).logits
            logits = model(torch.cat([x_l, x_s]), with_decoder=False).logits
            ce = F.cross_entropy(logits[: len(x_l)].float(), y_l)
            unsup, rate, _, _ = losses.fixmatch_loss(weak_logits, logits[len(x_l):], lc.threshold)
            total = total + ce + lc.lambda_u * unsup
            terms.update(loss_cls=ce.item(), loss_cls_unlabelled=unsup.item(), pseudo_label_rate=rate.item())
        elif variant.ssl == "mixmatch":
            mm = cfg.multimix.mixmatch
            x_u = batch["cls_u"]["image"]
            with torch.no_grad():
                views = [augment.weak(x_u, gen) for _ in range(mm.augmentations)]
                probs = torch.stack([torch.softmax(model(v, with_decoder=False).logits.float(), 1) for v in views]).mean(0)
                guess = losses.sharpen(probs, mm.temperature)
            all_x = torch.cat([x_l] + views)
            all_y = torch.cat([F.one_hot(y_l, 2).float()] + [guess] * mm.augmentations)
            mixed_x, mixed_y = losses.mixup(all_x, all_y, mm.alpha, gen)
            logits = model(mixed_x, with_decoder=False).logits.float()
            n = len(x_l)
            ce = -(mixed_y[:n] * F.log_softmax(logits[:n], 1)).sum(1).mean()
            unsup = F.mse_loss(torch.softmax(logits[n:], 1), mixed_y[n:])
            ramp = min(1.0, (epoch + 1) / max(mm.rampup_epochs, 1))
            total = total + ce + mm.lambda_u * ramp * unsup
            terms.update(loss_cls=ce.item(), loss_cls_unlabelled=unsup.item())
        else:
            ce = F.cross_entropy(model(x_l, with_decoder=False).logits.float(), y_l)
            total = total + ce
            terms.update(loss_cls=ce.item())
    if variant.segmentation:
        x_l, m_l = augment.weak(batch["seg_l"]["image"], gen, batch["seg_l"]["mask"])
        x = x_l
        if variant.consistency:
            x = torch.cat([x_l, augment.weak(batch["seg_u"]["image"], gen)])
        mask_logits = model(x, with_decoder=True, with_classifier=False).mask_logits
        dice = losses.soft_dice_loss(mask_logits[: len(x_l)], m_l)
        total = total + lc.alpha * dice
        terms.update(loss_dice=dice.item())
        if variant.consistency:
            kl = losses.segmentation_consistency(mask_logits[: len(x_l)], mask_logits[len(x_l):])
            total = total + lc.beta * kl
            terms.update(loss_seg_consistency=kl.item())
    terms["loss_total"] = total.item()
    return total, terms


# ------------------------------------------------------------------ validation
@torch.no_grad()
def validate(model: MultiMixNet, streams: Streams, device, amp, batch_size: int = 10) -> dict[str, float]:
    """Forward passes over the validation sets in eval mode (dropout off).

    Returns val_dice / val_loss_dice (segmentation), val_accuracy /
    val_loss_cls (classification), the bridge sensitivity (segmentation),
    val_score (mean of the task scores) and val_loss (sum of the task losses,
    the tie-breaker of model selection)."""
    model.eval()
    metrics: dict[str, float] = {}
    for name, data in streams.val.items():
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        dices, ablated_dices, logit_change, soft_dice, correct, ce, n = [], [], 0.0, 0.0, 0, 0.0, 0
        for batch in loader:
            x = batch["image"].to(device)
            with amp():
                out = model(x, with_decoder=name == "seg", with_classifier=name == "cls")
            if name == "seg":
                masks = batch["mask"].to(device)
                logits = out.mask_logits.float()
                dices.append(losses.dice_scores(logits, masks).cpu())
                soft_dice += losses.soft_dice_loss(logits, masks).item() * len(x)
                if model.bridge:
                    with amp():
                        ablated = model(x, with_classifier=False, zero_saliency=True).mask_logits.float()
                    ablated_dices.append(losses.dice_scores(ablated, masks).cpu())
                    logit_change += (logits - ablated).abs().mean((1, 2, 3)).sum().item()
            else:
                y = batch["label"].to(device)
                correct += (out.logits.argmax(1) == y).sum().item()
                ce += F.cross_entropy(out.logits.float(), y, reduction="sum").item()
            n += len(x)
        if name == "seg":
            dice = torch.cat(dices).mean().item()
            metrics.update(val_dice=dice, val_loss_dice=soft_dice / n)
            # The bridge diagnostic: exactly 0 for a model that has no bridge.
            metrics["val_bridge_logit_change"] = logit_change / n
            metrics["val_bridge_dice_change"] = dice - torch.cat(ablated_dices).mean().item() if ablated_dices else 0.0
        else:
            metrics.update(val_accuracy=correct / n, val_loss_cls=ce / n)
    model.train()
    metrics["val_score"] = float(np.mean([metrics[k] for k in ("val_dice", "val_accuracy") if k in metrics]))
    metrics["val_loss"] = float(sum(metrics[k] for k in ("val_loss_dice", "val_loss_cls") if k in metrics))
    return metrics


# ------------------------------------------------------------------ figures
def save_figures(model: MultiMixNet, streams: Streams, out_dir: Path, device, count: int, spec: RunSpec) -> list[Path]:
    """Saliency maps (and predicted vs reference lung boundaries) for a few validation images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    model.eval()
    for name, data in streams.val.items():
        n = min(count, len(data))
        if n == 0:
            continue
        batch = next(iter(DataLoader(data, batch_size=n, shuffle=False)))
        x = batch["image"].to(device)
        with torch.no_grad():
            out = model(x, with_decoder=name == "seg", with_classifier=True)
        # bridge models computed the saliency inside the forward pass already
        saliency = (out.saliency if out.saliency is not None else model.saliency(x)).cpu()
        rows = 3 if name == "seg" else 2
        fig, axes = plt.subplots(rows, n, figsize=(2.2 * n, 2.2 * rows), squeeze=False)
        for i in range(n):
            image = batch["image"][i, 0].numpy()
            axes[0, i].imshow(image, cmap="gray", vmin=0, vmax=1)
            # a model that never learned classification has no meaningful class prediction
            pred = out.logits[i].argmax().item() if spec.variant.classification else -1
            axes[0, i].set_title(f"predicted {['normal', 'pneumonia'][pred] if pred >= 0 else '—'}", fontsize=7)
            shown = axes[1, i].imshow(saliency[i, 0].numpy(), cmap="inferno")
            axes[1, i].set_title("saliency |∂ logit / ∂ x|", fontsize=7)
            fig.colorbar(shown, ax=axes[1, i], fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
            if name == "seg":
                overlay = np.stack([image] * 3, -1)
                ref = find_boundaries(batch["mask"][i, 0].numpy() > 0.5)
                hyp = find_boundaries((out.mask_logits[i, 0] > 0).cpu().numpy())
                overlay[ref] = [0, 1, 0]  # reference green
                overlay[hyp] = [1, 0, 0]  # prediction red
                axes[2, i].imshow(overlay)
                axes[2, i].set_title("reference green, prediction red", fontsize=6)
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle(f"{spec.name} — {'JSRT' if name == 'seg' else 'CheX'} validation images", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{name}_val_saliency.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    model.train()
    return paths


# ------------------------------------------------------------------ the method

class MultiMixMethod(Method):
    name = "multimix"

    def __init__(self, cfg: Config, spec: RunSpec, device, precision=None):
        super().__init__(cfg, spec, device, precision)
        tc = cfg.train
        self.variant: Variant = PRESETS[spec.preset]
        model = MultiMixNet(bridge=self.variant.bridge, saliency_norm=cfg.multimix.saliency_norm).to(device)
        model.checkpointing = memory_mode(tc.memory, device, cfg.preprocess.size) == "low"
        self.model = self.precision.prepare(model)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=tc.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimiser, step_size=tc.lr_step_epochs, gamma=tc.lr_gamma)
        self.scaler = self.precision.grad_scaler()

    @property
    def streams(self) -> tuple[str, ...]:
        return self.variant.streams

    def parameter_count(self) -> int:
        return parameter_count(self.model)

    def open_streams(self, splits: dict) -> Streams:
        return Streams(self.cfg, self.spec, splits, self.streams)

    def train_mode(self) -> None:
        self.model.train()

    def step(self, batch: dict, gen: torch.Generator, epoch: int) -> dict[str, float]:
        with self.amp():
            loss, terms = train_step(self.model, batch, self.variant, self.cfg, gen, epoch)
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimiser)
        self.scaler.update()
        return terms

    @property
    def lr(self) -> float:
        return self.optimiser.param_groups[0]["lr"]

    def end_epoch(self) -> None:
        self.scheduler.step()

    def validate(self, streams) -> dict[str, float]:
        return validate(self.model, streams, self.device, self.amp)

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimiser.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def weights(self) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}

    def load_weights(self, weights: dict) -> None:
        self.model.load_state_dict(weights["model"])

    def checkpoint_meta(self) -> dict:
        return {"bridge": self.variant.bridge, "saliency_norm": self.cfg.multimix.saliency_norm}

    def figures(self, streams, out_dir: Path, count: int) -> list[Path]:
        return save_figures(self.model, streams, out_dir, self.device, count, self.spec)


def load_predictor(best: dict, device) -> MultiMixNet:
    """The network of a best.pt, in eval mode, for evaluation."""
    model = MultiMixNet(bridge=bool(best["bridge"]), saliency_norm=str(best["saliency_norm"])).to(device)
    model.load_state_dict(best["model"])
    return model.eval()
