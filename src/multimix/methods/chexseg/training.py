"""Seed 004's method (CheXseg, Gadgil et al. 2021), one class for its four roles
(`presets.ChexsegVariant`):

  classifier  a DenseNet121 or ResNet18 of the ten pathologies on CheXpert train's
              image-level labels (uncertainty policy `seed004.uncertainty`), masked BCE,
              Adam at a fixed rate (B.1); selected by the mean AUC on CheXpert valid
  segmenter   DeepLabV3+ (ResNet18) on batches whose every slot is an expert-annotated
              CheXlocalize image with probability p, else a pseudo-labelled CheXpert train
              image of the run's trial (`multimix pseudolabel`); class-average Dice (B.2)
  teacher     the same on expert images alone (p = 1)
  student     DeepLabV3+ trained on the teacher's soft masks of unlabelled CheXpert train
              images: BCE at sigmoid temperature tau (B.4)
Segmenters start from a random encoder or from the ResNet18 classifier's trunk (`init`)
and are selected by the mIoU on the held-out expert images (CheXlocalize's convention,
at the training grid). No augmentation: the paper describes none.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from multimix import localisation, losses, tables
from multimix.data.layout import CHEXLOCALIZE_PATHOLOGIES
from multimix.data.loader import PathologyImages
from multimix.errors import InputError
from multimix.methods.base import Method
from multimix.methods.chexseg.checkpoints import net_weights, pathology_aucs, pseudo_label_file
from multimix.methods.chexseg.network import CAM_LAYER, DeepLabV3Plus, pathology_classifier
from multimix.methods.chexseg.pseudolabels import cams
from multimix.streams import TrainingStreams


def _best(cfg, run: str) -> Path:
    path = cfg.runs_dir / run / "best.pt"
    if not path.is_file():
        raise InputError(f"{path}: not found (train run {run} first)")
    return path


class ChexsegStreams(TrainingStreams):
    """The streams of one seed-004 run and its validation set, read from the split file."""

    def __init__(self, cfg, spec, splits: dict):
        role, s4 = spec.variant.role, cfg.seed004
        parts = splits["partitions"]
        if "chexpert" not in parts or "chexlocalize" not in parts or "chexseg" not in splits["subsets"]:
            raise InputError(f"{cfg.split_dir / 'splits.json'}: no CheXpert / CheXlocalize partitions; add chexpert "
                             "and chexlocalize to data.datasets and rerun the pipeline")
        chexpert, localize = cfg.processed_dir / "chexpert.h5", cfg.processed_dir / "chexlocalize.h5"
        subsets = splits["subsets"]["chexseg"]
        self.train, self.val = {}, {}
        if role == "classifier":
            self.train["pathology"] = PathologyImages(chexpert, parts["chexpert"]["train"], s4.uncertainty)
            self.val["pathology"] = PathologyImages(chexpert, parts["chexpert"]["val"], s4.uncertainty)
            self.batch_size = s4.classifier_batch
        else:
            if role in ("segmenter", "teacher"):
                self.train["expert"] = PathologyImages(localize, parts["chexlocalize"]["train"], masks=True)
            if role == "segmenter":
                ids = subsets["pseudo"].get(str(spec.trial))
                if ids is None:
                    raise InputError(f"{cfg.split_dir / 'splits.json'}: no pseudo-label trial {spec.trial} "
                                     "(seed004.subsets.trials)")
                self.train["pseudo"] = PathologyImages(chexpert, ids, mask_file=pseudo_label_file(cfg))
            if role == "student":
                ids = subsets["unlabelled"].get(str(float(spec.unlabelled)))
                if ids is None:
                    raise InputError(f"{cfg.split_dir / 'splits.json'}: no unlabelled share {spec.unlabelled} "
                                     "(seed004.subsets.unlabelled)")
                self.train["unlabelled"] = PathologyImages(chexpert, ids)
            self.val["expert"] = PathologyImages(localize, parts["chexlocalize"]["val"], masks=True)
            self.batch_size = s4.segmentation_batch
        for name, data in {**self.train, **self.val}.items():
            if len(data) == 0:
                raise InputError(f"stream {name} of run {spec.name} is empty; check the split file")
        # a segmenter's step mixes its two streams into one batch
        self.images_per_step = self.batch_size * (1 if role == "segmenter" else len(self.train))


def _stack(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "index"}


class ChexsegMethod(Method):
    name = "chexseg"

    def __init__(self, cfg, spec, device, precision=None):
        super().__init__(cfg, spec, device, precision)
        v, s4 = spec.variant, cfg.seed004
        self.role, self.teacher = v.role, None
        self._inputs: list[Path] = []
        if self.role == "classifier":
            self.net = pathology_classifier(v.architecture).to(device)
            lr = s4.classifier_lr
        else:
            self.net = DeepLabV3Plus().to(device)
            if v.init == "classifier":
                path = _best(cfg, "pathology_resnet18")
                self.net.init_encoder_from(net_weights(torch.load(path, map_location=device, weights_only=True)))
                self._inputs.append(path)
            lr = s4.distill_lr if self.role == "student" else s4.segmentation_lr
            if self.role == "student":
                path = _best(cfg, f"teacher_{v.init}")
                self.teacher = DeepLabV3Plus().to(device)
                self.teacher.load_state_dict(net_weights(torch.load(path, map_location=device, weights_only=True)))
                self.teacher.eval()
                self._inputs.append(path)
            if self.role == "segmenter":
                self._inputs.append(pseudo_label_file(cfg))
        self.net = self.precision.prepare(self.net)
        if self.teacher is not None:
            self.teacher = self.precision.prepare(self.teacher)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)  # fixed rates (B.1, B.2, B.4)
        self.scaler = self.precision.grad_scaler()  # active for fp16 only

    # -- what the loop reads -------------------------------------------------
    @property
    def streams(self) -> tuple[str, ...]:
        return self.spec.variant.streams

    def open_streams(self, splits: dict) -> ChexsegStreams:
        return ChexsegStreams(self.cfg, self.spec, splits)

    def inputs(self) -> list[Path]:
        return list(self._inputs)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def train_mode(self) -> None:
        self.net.train()

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    # -- one step ---------------------------------------------------------------
    def step(self, batch: dict, gen: torch.Generator, epoch: int) -> dict[str, float]:
        terms = {}
        with self.amp():
            if self.role == "classifier":
                part = batch["pathology"]
                loss = losses.masked_bce(self.net(part["image"]), part["labels"])
            elif self.role == "student":
                x = batch["unlabelled"]["image"]
                with torch.no_grad():
                    target = self.teacher(x)
                loss = losses.distillation_loss(self.net(x), target, self.cfg.seed004.temperature)
            else:
                expert = batch["expert"]
                x, y = expert["image"], expert["mask"]
                if self.role == "segmenter":
                    slots = losses.expert_slots(len(x), float(self.spec.p), gen).to(x.device)
                    pseudo = batch["pseudo"]
                    x = torch.where(slots[:, None, None, None], x, pseudo["image"])
                    y = torch.where(slots[:, None, None, None], y, pseudo["mask"])
                    terms["expert_share"] = float(slots.float().mean())
                loss = losses.class_average_dice_loss(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return terms | {"loss_total": float(loss.detach())}

    # -- validation ---------------------------------------------------------------
    @torch.no_grad()
    def validate(self, streams) -> dict[str, float]:
        self.net.eval()
        if self.role == "classifier":
            data = streams.val["pathology"]
            logits, labels = predict(self.net, data, self.device, key="labels")
            known = ~np.isnan(labels)
            loss = float(losses.masked_bce(torch.from_numpy(logits), torch.from_numpy(labels)))
            aucs = pathology_aucs(labels, 1 / (1 + np.exp(-logits)))
            defined = [a for a in aucs if np.isfinite(a)]
            return {"val_score": float(np.mean(defined)) if defined else 0.0, "val_loss": loss,
                    "val_labels": float(known.mean())}
        data = streams.val["expert"]
        logits, masks = predict(self.net, data, self.device, key="mask")
        loss = float(losses.class_average_dice_loss(torch.from_numpy(logits), torch.from_numpy(masks)))
        per_image = [[localisation.iou(logits[i, c] > 0, masks[i, c] > 0.5, self.cfg.seed004.true_pos_only)
                      for c in range(logits.shape[1])] for i in range(len(logits))]
        with warnings.catch_warnings():  # a pathology with no IoU defined (true_pos_only) is NaN, left out below
            warnings.simplefilter("ignore", RuntimeWarning)
            per_class = np.nanmean(np.array(per_image, dtype=float), axis=0) if per_image else np.array([])
        defined = per_class[np.isfinite(per_class)]
        return {"val_score": float(defined.mean()) if len(defined) else 0.0, "val_loss": loss}

    # -- checkpoints ----------------------------------------------------------
    def state(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.scaler.load_state_dict(state["scaler"])

    def weights(self) -> dict:
        return {"net": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}

    def load_weights(self, weights: dict) -> None:
        self.net.load_state_dict(weights["net"])

    def checkpoint_meta(self) -> dict:
        v = self.spec.variant
        return {"role": v.role, "architecture": v.architecture}

    def figures(self, streams, out_dir: Path, count: int) -> list[Path]:
        """Validation images: a classifier's Grad-CAM of its most probable pathology; a segmenter's
        prediction (red) and the expert mask (green) of the image's largest pathology."""
        names = CHEXLOCALIZE_PATHOLOGIES
        out_dir.mkdir(parents=True, exist_ok=True)
        data = streams.val["pathology" if self.role == "classifier" else "expert"]
        picks = list(range(min(count, len(data))))
        if not picks:
            return []
        plt = tables.pyplot()
        fig, axes = plt.subplots(1, len(picks), figsize=(3 * len(picks), 3.2), squeeze=False)
        x = torch.stack([data[k]["image"] for k in picks]).to(self.device)
        self.net.eval()
        if self.role == "classifier":
            maps, probs = cams(self.net, CAM_LAYER[self.spec.variant.architecture], x, classes=len(names))
        else:
            with torch.no_grad():
                pred = (self.net(x) > 0).cpu().numpy()
        for ax, k in zip(axes[0], range(len(picks))):
            ax.imshow(x[k, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            if self.role == "classifier":
                c = int(np.argmax(probs[k]))
                ax.imshow(maps[k, c], cmap="jet", alpha=0.35, vmin=0, vmax=1)
                ax.set_title(f"{names[c]} p={probs[k, c]:.2f}", fontsize=7)
            else:
                ref = data[picks[k]]["mask"].numpy() > 0.5
                c = int(np.argmax(ref.sum((1, 2))))
                for mask, colour in ((ref[c], "lime"), (pred[k, c], "red")):
                    if mask.any() and not mask.all():
                        ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.8)
                ax.set_title(f"{names[c]} (expert green, ours red)", fontsize=7)
            ax.axis("off")
        fig.tight_layout()
        path = out_dir / "validation.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]


@torch.no_grad()
def predict(net, data, device, key: str, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Logits of every item of `data` and its `key` (labels or masks), as arrays."""
    outs, refs = [], []
    for start in range(0, len(data), batch):
        items = _stack([data[k] for k in range(start, min(len(data), start + batch))])
        outs.append(net(items["image"].to(device)).float().cpu().numpy())
        refs.append(items[key].numpy())
    return np.concatenate(outs), np.concatenate(refs)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
