"""`multimix evaluate --run NAME`: the best checkpoint on the test sets.

In-domain: CheX test (classification) and JSRT test (segmentation);
cross-domain: NIHX (classification, all 4,185 images) and MCU test
(segmentation) — for the tasks the run's preset learns. A classifier of the
segmentation source's own classes (seed 003's APPAU-Net) is tested on that
source's test images (`test_sets`); so is a segmentor trained on one of
seed 003's datasets (MCX, SCX, JCX, CCX: `split.segmentation_dataset`),
whose test partition is its own. CCX's three classes are scored with
`metrics.multiclass_scores` (per-class probabilities in per_image.csv). The model runs in eval
mode (dropout off). Writes, under `data/eval/NAME/`:
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
The summary is also logged to the run's MLflow record as `test_<dataset>_<metric>`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from multimix import localisation, metrics, tracking
from multimix.config import Config
from multimix.data import layout
from multimix.data.preprocess import read_manifest
from multimix.data.loader import open_images
from multimix.errors import InputError
from multimix.study import find_run
from multimix.methods import load_predictor
from multimix.training.loop import pick_device

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


def eval_dir(cfg: Config, run: str) -> Path:
    return Path(cfg.evaluate.dir) / run


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
def evaluate(cfg: Config, run: str, device: str | None = None, use_mlflow: bool = True) -> dict:
    spec = find_run(cfg, run)
    best_path = cfg.runs_dir / run / "best.pt"
    if not best_path.is_file():
        raise InputError(f"{best_path}: not found (run `multimix train --run {run}` first)")
    dev = pick_device(device or cfg.train.device)
    if spec.variant.method == "chexseg":  # seed 004: CheXlocalize's test set and conventions
        from multimix.evaluation_chexseg import evaluate_run

        per_image, summary = evaluate_run(cfg, spec, dev)
        _write(cfg, run, per_image, summary, {})
        if use_mlflow:
            _log(cfg, run, metric_names(summary))
        return summary
    model = load_predictor(torch.load(best_path, map_location=dev, weights_only=True), dev)
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
                ablated = None
                if task == "segmentation" and model.bridge:
                    ablated = model(x, with_classifier=False, zero_saliency=True).mask_logits
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
    _write(cfg, run, per_image, summary, examples)
    if use_mlflow:
        _log(cfg, run, metric_names(summary))
    return summary


def _write(cfg: Config, run: str, per_image: pd.DataFrame, summary: dict, examples: dict) -> None:
    out_dir = eval_dir(cfg, run)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_image.to_csv(out_dir / "per_image.csv", index=False)
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    np.savez_compressed(out_dir / "examples.npz", **examples)


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


def metric_names(summary: dict, prefix: str = "test") -> dict[str, float]:
    """A (nested) evaluation summary as MLflow metrics: test_<key>_<key>…, finite numbers only
    (e.g. test_jsrt_dice; seed 004's test_auc_Cardiomegaly)."""
    out = {}
    for key, value in summary.items():
        name = f"{prefix}_{key}".replace(" ", "_")
        if isinstance(value, dict):
            out.update(metric_names(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            out[name] = float(value)
    return out


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


def _log(cfg: Config, run: str, values: dict[str, float]) -> None:
    """Add the test metrics to the run's training record in MLflow (where the store has it)."""
    import mlflow

    info = cfg.checkpoint_dir / run / "run_info.json"
    run_id = json.loads(info.read_text()).get("mlflow_run_id") if info.exists() else None
    if not run_id:
        return
    client = mlflow.MlflowClient(tracking_uri=tracking.tracking_uri())
    try:
        client.get_run(run_id)
    except Exception:
        return  # a store without this run (e.g. another MLFLOW_TRACKING_URI)
    for name, value in values.items():
        client.log_metric(run_id, name, value)
