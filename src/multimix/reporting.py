"""`multimix report`: the paper's tables and figures for every run of a study.

Reads the outputs of `evaluate` (and the training histories) for the runs
of the study in `params.yaml` and writes to `reports/` (the `report.dir`
parameter):
  table2_in_domain.{md,csv}     CheX (classification) + JSRT (segmentation)
  table3_cross_domain.{md,csv}  NIHX (classification) + MCU (segmentation)
      rows: model x |D_l^c| x |D_l^s|; cells: mean ± std over repeats; the
      `p` columns hold the paired Student's t-test (scipy `ttest_rel`) of
      MultiMix against that row's model, on per-image scores (Dice for
      segmentation, correctness for classification) averaged over repeats,
      with MultiMix at the same label counts;
  paper_comparison.md           our MultiMix rows beside the paper's Tables 2-3;
  summary.json                  key test scores per model and test set, mean over
      repeats (the DVC metrics file of the study: `dvc exp show` lists these);
  claims.{md,csv}               the paper's claims (MultiMix vs U-Net in Dice, vs Enc in
      accuracy, bridge on vs off, SSL, multi-tasking, consistency) tested with
      paired t-tests wherever the study trained both models;
  bridge_sensitivity.{md,csv}   per run and segmentation test set: Dice with
      the saliency bridge as trained and with its saliency channel zeroed,
      and the mean |change| of the mask logits (0 for models without a bridge);
  saliency_localisation.{md,csv} per run and classification test set of phantoms:
      the saliency map scored against the pneumonia opacities' exact masks
      (pointing game, mass inside, IoU of its top 5 %, and the chance level);
  seed003.{md,csv}              seed 003's models (when the study has any) on their
      segmentation source's test images: its Tables 1-2's columns (classification
      Acc, PR, RE; segmentation DS, JS, SSIM, F1, HD, SN, SP, PR, RC), mean ± std
      over repeats, each row followed by the paper's row for the same dataset
      and model (src/multimix/seed003_tables.csv) where the paper has one;
  figures/*.png                 Dice distributions, accuracy vs label count, ROC
      curves, Bland-Altman of lung pixel counts, boundary overlays (reference
      green, prediction red), saliency maps for classification and
      segmentation images, and the bridge sensitivity per epoch (validation).
Figures and tables are also logged to an MLflow run named `report` in the
study's experiment.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from multimix import metrics, tracking
from multimix.config import Config
from multimix.data import layout
from multimix.errors import InputError
from multimix.evaluation import eval_dir
from multimix.presets import PRESETS
from multimix.study import expand, run_name

CLS_COLUMNS = {"accuracy": "Acc", "f1_normal": "F1-N", "f1_pneumonia": "F1-P", "auc": "AUC"}
SEG_COLUMNS = {"dice": "DS", "jaccard": "JS", "ssim": "SSIM", "hausdorff": "HD", "precision": "P", "recall": "R"}
DOMAINS = {"in-domain": ("chex", "jsrt", "table2_in_domain"), "cross-domain": ("nihx", "mcu", "table3_cross_domain")}
MISSING = "—"  # the one marker of a value that does not exist (not trained, not defined)

SEED003_CLS = {"accuracy": "Acc", "precision": "PR (cls)", "recall": "RE (cls)"}
SEED003_SEG = {"dice": "DS", "jaccard": "JS", "ssim": "SSIM", "f1": "F1", "hausdorff": "HD", "sensitivity": "SN",
               "specificity": "SP", "precision": "PR", "recall": "RC"}

# Rows in the paper's order (MultiMix's baselines, then MultiMix), then seed 003's presets.
PRESET_ORDER = list(PRESETS)


def load_runs(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(run-level summary, per-image rows, examples per run) of every evaluated run."""
    summaries, images, examples = [], [], {}
    for spec in expand(cfg):
        if PRESETS[spec.preset].method == "chexseg":
            continue  # seed 004's runs: reporting_chexseg
        name = spec.name
        folder = eval_dir(cfg, name)
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


def _fmt(values: pd.Series, spec: str = ".3f") -> str:
    values = values.dropna()
    if values.empty:
        return MISSING
    if len(values) == 1:
        return f"{values.iloc[0]:{spec}}"
    return f"{values.mean():{spec}} ± {values.std(ddof=1):{spec}}"


def paired(ours: pd.DataFrame, theirs: pd.DataFrame, score: str) -> tuple[pd.Series, pd.Series]:
    """Per-image scores of two models on the images both were tested on (each image's mean over repeats)."""
    a = ours.groupby("id")[score].mean()
    b = theirs.groupby("id")[score].mean()
    common = a.index.intersection(b.index)
    return a[common], b[common]


def paired_t_p(a: pd.Series, b: pd.Series) -> float:
    """Paired Student's t-test p; 1 for identical scores, NaN with fewer than two pairs."""
    if len(a) < 2:
        return float("nan")
    if np.allclose(a.to_numpy(), b.to_numpy()):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def _paired_p(images: pd.DataFrame, dataset: str, score: str, model: pd.Series, label_key: str) -> float:
    """Paired t-test of MultiMix vs `model` on per-image scores, same label count."""
    if model["preset"] == "multimix":
        return float("nan")
    subset = images[images["dataset"] == dataset]
    ours = subset[(subset["preset"] == "multimix") & (subset[label_key] == model[label_key])]
    theirs = subset[(subset["preset"] == model["preset"]) & (subset["cls_labels"] == model["cls_labels"])
                    & (subset["seg_labels"] == model["seg_labels"])]
    if ours.empty or theirs.empty:
        return float("nan")
    return paired_t_p(*paired(ours, theirs, score))


# The paper's claims (section 4), each a comparison of two models on one score, tested
# wherever a study trained both at the same label counts.
CLAIMS = (
    ("MultiMix segments better than U-Net", "multimix", "unet", "dice"),
    ("MultiMix classifies better than Enc", "multimix", "enc", "correct"),
    ("the saliency bridge helps segmentation (UMTL-S vs UMTL)", "umtl_s", "umtl", "dice"),
    ("the saliency bridge helps with SSL (UMTL-SSL-S vs UMTL-SSL)", "umtl_ssl_s", "umtl_ssl", "dice"),
    ("confidence-based SSL helps classification (Enc-SSL vs Enc)", "enc_ssl", "enc", "correct"),
    ("multi-tasking helps classification (UMTL vs Enc)", "umtl", "enc", "correct"),
    ("the segmentation consistency helps (MultiMix vs UMTL-SSL-S)", "multimix", "umtl_ssl_s", "dice"),
)


def claims_table(images: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Each claim at every label setting and test set where both models exist: mean
    scores, difference, paired t-test, and a verdict (holds / not significant / reversed)."""
    columns = ["claim", "dataset", "|D_l^c|", "|D_l^s|", "A", "B", "score", "A mean", "B mean", "A − B", "p",
               "images", "verdict"]
    if images.empty:
        return pd.DataFrame(columns=columns)
    if "probability" in images:
        images = images.assign(correct=((images["probability"] >= 0.5).astype(float) == images["label"]).astype(float))
    rows = []
    for claim, a_preset, b_preset, score in CLAIMS:
        if score not in images:
            continue
        scored = images[images[score].notna()]
        for (dataset, cls, seg), ours in scored[scored["preset"] == a_preset].groupby(
                ["dataset", "cls_labels", "seg_labels"], sort=True):
            theirs = scored[(scored["preset"] == b_preset) & (scored["dataset"] == dataset)]
            # a single-task model matches on its own task's label count only
            if theirs["cls_labels"].ne("").any():
                theirs = theirs[theirs["cls_labels"] == cls]
            if theirs["seg_labels"].ne("").any():
                theirs = theirs[theirs["seg_labels"] == seg]
            if theirs.empty:
                continue
            a, b = paired(ours, theirs, score)
            if len(a) == 0:
                continue
            p = paired_t_p(a, b)
            diff = float(a.mean() - b.mean())
            verdict = ("not significant" if not p < alpha else "holds" if diff > 0 else "reversed")
            rows.append({"claim": claim, "dataset": dataset, "|D_l^c|": cls or MISSING, "|D_l^s|": seg or MISSING,
                         "A": a_preset, "B": b_preset, "score": "Dice" if score == "dice" else "accuracy",
                         "A mean": f"{a.mean():.3f}", "B mean": f"{b.mean():.3f}", "A − B": f"{diff:+.3f}",
                         "p": MISSING if not np.isfinite(p) else f"{p:.3g}", "images": len(a), "verdict": verdict})
    return pd.DataFrame(rows, columns=columns)


def domain_table(summary: pd.DataFrame, images: pd.DataFrame, domain: str) -> pd.DataFrame:
    cls_ds, seg_ds, _ = DOMAINS[domain]
    if not images.empty and "probability" in images:
        images = images.assign(correct=((images["probability"] >= 0.5).astype(float) == images["label"]).astype(float))
    keys = ["preset", "cls_labels", "seg_labels"]
    models = summary[keys].drop_duplicates()
    models = models.assign(order=models["preset"].map(PRESET_ORDER.index)).sort_values(["order", "cls_labels", "seg_labels"])
    rows = []
    for _, model in models.iterrows():
        mine = summary[(summary[keys] == model[keys]).all(axis=1)]
        row = {"Model": model["preset"], "|D_l^c|": model["cls_labels"] or MISSING, "|D_l^s|": model["seg_labels"] or MISSING}
        cls = mine[mine["dataset"] == cls_ds]
        for key, col in CLS_COLUMNS.items():
            row[col] = _fmt(cls[key]) if key in cls else MISSING
        row["p (Acc)"] = _paired_p(images, cls_ds, "correct", model, "cls_labels") if not cls.empty else float("nan")
        seg = mine[mine["dataset"] == seg_ds]
        for key, col in SEG_COLUMNS.items():
            row[col] = _fmt(seg[key]) if key in seg else MISSING
        row["p (DS)"] = _paired_p(images, seg_ds, "dice", model, "seg_labels") if not seg.empty else float("nan")
        row["repeats"] = int(mine["repeat"].nunique())
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("p (Acc)", "p (DS)"):
        table[col] = table[col].map(lambda p: MISSING if not np.isfinite(p) else f"{p:.3g}")
    return table


def _per_model_and_test_set(rows: pd.DataFrame, cells) -> list[dict]:
    """One row per (model, label counts, test set), in Table 2's model order: the identifying
    columns, then `cells(group)` (the group's repeats), then the number of repeats."""
    rows = rows.assign(order=rows["preset"].map(PRESET_ORDER.index))
    out = []
    for _, grp in rows.sort_values(["order", "cls_labels", "seg_labels", "dataset"]).groupby(
            ["preset", "cls_labels", "seg_labels", "dataset"], sort=False):
        first = grp.iloc[0]
        out.append({"Model": first["preset"], "|D_l^c|": first["cls_labels"] or MISSING,
                    "|D_l^s|": first["seg_labels"] or MISSING, "dataset": first["dataset"], **cells(grp),
                    "repeats": int(grp["repeat"].nunique())})
    return out


BRIDGE_COLUMNS = ["Model", "|D_l^c|", "|D_l^s|", "dataset", "DS", "DS, saliency zeroed", "Δ DS", "mean |Δ logit|",
                  "repeats"]


def bridge_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Bridge sensitivity on the segmentation test sets, mean ± std over repeats."""
    seg = summary[summary["task"] == "segmentation"] if "task" in summary else summary.iloc[0:0]
    if seg.empty:
        return pd.DataFrame(columns=BRIDGE_COLUMNS)
    rows = _per_model_and_test_set(seg, lambda grp: {
        "DS": _fmt(grp["dice"]), "DS, saliency zeroed": _fmt(grp["dice"] - grp["bridge_dice_change"]),
        "Δ DS": _fmt(grp["bridge_dice_change"]),
        "mean |Δ logit|": _fmt(grp["bridge_logit_change"], ".2e")})  # often 1e-4: .3f shows 0
    return pd.DataFrame(rows, columns=BRIDGE_COLUMNS)


SALIENCY_COLUMNS = ["Model", "|D_l^c|", "|D_l^s|", "dataset", "images", "hit", "mass", "chance", "IoU top 5 %",
                    "repeats"]


def saliency_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Saliency localisation on the pneumonia phantoms' known opacities, mean ± std over repeats."""
    scored = summary.dropna(subset=["saliency_hit"]) if "saliency_hit" in summary else summary.iloc[0:0]
    if scored.empty:
        return pd.DataFrame(columns=SALIENCY_COLUMNS)
    rows = _per_model_and_test_set(scored, lambda grp: {
        "images": int(grp["saliency_images"].iloc[0]), "hit": _fmt(grp["saliency_hit"]),
        "mass": _fmt(grp["saliency_mass"]), "chance": _fmt(grp["saliency_chance"]),
        "IoU top 5 %": _fmt(grp["saliency_iou"])})
    return pd.DataFrame(rows, columns=SALIENCY_COLUMNS)


def paper_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    paper = pd.read_csv(resources.files("multimix").joinpath("paper_tables.csv").open(), comment="#", dtype={"cls_labels": str, "seg_labels": str})
    ours = summary[summary["preset"] == "multimix"]
    rows = []
    for _, ref in paper.iterrows():
        match = ours[(ours["dataset"] == ref["dataset"]) & (ours["cls_labels"].astype(str) == str(ref["cls_labels"]))
                     & (ours["seg_labels"].astype(str) == str(ref["seg_labels"]))]
        if match.empty or ref["metric"] not in match:
            continue
        rows.append({"table": ref["table"], "dataset": ref["dataset"], "|D_l^c|": ref["cls_labels"],
                     "|D_l^s|": ref["seg_labels"], "metric": ref["metric"],
                     "paper": f"{ref['mean']:.3f} ± {ref['std']:.3f}", "ours": _fmt(match[ref["metric"]])})
    return pd.DataFrame(rows, columns=["table", "dataset", "|D_l^c|", "|D_l^s|", "metric", "paper", "ours"])


def seed003_table(summary: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Seed 003's models on `dataset` (the study's segmentation source), with the paper's rows."""
    columns = ["Model", "|D_l^s|", "source", *SEED003_CLS.values(), *SEED003_SEG.values(), "repeats"]
    if summary.empty:
        return pd.DataFrame(columns=columns)
    ours = summary[summary["preset"].map(lambda p: PRESETS[p].method == "appaunet")]
    paper = pd.read_csv(resources.files("multimix").joinpath("seed003_tables.csv").open(), comment="#")
    paper = paper[paper["dataset"] == dataset]
    rows = []
    for (preset, seg_labels), grp in sorted(ours.groupby(["preset", "seg_labels"]),
                                            key=lambda kv: (PRESET_ORDER.index(kv[0][0]), str(kv[0][1]))):
        seg = grp[grp["dataset"] == dataset]
        cls = grp[grp["dataset"] == f"{dataset}_classification"]
        row = {"Model": preset, "|D_l^s|": seg_labels or MISSING, "source": "ours"}
        row |= {col: _fmt(cls[key]) if key in cls and not cls.empty else MISSING for key, col in SEED003_CLS.items()}
        row |= {col: _fmt(seg[key]) if key in seg and not seg.empty else MISSING for key, col in SEED003_SEG.items()}
        rows.append(row | {"repeats": int(grp["repeat"].nunique())})
        theirs = paper[paper["preset"] == preset]
        if len(theirs):
            values = {(r.task, r.metric): f"{r.value:.3f}" for r in theirs.itertuples()}
            ref = {"Model": preset, "|D_l^s|": f"table {int(theirs['table'].iloc[0])}", "source": "paper"}
            ref |= {col: values.get(("classification", key), MISSING) for key, col in SEED003_CLS.items()}
            ref |= {col: values.get(("segmentation", key), MISSING) for key, col in SEED003_SEG.items()}
            rows.append(ref | {"repeats": MISSING})
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------ figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(frame_or_row) -> str:
    """A model as its runs are named, without the repeat: `multimix-s10-c100`."""
    return run_name(frame_or_row["preset"], frame_or_row["seg_labels"] or None,
                    frame_or_row["cls_labels"] or None).rsplit("-r", 1)[0]


def figures(summary: pd.DataFrame, images: pd.DataFrame, examples: dict, out: Path,
            histories: pd.DataFrame | None = None) -> list[Path]:
    plt = _plt()
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
        seg = seg.assign(model=seg.apply(_label, axis=1))
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
        models = sorted(seg["model"].unique(), key=lambda m: (PRESET_ORDER.index(m.split("-")[0]), m))
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
        cls = cls.assign(model=cls.apply(_label, axis=1))
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
        run, chosen = next(((r, e) for r, e in with_saliency if r.startswith("multimix")
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

    bridged = histories[histories["bridge"]] if histories is not None and not histories.empty else None
    if bridged is not None and not bridged.empty and "val_bridge_logit_change" in bridged:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for run, grp in bridged.groupby("run"):
            x = grp["step"] if "step" in grp else grp["epoch"] + 1
            axes[0].plot(x, grp["val_bridge_logit_change"], marker="o", ms=3, label=run)
            axes[1].plot(x, grp["val_bridge_dice_change"], marker="o", ms=3, label=run)
        axes[0].set_title("mean |Δ mask logit| when the saliency is zeroed")
        axes[1].set_title("Dice − Dice with saliency zeroed")
        for ax in axes:
            ax.set_xlabel("optimiser step")
            ax.axhline(0, color="grey", lw=0.5)
            ax.legend(fontsize=7)
        fig.suptitle("Saliency bridge sensitivity on validation (JSRT val)", fontsize=9)
        save(fig, "bridge_sensitivity.png")
    return paths


def to_markdown(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|")  # |D_l^c| must not split a Markdown column

    head = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


SUMMARY_METRICS = ("accuracy", "auc", "dice", "hausdorff")


def summary_metrics(summary: pd.DataFrame) -> dict:
    """{model: {test set: {metric: mean over repeats}}} for the few scores a study is read by."""
    out: dict = {}
    if summary.empty:
        return out
    summary = summary.assign(model=summary.apply(_label, axis=1))
    for (model, dataset), grp in summary.groupby(["model", "dataset"]):
        values = {m: round(float(grp[m].mean()), 4) for m in SUMMARY_METRICS if m in grp and grp[m].notna().any()}
        out.setdefault(model, {})[dataset] = values
    return out


def load_histories(cfg: Config) -> pd.DataFrame:
    """Per-epoch training records (history.csv) of the study's runs, where present."""
    frames = []
    for spec in expand(cfg):
        path = cfg.runs_dir / spec.name / "history.csv"
        if path.is_file():
            frames.append(pd.read_csv(path).assign(run=spec.name, preset=spec.preset, bridge=spec.variant.bridge))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def budget_line(cfg: Config) -> str:
    tc = cfg.train
    return (f"Study `{cfg.study.name}`; every run trained {tc.epochs} × {tc.steps_per_epoch} = "
            f"{tc.epochs * tc.steps_per_epoch:,} optimiser steps (batch {tc.batch_size} per stream), "
            f"lr {tc.lr:g} × {tc.lr_gamma:g} every {tc.lr_step_epochs * tc.steps_per_epoch:,} steps; "
            f"images {cfg.preprocess.size}².")


def _no_multimix_runs(out: Path, write_table) -> None:
    note = "No MultiMix or seed-003 runs in this study (seed 004's runs: chexseg.md).\n"
    for stem, title in (("table2_in_domain", "Table 2 — in-domain (CheX, JSRT)"),
                        ("table3_cross_domain", "Table 3 — cross-domain (NIHX, MCU)"),
                        ("claims", "The paper's claims, tested on this study"),
                        ("bridge_sensitivity", "Saliency bridge sensitivity (test sets)"),
                        ("saliency_localisation", "Does the saliency point at the pneumonia? (phantom test sets)")):
        write_table(stem, title, "", pd.DataFrame(), empty=note)
    (out / "paper_comparison.md").write_text("# MultiMix: ours vs the paper (Tables 2–3)\n\n" + note)
    pd.DataFrame().to_csv(out / "runs_summary.csv", index=False)
    (out / "summary.json").write_text("{}\n")
    (out / "figures").mkdir(exist_ok=True)


def report(cfg: Config, out: Path | None = None, use_mlflow: bool = True) -> dict[str, Path]:
    out = out or Path(cfg.report.dir)
    summary, images, examples = load_runs(cfg)
    out.mkdir(parents=True, exist_ok=True)
    written = {}

    def write_table(stem: str, title: str, intro: str, table: pd.DataFrame, empty: str | None = None) -> None:
        """`<stem>.csv` (plain) and `<stem>.md` (title, the study's budget, what the columns mean, the table)."""
        table.to_csv(out / f"{stem}.csv", index=False)
        body = to_markdown(table) if len(table) or empty is None else empty
        (out / f"{stem}.md").write_text(f"# {title}\n\n{budget_line(cfg)}{intro}\n\n" + body)
        written[stem] = out / f"{stem}.md"

    if summary.empty:  # a study of seed 004's runs alone: the MultiMix files say so
        _no_multimix_runs(out, write_table)
    else:
        for domain, (_, _, stem) in DOMAINS.items():
            title = "Table 2 — in-domain (CheX, JSRT)" if domain == "in-domain" else "Table 3 — cross-domain (NIHX, MCU)"
            write_table(stem, title, "\n\nmean ± std over repeats; p: paired t-test of MultiMix against the row's "
                        "model on per-image scores.", domain_table(summary, images, domain))
        write_table(
            "claims", "The paper's claims, tested on this study",
            "\n\nA vs B on per-image scores (Dice; accuracy = share of images classified correctly), each image's "
            "score averaged over repeats, paired Student's t-test over the test images both models saw; verdict at "
            "p < 0.05: *holds* (A better), *reversed* (B better) or *not significant*. A single-task model is compared "
            "at its own task's label count.", claims_table(images), empty="No pair of models of a claim in this study.\n")
        write_table(
            "bridge_sensitivity", "Saliency bridge sensitivity (test sets)",
            f" Saliency normalisation: `{cfg.model.saliency_norm}`.\n\nDS with the bridge as trained, and with its "
            "saliency channel replaced by zeros (the image channel kept); Δ DS = DS − DS with saliency zeroed; mean "
            "|Δ logit| = mean absolute change of the mask logits. Models without a bridge have no saliency channel: 0 "
            "by definition.", bridge_table(summary))
        write_table(
            "saliency_localisation", "Does the saliency point at the pneumonia? (phantom test sets)",
            "\n\nThe classifier's saliency map (|∂ max-class logit / ∂ x|, the map MultiMix's bridge feeds the "
            "decoder) on the pneumonia phantoms of the classification test sets, scored against their exact opacity "
            "masks: hit = pointing game (the map's maximum inside an opacity), mass = share of the map inside the "
            "opacities, chance = the opacities' area share (what a uniform map scores on both), IoU top 5 % = IoU of "
            "the map's top 5 % of pixels with the opacities. Real data has no such masks: no rows.",
            saliency_table(summary), empty="No classification test set with known opacity masks in this study.\n")
        if any(PRESETS[spec.preset].method == "appaunet" for spec in expand(cfg)):
            dataset = cfg.split.segmentation_dataset
            write_table(
                "seed003", f"Seed 003 — segmentors and APPAU-Net on {dataset} (its Tables 1–2)",
                f" Seed 003's models: Adam lr {cfg.seed003.lr_segmentor:g} (S) / {cfg.seed003.lr_discriminator:g} (D), "
                f"on the schedule above.\n\nTest images of `{dataset}` (`split.segmentation_dataset`, data source "
                f"`{cfg.data.source}`); mean ± std over repeats. Paper rows "
                "(src/multimix/seed003_tables.csv) follow ours where the paper has the same dataset (mcx, scx, jcx, ccx: "
                "seed 003's Table 3 partitions) and model; it gives one value per cell. Classification (APPAU-Net's "
                "discriminator): accuracy, macro precision and recall. Segmentation per image: F1 = the mean of the lung "
                "and background classes' pixel F1, SN = RC = pixel recall, SP = pixel specificity; HD in pixels of our "
                f"{cfg.preprocess.size}² grid (the paper states no unit). Synthetic phantoms are not the paper's data.",
                seed003_table(summary, dataset))
        comparison = paper_comparison(summary)
        (out / "paper_comparison.md").write_text(
            "# MultiMix: ours vs the paper (Tables 2–3)\n\nPaper values transcribed from the paper's tables "
            "(src/multimix/paper_tables.csv). Synthetic data is not the paper's data: the comparison is "
            "meaningful only on the real datasets.\n\nUnits of HD: ours is the average (modified) Hausdorff "
            "distance in pixels of the evaluation grid (256 × 256 in the paper study). The paper does not state its "
            "units; its values (≈ 0.1–5) fit neither pixels of a 256² grid for these masks nor millimetres well, so "
            "compare HD only between rows of our own tables.\n\n" + (to_markdown(comparison) if len(comparison) else
                                                           "No MultiMix run matches a label setting of the paper.\n"))
        written["paper_comparison"] = out / "paper_comparison.md"
        summary.to_csv(out / "runs_summary.csv", index=False)
        (out / "summary.json").write_text(json.dumps(summary_metrics(summary), indent=1, sort_keys=True) + "\n")
        figs = figures(summary, images, examples, out / "figures", load_histories(cfg))
        for path in figs:
            written[path.stem] = path
    from multimix import reporting_chexseg

    if reporting_chexseg.has_runs(cfg):
        for path in reporting_chexseg.write(cfg, out):
            written[path.stem] = path
    if use_mlflow:
        import mlflow

        tracking.use_experiment(cfg.study.name)
        with mlflow.start_run(run_name="report", tags={"kind": "report"}):
            for path in written.values():
                mlflow.log_artifact(str(path), artifact_path="report" if path.suffix == ".md" else "figures")
    return written
