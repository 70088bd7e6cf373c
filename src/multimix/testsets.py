"""Scoring a trained model on the test sets of its tasks, the way MultiMix's paper does —
the per-image table every method that segments lungs or classifies images shares.

In-domain: CheX test (classification) and JSRT test (segmentation);
cross-domain: NIHX (classification, all 4,185 images) and MCU test
(segmentation) — for the tasks the run's preset learns. A classifier of the
segmentation source's own classes (seed 003's APPAU-Net) is tested on that
source's test images (`test_sets`); so is a segmentor trained on one of
seed 003's datasets (MCX, SCX, JCX, CCX: `split.segmentation_dataset`),
whose test partition is its own. CCX's three classes are scored with
`metrics.multiclass_scores` (per-class probabilities in per_image.csv). The model runs in eval
mode (dropout off). `multimix evaluate` writes, under `data/eval/NAME/`:
  per_image.csv  one row per test image (scores, predicted/reference lung
                 pixel counts, class probability) for distributions and tests;
                 for bridge models also the Dice with the saliency channel
                 zeroed and the mean |change| of the mask logits (the bridge
                 sensitivity; 0 for models without a bridge);
  metrics.json   per-dataset summary (DVC metrics);
  examples.npz   a few images with saliency and masks for the report figures.
On the synthetic default the pneumonia phantoms of CheX and NIHX carry their exact opacity
masks (`layout.PHANTOM_LESIONS`): the classifier's saliency map (the input gradient MultiMix's
bridge feeds the decoder) is scored against them per image (`localisation.saliency_scores`:
pointing-game hit, mass share inside the opacities, IoU of its top 5 %), beside the chance
level of a uniform map (the opacities' area share).
Results are read back (`load_results`) as one table per run and test set and one row per
image, for the report's tables and figures (`figures`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from multimix import localisation, metrics, paths, runs, tables
from multimix.data import layout
from multimix.data.loader import open_images
from multimix.data.preprocess import read_manifest
from multimix.errors import InputError
from multimix.runs import RunSpec

if TYPE_CHECKING:
    from multimix.config import Config

TEST_SETS = {
    "segmentation": (("jsrt", "in-domain"), ("mcu", "cross-domain")),
    "classification": (("chex", "in-domain"), ("nihx", "cross-domain")),
}
EXAMPLES = 4


def test_sets(cfg: Config, spec, task: str) -> tuple[tuple[str, str], ...]:
    """(dataset, domain) pairs a run is tested on for one task. A classifier of the segmentation
    source's classes (APPAU-Net's discriminator: e.g. JSRT nodules) is tested on that source's
    test images only: the other segmentation source has other classes (Montgomery: TB)."""
    seg = cfg.split.segmentation_dataset
    if task == "classification" and spec.variant.class_source == "segmentation":
        return ((seg, "in-domain"),)
    if task == "segmentation" and seg != "jsrt":  # seed 003's datasets: their own test images
        return ((seg, "in-domain"),)
    return TEST_SETS[task]


def _summarise(frame: pd.DataFrame, task: str) -> dict[str, float]:
    if task == "segmentation":
        out = {m: float(frame[m].mean(skipna=True)) for m in metrics.SEGMENTATION_METRICS}
        out["hausdorff_undefined"] = int(frame["hausdorff"].isna().sum())
        out["bridge_dice_change"] = float((frame["dice"] - frame["dice_without_saliency"]).mean())
        out["bridge_logit_change"] = float(frame["bridge_logit_change"].mean())
    elif "probability_2" in frame:  # more than two classes (seed 003's CCX)
        columns = sorted((c for c in frame if c.startswith("probability_")), key=lambda c: int(c.rsplit("_", 1)[1]))
        out = metrics.multiclass_scores(frame["label"], frame[columns].to_numpy())
    else:
        out = metrics.classification_scores(frame["label"], frame["probability"])
    if "saliency_hit" in frame:  # saliency localisation on the phantoms' known opacities
        scored = frame.dropna(subset=["saliency_hit"])
        out.update({f"saliency_{name}": float(scored[f"saliency_{name}"].mean()) for name in ("hit", "mass", "iou")},
                   saliency_chance=float(scored["lesion_share"].mean()), saliency_images=int(len(scored)))
    out["images"] = int(len(frame))
    return out


@torch.no_grad()
def evaluate(cfg: Config, spec: RunSpec, model, dev, ablation: Callable | None = None
             ) -> tuple[pd.DataFrame, dict, dict]:
    """(per-image rows, summary per test set, example arrays) of `model` on the test sets of the
    tasks its run learns. `model(x, with_decoder=, with_classifier=)` returns `mask_logits`
    and `logits`; `model.saliency(x)` the input-gradient map. `ablation(x)`, where a method
    gives one, is the mask logits with the saliency input removed (MultiMix's bridge): its
    Dice and mean |logit change| are reported; without one, the Dice unchanged and 0."""
    run = spec.name
    splits = json.loads((cfg.split_dir / "splits.json").read_text())
    rows, summary, examples = [], {}, {}
    lesions_of = _lesion_reader(cfg)
    tasks = [t for t, on in (("segmentation", spec.variant.segmentation),
                             ("classification", spec.variant.classification)) if on]
    for task in tasks:
        for dataset, domain in test_sets(cfg, spec, task):
            if dataset not in splits["partitions"]:
                continue  # source not in data.datasets
            ids = splits["partitions"][dataset]["test"]
            data = open_images(cfg.processed_dir, dataset, ids, masks=task == "segmentation")
            loader = DataLoader(data, batch_size=10, shuffle=False)
            lesions = lesions_of(dataset, data.ids) if task == "classification" else {}
            frame_rows = []
            for batch in loader:
                x = batch["image"].to(dev)
                out = model(x, with_decoder=task == "segmentation", with_classifier=True)
                batch_ids = [data.ids[int(i)] for i in batch["index"]]
                saliency = model.saliency(x)[:, 0].cpu().numpy() if any(i in lesions for i in batch_ids) else None
                ablated = ablation(x) if task == "segmentation" and ablation is not None else None
                for k in range(len(x)):
                    row = {"run": run, "preset": spec.preset, "dataset": dataset, "domain": domain, "task": task,
                           "id": data.ids[int(batch["index"][k])]}
                    if task == "segmentation":
                        pred = (out.mask_logits[k, 0] > 0).cpu().numpy()
                        ref = batch["mask"][k, 0].numpy() > 0.5
                        row.update(metrics.segmentation_scores(pred, ref), pred_pixels=int(pred.sum()),
                                   ref_pixels=int(ref.sum()))
                        if ablated is None:  # no bridge: zeroing a channel it does not have changes nothing
                            row.update(dice_without_saliency=row["dice"], bridge_logit_change=0.0)
                        else:
                            without = (ablated[k, 0] > 0).cpu().numpy()
                            row.update(dice_without_saliency=metrics.dice(without, ref),
                                       bridge_logit_change=float((ablated[k] - out.mask_logits[k]).abs().mean()))
                    else:
                        probabilities = torch.softmax(out.logits[k].float(), 0)
                        row.update(label=int(batch["label"][k]), predicted=int(probabilities.argmax()),
                                   probability=float(probabilities[1]))
                        if len(probabilities) > 2:
                            row.update({f"probability_{c}": float(p) for c, p in enumerate(probabilities)})
                        if row["id"] in lesions:  # a pneumonia phantom: does the saliency point at its opacities?
                            lesion = lesions[row["id"]]
                            scores = localisation.saliency_scores(saliency[k], lesion)
                            row.update({f"saliency_{name}": value for name, value in scores.items()},
                                       lesion_share=float(lesion.mean()))
                    frame_rows.append(row)
            frame = pd.DataFrame(frame_rows)
            rows.append(frame)
            # one key per (dataset, task): APPAU-Net segments and classifies the same test images
            key = dataset if dataset not in summary else f"{dataset}_{task}"
            summary[key] = {"domain": domain, "task": task} | _summarise(frame, task)
            examples.update(_examples(model, data, key, task, dev))
    per_image = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return per_image, summary, examples


def _lesion_reader(cfg: Config):
    """lesions(dataset, ids): the known opacity masks of a classification test set's pneumonia
    phantoms (none for real data), the manifest read at most once per evaluation."""
    manifest_path, manifest = cfg.interim_dir / "manifest.csv", None

    def lesions(dataset: str, ids) -> dict[str, np.ndarray]:
        nonlocal manifest
        if not (cfg.raw_dir / dataset / layout.PHANTOM_LESIONS).is_dir() or not manifest_path.is_file():
            return {}
        if manifest is None:
            manifest = read_manifest(manifest_path).set_index("id")
        return localisation.phantom_lesions(manifest, cfg.raw_dir / dataset, ids, cfg.preprocess.size,
                                            cfg.preprocess.aspect)

    return lesions


def _examples(model, data, dataset: str, task: str, dev) -> dict[str, np.ndarray]:
    """A few test images with saliency (and masks), normal and pneumonia alike where labelled."""
    if task == "classification":
        normal = [i for i, y in enumerate(data.labels) if y == 0][: EXAMPLES // 2]
        sick = [i for i, y in enumerate(data.labels) if y == 1][: EXAMPLES // 2]
        picks = normal + sick
    else:
        picks = list(range(min(EXAMPLES, len(data))))
    if not picks:
        return {}
    items = [data[i] for i in picks]
    x = torch.stack([it["image"] for it in items]).to(dev)
    out = model(x, with_decoder=task == "segmentation", with_classifier=True)
    saliency = out.saliency if out.saliency is not None else model.saliency(x)  # bridge models computed it already
    # a segmentation-only network of seed 003 has no classifier: no class probability
    probability = (torch.softmax(out.logits.float(), 1)[:, 1].cpu().numpy() if out.logits is not None
                   else np.full(len(items), np.nan))
    found = {f"{dataset}_image": x[:, 0].cpu().numpy(), f"{dataset}_saliency": saliency[:, 0].cpu().numpy(),
             f"{dataset}_label": np.array([it["label"] for it in items]), f"{dataset}_probability": probability}
    if task == "segmentation":
        found[f"{dataset}_pred"] = (out.mask_logits[:, 0] > 0).cpu().numpy()
        found[f"{dataset}_ref"] = torch.stack([it["mask"] for it in items])[:, 0].numpy() > 0.5
    return found


def predictions(model, x: torch.Tensor, segmentation: bool, classification: bool, class_names,
                mask_name: str = "lungs") -> dict:
    """A predictor of this module's interface on new images, as `MethodPlugin.predict` returns
    it: class probabilities, the mask's probability and, for a run that classifies, the saliency
    of its predicted class (each image's map divided by its own maximum, for display)."""
    with torch.no_grad():
        out = model(x, with_decoder=segmentation, with_classifier=classification)
    found: dict = {}
    if classification and out.logits is not None:
        found |= {"probabilities": torch.softmax(out.logits.float(), 1).cpu().numpy(), "class_names": list(class_names)}
    if segmentation and out.mask_logits is not None:
        found |= {"masks": torch.sigmoid(out.mask_logits.float()).cpu().numpy(), "mask_names": [mask_name]}
    if "probabilities" in found:
        saliency = out.saliency if getattr(out, "saliency", None) is not None else model.saliency(x)
        saliency = saliency[:, 0].float()
        found["saliency"] = (saliency / saliency.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]).cpu().numpy()
    return found


def summary_lines(run: str, summary: dict) -> list[str]:
    """What `multimix evaluate` prints: one line per test set, Dice or accuracy and AUC."""
    lines = []
    for dataset, values in summary.items():
        main = f"Dice {values['dice']:.4f}" if values["task"] == "segmentation" else \
            f"accuracy {values['accuracy']:.4f}, AUC {values['auc']:.4f}"
        lines.append(f"{run} — {dataset} ({values['domain']}, {values['images']} images): {main}")
    return lines


# ------------------------------------------------------------------ reading results back
def load_results(cfg: Config, specs: list[RunSpec]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(one row per run and test set, one row per image, examples per run) of evaluated runs."""
    summaries, images, examples = [], [], {}
    for spec in specs:
        name = spec.name
        folder = paths.eval_dir(cfg, name)
        if not (folder / "metrics.json").exists():
            raise InputError(f"{folder / 'metrics.json'}: not found (run `multimix evaluate --run {name}` first)")
        for dataset, values in json.loads((folder / "metrics.json").read_text()).items():
            summaries.append({"run": name, "preset": spec.preset, "cls_labels": spec.classification_labels or "",
                              "seg_labels": spec.segmentation_labels or "", "repeat": spec.repeat,
                              "dataset": dataset} | values)
        frame = pd.read_csv(folder / "per_image.csv")
        if len(frame):
            frame["cls_labels"] = spec.classification_labels or ""
            frame["seg_labels"] = spec.segmentation_labels or ""
            frame["repeat"] = spec.repeat
            images.append(frame)
        with np.load(folder / "examples.npz") as npz:
            examples[name] = {k: npz[k] for k in npz.files}
    return pd.DataFrame(summaries), (pd.concat(images, ignore_index=True) if images else pd.DataFrame()), examples


def model_label(frame_or_row) -> str:
    """A model as its runs are named, without the repeat: `multimix-s10-c100`."""
    return runs.run_name(frame_or_row["preset"], frame_or_row["seg_labels"] or None,
                    frame_or_row["cls_labels"] or None).rsplit("-r", 1)[0]


SUMMARY_METRICS = ("accuracy", "auc", "dice", "hausdorff")


def summary_metrics(summary: pd.DataFrame) -> dict:
    """{model: {test set: {metric: mean over repeats}}} for the few scores a study is read by."""
    out: dict = {}
    if summary.empty:
        return out
    summary = summary.assign(model=summary.apply(model_label, axis=1))
    for (model, dataset), grp in summary.groupby(["model", "dataset"]):
        values = {m: round(float(grp[m].mean()), 4) for m in SUMMARY_METRICS if m in grp and grp[m].notna().any()}
        out.setdefault(model, {})[dataset] = values
    return out



# ------------------------------------------------------------------ figures
def figures(summary: pd.DataFrame, images: pd.DataFrame, examples: dict, out: Path,
            featured: set[str] = frozenset()) -> list[Path]:
    """Dice distributions, Bland-Altman of lung pixel counts, ROC curves, accuracy vs label count,
    boundary overlays and saliency maps of the runs' test images, under `out`; the saliency
    figures show a `featured` run's examples where one has them."""
    plt = tables.pyplot()
    from skimage.segmentation import find_boundaries

    out.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name):
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    seg = images[images["task"] == "segmentation"] if not images.empty else images
    cls = images[images["task"] == "classification"] if not images.empty else images
    if not seg.empty:
        seg = seg.assign(model=seg.apply(model_label, axis=1))
        datasets = sorted(seg["dataset"].unique())
        fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
        for ax, ds in zip(axes[0], datasets):
            part = seg[seg["dataset"] == ds]
            names = sorted(part["model"].unique())
            ax.boxplot([part.loc[part["model"] == n, "dice"] for n in names], tick_labels=names)
            ax.set_title(f"Dice per image — {ds} test")
            ax.set_ylabel("Dice")
            ax.tick_params(axis="x", rotation=30)
        save(fig, "dice_distribution.png")

        # Bland–Altman: one panel per model (repeats pooled) and test set, with the bias and
        # the 95% limits of agreement (bias ± 1.96 SD) drawn and labelled.
        models = sorted(seg["model"].unique(), key=lambda m: (list(runs.PRESETS).index(m.split("-")[0]), m))
        fig, axes = plt.subplots(len(datasets), len(models), figsize=(3.4 * len(models), 3.2 * len(datasets)),
                                 squeeze=False, sharey="row")
        for i, ds in enumerate(datasets):
            for j, name in enumerate(models):
                ax = axes[i, j]
                grp = seg[(seg["dataset"] == ds) & (seg["model"] == name)]
                ax.set_title(f"{name} — {ds}", fontsize=8)
                if grp.empty:
                    ax.axis("off")
                    continue
                mean = (grp["pred_pixels"] + grp["ref_pixels"]) / 2
                diff = grp["pred_pixels"] - grp["ref_pixels"]
                ax.scatter(mean, diff, s=10, alpha=0.7)
                bias, sd = diff.mean(), diff.std(ddof=1) if len(diff) > 1 else 0.0
                for value, style, text in ((bias, "-", f"bias {bias:+.0f}"),
                                           (bias + 1.96 * sd, "--", f"+1.96 SD {bias + 1.96 * sd:+.0f}"),
                                           (bias - 1.96 * sd, "--", f"−1.96 SD {bias - 1.96 * sd:+.0f}")):
                    ax.axhline(value, color="k", lw=0.8, ls=style)
                    ax.annotate(text, (1.0, value), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                                fontsize=6)
                ax.axhline(0, color="grey", lw=0.5, ls=":")
                ax.set_xlabel("mean of predicted and reference lung pixels", fontsize=7)
                if j == 0:
                    ax.set_ylabel("predicted − reference pixels", fontsize=7)
                ax.tick_params(labelsize=6)
        save(fig, "bland_altman.png")

    if not cls.empty:
        cls = cls.assign(model=cls.apply(model_label, axis=1))
        datasets = sorted(cls["dataset"].unique())
        fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
        for ax, ds in zip(axes[0], datasets):
            for name, grp in cls[cls["dataset"] == ds].groupby("model"):
                if grp["label"].nunique() < 2:
                    continue
                if "probability_2" in grp and grp["probability_2"].notna().all():  # three classes: one vs rest
                    names = layout.CLASS_NAMES.get(ds, ())
                    for k in range(int(grp["label"].max()) + 1):
                        column = f"probability_{k}"
                        truth = (grp["label"] == k).astype(int)
                        if column not in grp or truth.nunique() < 2:
                            continue
                        fpr, tpr = metrics.roc(truth, grp[column])
                        auc = metrics.classification_scores(truth, grp[column])["auc"]
                        what = names[k] if k < len(names) else k
                        ax.plot(fpr, tpr, label=f"{name}: {what} vs rest (AUC {auc:.3f})")
                    continue
                fpr, tpr = metrics.roc(grp["label"], grp["probability"])
                auc = metrics.classification_scores(grp["label"], grp["probability"])["auc"]
                ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
            ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
            ax.set_title(f"ROC — {ds} test")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend(fontsize=7)
        save(fig, "roc.png")

        acc = summary[summary["dataset"].isin(datasets) & summary["accuracy"].notna()] if "accuracy" in summary else None
        if acc is not None and not acc.empty:
            fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
            order = {"full": 10**9}
            for ax, ds in zip(axes[0], datasets):
                part = acc[acc["dataset"] == ds]
                for (preset, seg_labels), grp in part.groupby(["preset", "seg_labels"]):
                    g = grp.groupby("cls_labels")["accuracy"].agg(["mean", "std"]).reset_index()
                    g["x"] = g["cls_labels"].map(lambda v: order.get(v, None) or int(v))
                    g = g.sort_values("x")
                    ax.errorbar(range(len(g)), g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3,
                                label=f"{preset}" + (f"-s{seg_labels}" if seg_labels else ""))
                    ax.set_xticks(range(len(g)), g["cls_labels"])
                ax.set_title(rf"Accuracy vs $|\mathcal{{D}}_l^c|$ — {ds}")
                ax.set_xlabel("labelled classification images")
                ax.set_ylabel("accuracy")
                ax.legend(fontsize=7)
            save(fig, "accuracy_vs_labels.png")

    # Boundary overlays and saliency maps from the stored examples.
    seg_runs = {r: e for r, e in examples.items() if any(k.endswith("_pred") for k in e)}
    if seg_runs:
        datasets = sorted({k[: -len("_pred")] for e in seg_runs.values() for k in e if k.endswith("_pred")})
        fig, axes = plt.subplots(len(datasets), len(seg_runs), figsize=(3 * len(seg_runs), 3 * len(datasets)),
                                 squeeze=False)
        for j, (run, ex) in enumerate(sorted(seg_runs.items())):
            for i, ds in enumerate(datasets):
                ax = axes[i, j]
                ax.axis("off")
                if f"{ds}_pred" not in ex:
                    continue
                image = ex[f"{ds}_image"][0]
                overlay = np.stack([image] * 3, -1)
                overlay[find_boundaries(ex[f"{ds}_ref"][0])] = [0, 1, 0]
                overlay[find_boundaries(ex[f"{ds}_pred"][0])] = [1, 0, 0]
                ax.imshow(overlay)
                ax.set_title(f"{run}\n{ds}", fontsize=7)
        from matplotlib.lines import Line2D

        fig.legend(handles=[Line2D([], [], color=(0, 1, 0), lw=2, label="reference"),
                            Line2D([], [], color=(1, 0, 0), lw=2, label="prediction")],
                   loc="lower center", ncol=2, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        save(fig, "boundaries.png")

    for task, suffix in (("classification", "_probability"), ("segmentation", "_pred")):
        with_saliency = [(r, e) for r, e in sorted(examples.items()) if any(k.endswith("_saliency") for k in e)]
        run, chosen = next(((r, e) for r, e in with_saliency if r in featured
                            and any(k.endswith(suffix) for k in e)), next(iter(with_saliency), (None, None)))
        if chosen is None:
            continue
        keys = sorted(k[: -len("_image")] for k in chosen if k.endswith("_image"))
        keys = [k for k in keys if (f"{k}_pred" in chosen) == (task == "segmentation")]
        if not keys:
            continue
        n = max(len(chosen[f"{k}_image"]) for k in keys)
        fig, axes = plt.subplots(2 * len(keys), n, figsize=(2.2 * n, 4.4 * len(keys)), squeeze=False)
        for i, ds in enumerate(keys):
            for j in range(len(chosen[f"{ds}_image"])):
                # each source's own classes: JSRT nodule, Montgomery TB, CheX/NIHX pneumonia, CCX three
                names = layout.CLASS_NAMES.get(ds.removesuffix("_classification"), ("normal", "abnormal"))
                label = int(chosen[f"{ds}_label"][j])
                title = names[label] if 0 <= label < len(names) else "no label"
                axes[2 * i, j].imshow(chosen[f"{ds}_image"][j], cmap="gray", vmin=0, vmax=1)
                axes[2 * i, j].set_title(f"{ds}: {title}", fontsize=7)
                shown = axes[2 * i + 1, j].imshow(chosen[f"{ds}_saliency"][j], cmap="inferno")
                axes[2 * i + 1, j].set_title("saliency |∂ logit / ∂ x|", fontsize=7)
                fig.colorbar(shown, ax=axes[2 * i + 1, j], fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle(f"Saliency of {run} (test images)", fontsize=9)
        save(fig, f"saliency_{task}.png")

    return paths
