"""`multimix train --run NAME`: Algorithm 1 of the paper, reproducibly.

Four streams come from the split file: labelled / unlabelled x classification
(CheX train) / segmentation (JSRT train), batch `train.batch_size` (10) each.
With "full" labels the unlabelled stream of that task is the whole training
pool, its labels ignored (the reference code ran zero steps there).

The budget is the study's, not the preset's: every run takes `train.epochs`
x `train.steps_per_epoch` optimiser steps, and the learning rate drops at
the same steps for all. (Sizing an epoch by the largest stream a preset uses
gave U-Net-10 24 steps and a FixMatch model 12,288 at the paper's counts: a
comparison of step counts, not of methods.) Every epoch draws a fresh
permutation of every stream and fresh augmentations, all from seeds derived
from (run, repeat, epoch), so an epoch is a pure function of the weights it
starts from: a killed run resumes from its last checkpoint and ends exactly as
an uninterrupted one (on CPU).

One training step (the efficient schedule; `bench/train_step.py` compares it
with the reference's):
  classification: the weak view of the unlabelled batch runs the encoder only,
    without gradient, for pseudo-labels; labelled + strong views run the
    encoder only, in one batch;
  segmentation: labelled (+ unlabelled, for the consistency term) images run
    one saliency pass and one encoder-decoder pass, in one batch.
Classification images never touch the decoder or the saliency pass.

Adam (lr 1e-4) with ×0.1 every 8 epochs; validation after every epoch in eval
mode (dropout off everywhere) on JSRT val (Dice) and CheX val (accuracy); the
best checkpoint is the one with the highest mean of the task scores the
preset trains. CheX val has 16 images, so accuracy moves in steps of 1/16 and
equal scores are common: ties go to the lower validation loss (cross-entropy
plus soft-Dice loss of the tasks trained), a smooth score, instead of simply
keeping the earliest epoch. For bridge models validation also measures the
bridge's sensitivity: the mean |change| of the mask logits, and the change
of Dice, when the saliency channel is replaced by zeros (0 for models
without a bridge). Checkpoints are plain tensors and numbers, loadable with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from multimix import augment, losses, tracking
from multimix.config import Config, config_to_dict
from multimix.data.loader import H5Images
from multimix.errors import InputError
from multimix.models.multimix import MultiMixNet, parameter_count
from multimix.presets import Variant
from multimix.study import RunSpec, find_run


def derive_seed(*parts) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16)


# ------------------------------------------------------------------ data streams
class Batches(Dataset):
    """Item k = the whole k-th batch of a precomputed epoch plan (read in file order)."""

    def __init__(self, images: H5Images, plan: list[list[int]]):
        self.images, self.plan = images, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> dict:
        items = [self.images[i] for i in self.plan[k]]
        batch = {"image": torch.stack([it["image"] for it in items]),
                 "label": torch.tensor([it["label"] for it in items])}
        if "mask" in items[0]:
            batch["mask"] = torch.stack([it["mask"] for it in items])
        return batch


def epoch_plan(n: int, steps: int, batch: int, *seed_parts) -> list[list[int]]:
    """`steps` batches of indices into a stream of n items: consecutive fresh
    permutations (a new one each time the stream is exhausted)."""
    order: list[int] = []
    passes = 0
    while len(order) < steps * batch:
        gen = torch.Generator().manual_seed(derive_seed(*seed_parts, passes))
        order += torch.randperm(n, generator=gen).tolist()
        passes += 1
    return [order[i * batch:(i + 1) * batch] for i in range(steps)]


class Streams:
    """The training streams and validation sets of one run."""

    def __init__(self, cfg: Config, spec: RunSpec, splits: dict):
        v = spec.variant
        processed = cfg.processed_dir
        self.train: dict[str, H5Images] = {}
        self.val: dict[str, H5Images] = {}

        def subset(task: str, size: str) -> tuple[list[str], list[str]]:
            info = splits["subsets"].get(task)
            if info is None or size not in info["sizes"]:
                have = sorted(info["sizes"]) if info else []
                raise InputError(f"{cfg.split_dir / 'splits.json'}: no {task} subset of size {size!r} "
                                 f"(have {have}); add it to split.{task}_sizes")
            part = info["sizes"][size]["repeats"].get(str(spec.repeat))
            if part is None:
                raise InputError(f"{cfg.split_dir / 'splits.json'}: no repeat {spec.repeat} (split.repeats)")
            pool = part["labeled"] + part["unlabeled"]
            # "full" labels: the unlabelled stream draws from the whole pool, labels ignored.
            return part["labeled"], part["unlabeled"] or pool

        # (task, stream prefix, dataset, labelled size, masks?)
        tasks = []
        if v.segmentation:
            tasks.append(("segmentation", "seg", cfg.split.segmentation_dataset, spec.segmentation_labels, True))
        if v.classification:
            tasks.append(("classification", "cls", cfg.split.classification_dataset, spec.classification_labels,
                          False))
        for task, short, dataset, size, masks in tasks:
            path = processed / f"{dataset}.h5"
            labelled, unlabelled = subset(task, size)
            self.train[f"{short}_l"] = H5Images(path, labelled, masks=masks)
            if f"{short}_u" in v.streams:
                self.train[f"{short}_u"] = H5Images(path, unlabelled, masks=False)
            self.val[short] = H5Images(path, splits["partitions"][dataset]["val"], masks=masks)
        for name, data in {**self.train, **self.val}.items():
            if len(data) == 0:
                raise InputError(f"stream {name} of run {spec.name} is empty; check the split file and label counts")

    def loaders(self, cfg: Config, spec: RunSpec, epoch: int, steps: int):
        """One DataLoader per stream for this epoch; each yields whole batches."""
        out = {}
        for name, data in self.train.items():
            plan = epoch_plan(len(data), steps, cfg.train.batch_size, spec.name, spec.repeat, epoch, name)
            out[name] = DataLoader(Batches(data, plan), batch_size=None, shuffle=False,
                                   num_workers=cfg.train.num_workers)
        return out


# ------------------------------------------------------------------ one step
def train_step(model: MultiMixNet, batch: dict, variant: Variant, cfg: Config, gen: torch.Generator,
               epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one step (Eq. 5) with the efficient schedule; returns (loss, logged terms)."""
    tc, lc = cfg.train, cfg.train.loss
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
            mm = tc.mixmatch
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
def dice_scores(mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    pred = (mask_logits > 0).float().flatten(1)
    ref = masks.float().flatten(1)
    inter = (pred * ref).sum(1)
    denom = pred.sum(1) + ref.sum(1)
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))


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
                dices.append(dice_scores(logits, masks).cpu())
                soft_dice += losses.soft_dice_loss(logits, masks).item() * len(x)
                if model.bridge:
                    with amp():
                        ablated = model(x, with_classifier=False, zero_saliency=True).mask_logits.float()
                    ablated_dices.append(dice_scores(ablated, masks).cpu())
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


def better(record: dict, best: dict | None) -> bool:
    """Model selection: higher val_score; on a tie, lower val_loss."""
    if best is None:
        return True
    if record["val_score"] != best["val_score"]:
        return record["val_score"] > best["val_score"]
    return record["val_loss"] < best["val_loss"]


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


# ------------------------------------------------------------------ the run
def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    return torch.device(requested)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def data_digest(cfg: Config) -> str:
    files = [cfg.split_dir / "splits.json"] + [cfg.processed_dir / f"{d}.h5" for d in
                                                (cfg.split.segmentation_dataset, cfg.split.classification_dataset)]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        if path.suffix == ".h5" and path.exists():
            import h5py

            with h5py.File(path, "r") as f:  # content is named by its manifest hash and processing attrs
                digest.update(json.dumps({k: str(v) for k, v in sorted(f.attrs.items())}).encode())
        elif path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def resolved_params(cfg: Config, spec: RunSpec) -> dict:
    """Everything that defines this run, as flat strings for MLflow."""
    tree = {"data": config_to_dict(cfg.data), "preprocess": config_to_dict(cfg.preprocess),
            "split": config_to_dict(cfg.split), "study": {"name": cfg.study.name}, "model": config_to_dict(cfg.model),
            "train": config_to_dict(cfg.train), "run": asdict(spec)}
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = str(node)[:5000]

    walk("", tree)
    return flat


def build_model(spec: RunSpec, cfg: Config) -> MultiMixNet:
    return MultiMixNet(bridge=spec.variant.bridge, saliency_norm=cfg.model.saliency_norm)


# Measured, not computed: logged to MLflow and the log, but kept out of the pipeline's
# outputs (history.csv, metrics.json), which must be identical for identical runs.
TIMING = ("images_per_s", "epoch_seconds")
HEARTBEAT_SECONDS = 120  # without progress bars, a line at least this often (a paper-scale epoch takes an hour on CPU)


def train(cfg: Config, run_name: str, device: str | None = None, show_progress: bool = True, log=print,
          use_mlflow: bool = True, stop_after_epochs: int | None = None) -> dict:
    """Train one run of the study; resumable. `stop_after_epochs` ends early (for tests of resume)."""
    spec = find_run(cfg, run_name)
    variant = spec.variant
    tc = cfg.train
    splits_path = cfg.split_dir / "splits.json"
    if not splits_path.is_file():
        raise InputError(f"{splits_path}: not found (run `multimix split` first)")
    splits = json.loads(splits_path.read_text())
    streams = Streams(cfg, spec, splits)
    dev = pick_device(device or tc.device)
    if dev.type == "cpu":
        if tc.threads:
            torch.set_num_threads(tc.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
    cuda = dev.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16

    def amp():
        return torch.autocast("cuda", dtype=amp_dtype) if cuda else contextlib.nullcontext()

    params = resolved_params(cfg, spec)
    data_id, source_id = data_digest(cfg), tracking.source_digest()
    # A checkpoint is resumed only by the same parameters, data and code.
    fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode() + data_id.encode()
                                 + source_id.encode()).hexdigest()

    torch.manual_seed(derive_seed(spec.name, spec.repeat, "init"))
    model = build_model(spec, cfg).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=tc.lr_step_epochs, gamma=tc.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)

    run_dir = cfg.runs_dir / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    # The best epoch's record and weights live in last.pt too: best.pt is an
    # output that DVC and Snakemake delete before a rerun, and a resumed run
    # must be able to write it again even if no later epoch beats it.
    start_epoch, best, best_weights, history, mlflow_id, abandoned = 0, None, None, [], "", ""
    if last_path.exists():
        ckpt = torch.load(last_path, map_location=dev, weights_only=True)
        if ckpt.get("fingerprint") == fingerprint and "best_model" in ckpt:
            model.load_state_dict(ckpt["model"])
            optimiser.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            start_epoch, best, best_weights = ckpt["epoch"] + 1, dict(ckpt["best"]), ckpt["best_model"]
            history, mlflow_id = list(ckpt["history"]), ckpt.get("mlflow_run_id", "")
            log(f"{spec.name}: resuming after epoch {ckpt['epoch'] + 1} of {tc.epochs}")
        else:
            log(f"{spec.name}: {last_path} belongs to other parameters, code or data; starting afresh")
            abandoned = ckpt.get("mlflow_run_id", "")  # its MLflow record will never finish

    mlflow = None
    if use_mlflow:
        import mlflow as _mlflow

        mlflow = _mlflow
        tracking.use_experiment(cfg.study.name)
        if abandoned:
            tracking.end_abandoned_run(abandoned)
        known = False
        if mlflow_id:  # continue the interrupted run's record, if the store still has it
            try:
                known = mlflow.get_run(mlflow_id) is not None
            except Exception:
                known = False
        active = mlflow.start_run(run_id=mlflow_id if known else None, run_name=None if known else spec.name)
        mlflow_id = active.info.run_id
        if not known:
            mlflow.log_params(params)
            # Every training setting but the run's own identity: runs of one study share it, and
            # `multimix compare` never averages runs trained with other settings.
            config_digest = hashlib.sha256(json.dumps({k: v for k, v in params.items() if not k.startswith("run.")},
                                                      sort_keys=True).encode()).hexdigest()
            mlflow.set_tags({
                "study": cfg.study.name, "preset": spec.preset, "config_digest": config_digest,
                "segmentation_labels": spec.segmentation_labels or "",
                "classification_labels": spec.classification_labels or "", "repeat": str(spec.repeat),
                "git_commit": tracking.git_commit(), "data_digest": data_id, "source_digest": source_id,
                "device": str(dev), "parameters": str(parameter_count(model)),
            })
    steps = tc.steps_per_epoch
    images_per_step = tc.batch_size * len(streams.train)
    end_epoch = tc.epochs if stop_after_epochs is None else min(tc.epochs, start_epoch + stop_after_epochs)
    status = "FAILED"
    try:
        for epoch in range(start_epoch, end_epoch):
            # Every random draw of the epoch follows from (run, repeat, epoch): resumable exactly.
            torch.manual_seed(derive_seed(spec.name, spec.repeat, epoch, "torch"))
            gen = torch.Generator().manual_seed(derive_seed(spec.name, spec.repeat, epoch, "augment"))
            model.train()
            loaders = streams.loaders(cfg, spec, epoch, steps)
            sums: dict[str, float] = {}
            start = heartbeat = time.perf_counter()
            bar = tqdm(zip(*loaders.values()), total=steps, desc=f"{spec.name} epoch {epoch + 1}/{tc.epochs}",
                       disable=not show_progress, leave=False)
            for step, parts in enumerate(bar, 1):
                batch = {}
                for name, part in zip(loaders, parts):
                    batch[name] = {k: v.to(dev, non_blocking=True) for k, v in part.items()}
                    if cuda:
                        batch[name]["image"] = batch[name]["image"].contiguous(memory_format=torch.channels_last)
                with amp():
                    loss, terms = train_step(model, batch, variant, cfg, gen, epoch)
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix(loss=f"{terms['loss_total']:.3f}")
                if not show_progress and time.perf_counter() - heartbeat > HEARTBEAT_SECONDS:
                    heartbeat = time.perf_counter()
                    log(f"{spec.name} epoch {epoch + 1}/{tc.epochs}: step {step}/{steps}, "
                        f"loss {sums['loss_total'] / step:.4f}, "
                        f"{step * images_per_step / (heartbeat - start):.1f} img/s")
            seconds = time.perf_counter() - start
            record = {k: v / steps for k, v in sums.items()}
            record.update(lr=optimiser.param_groups[0]["lr"], images_per_s=steps * images_per_step / seconds,
                          epoch_seconds=seconds)
            scheduler.step()
            record.update(validate(model, streams, dev, amp))
            record["epoch"], record["step"] = epoch, (epoch + 1) * steps
            history.append(record)
            improved = better(record, best)
            if improved:
                best = record
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            _atomic_save({"model": model.state_dict(), "optimizer": optimiser.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                          "best": best, "best_model": best_weights, "history": history,
                          "fingerprint": fingerprint, "mlflow_run_id": mlflow_id}, last_path)
            if mlflow:
                mlflow.log_metrics({k: float(v) for k, v in record.items() if k not in ("epoch", "step")},
                                   step=record["step"])
            log(f"{spec.name} epoch {epoch + 1}/{tc.epochs}: loss {record.get('loss_total', 0):.4f}, "
                f"val_score {record['val_score']:.4f}{' (best)' if improved else ''}, {record['images_per_s']:.1f} img/s")
        finished = len(history) >= tc.epochs
        def computed(record: dict) -> dict:
            return {k: v for k, v in record.items() if k not in TIMING}

        summary = {"run": spec.name, "study": cfg.study.name, "preset": spec.preset, "epochs_done": len(history),
                   "steps_done": len(history) * steps, "best_epoch": best["epoch"] if best else -1,
                   "best_val_score": best["val_score"] if best else float("nan"),
                   "parameters": parameter_count(model), "best": computed(best or {})}
        info = {"mlflow_run_id": mlflow_id, "device": str(dev),
                "epoch_seconds": [round(h.get("epoch_seconds", float("nan")), 2) for h in history]}
        if finished:
            _atomic_save({"model": best_weights, "epoch": best["epoch"], "val_score": best["val_score"],
                          "preset": spec.preset, "bridge": variant.bridge, "saliency_norm": cfg.model.saliency_norm,
                          "run": asdict(spec)}, best_path)
            model.load_state_dict(best_weights)
            figures = save_figures(model, streams, run_dir / "figures", dev, tc.figures, spec)
            pd.DataFrame([computed(h) for h in history]).to_csv(run_dir / "history.csv", index=False)
            (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
            # Where this training ran and was recorded: not an output of the stage (it differs
            # between identical runs), read by `evaluate` to log test metrics to the same record.
            (run_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
            if mlflow:
                mlflow.log_artifact(str(best_path), artifact_path="model")  # a state_dict (see README)
                mlflow.log_dict(params, "config.json")
                for path in figures:
                    mlflow.log_artifact(str(path), artifact_path="figures")
                mlflow.log_metric("best_val_score", best["val_score"])
        status = "FINISHED" if finished else "KILLED"
        return summary | info
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if mlflow:
            mlflow.end_run(status=status)
