"""MultiMix's report (its paper's Tables 2-3 and claims) over the study's MultiMix runs:
  table2_in_domain.{md,csv}     CheX (classification) + JSRT (segmentation)
  table3_cross_domain.{md,csv}  NIHX (classification) + MCU (segmentation)
      rows: model x |D_l^c| x |D_l^s|; cells: mean ± std over repeats; the
      `p` columns hold the paired Student's t-test (scipy `ttest_rel`) of
      MultiMix against that row's model, on per-image scores (Dice for
      segmentation, correctness for classification) averaged over repeats,
      with MultiMix at the same label counts;
  paper_comparison.md           our MultiMix rows beside the paper's Tables 2-3;
  claims.{md,csv}               the paper's claims (MultiMix vs U-Net in Dice, vs Enc in
      accuracy, bridge on vs off, SSL, multi-tasking, consistency) tested with
      paired t-tests wherever the study trained both models;
  bridge_sensitivity.{md,csv}   per run and segmentation test set: Dice with
      the saliency bridge as trained and with its saliency channel zeroed,
      and the mean |change| of the mask logits (0 for models without a bridge);
  saliency_localisation.{md,csv} per run and classification test set of phantoms:
      the saliency map scored against the pneumonia opacities' exact masks
      (pointing game, mass inside, IoU of its top 5 %, and the chance level);
  figures/bridge_sensitivity.png the bridge sensitivity per epoch (validation).
The shared figures (Dice distributions, ROC curves, Bland-Altman, boundaries, saliency maps)
and summary.json are the report stage's (`multimix.reporting`, `multimix.testsets`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from multimix import tables, testsets
from multimix.methods.multimix.presets import PRESETS
from multimix.tables import MISSING, fmt as _fmt, paired, paired_t_p, write_table

PRESET_ORDER = list(PRESETS)  # rows in the paper's order: the baselines, then MultiMix

CLS_COLUMNS = {"accuracy": "Acc", "f1_normal": "F1-N", "f1_pneumonia": "F1-P", "auc": "AUC"}
SEG_COLUMNS = {"dice": "DS", "jaccard": "JS", "ssim": "SSIM", "hausdorff": "HD", "precision": "P", "recall": "R"}
DOMAINS = {"in-domain": ("chex", "jsrt", "table2_in_domain"), "cross-domain": ("nihx", "mcu", "table3_cross_domain")}
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


def repeat_means(ours: pd.DataFrame, theirs: pd.DataFrame, score: str, images: pd.Index) -> tuple[pd.Series, pd.Series]:
    """Each repeat's mean score over `images` (those both models saw), for the repeats both ran."""
    a = ours[ours["id"].isin(images)].groupby("repeat")[score].mean()
    b = theirs[theirs["id"].isin(images)].groupby("repeat")[score].mean()
    shared = a.index.intersection(b.index)
    return a[shared], b[shared]


def claims_table(images: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Each claim at every label setting and test set where both models exist: mean
    scores, difference, paired t-test over images, and a verdict (holds / not significant /
    reversed). Beside it, the same comparison over repeats: the images treat each image's
    mean over repeats as one sample, so they cannot see that the repeats themselves disagree
    (one repeat calling every image pneumonia, another none); repeat r of A and of B share
    the labelled subset, so the repeats' means are paired by repeat."""
    columns = ["claim", "dataset", "|D_l^c|", "|D_l^s|", "A", "B", "score", "A mean", "B mean", "A − B", "p",
               "images", "verdict", "p (repeats)", "repeats"]
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
            a_runs, b_runs = repeat_means(ours, theirs, score, a.index)
            p_runs = paired_t_p(a_runs, b_runs)
            rows.append({"claim": claim, "dataset": dataset, "|D_l^c|": cls or MISSING, "|D_l^s|": seg or MISSING,
                         "A": a_preset, "B": b_preset, "score": "Dice" if score == "dice" else "accuracy",
                         "A mean": f"{a.mean():.3f}", "B mean": f"{b.mean():.3f}", "A − B": f"{diff:+.3f}",
                         "p": MISSING if not np.isfinite(p) else f"{p:.3g}", "images": len(a), "verdict": verdict,
                         "p (repeats)": MISSING if not np.isfinite(p_runs) else f"{p_runs:.3g}",
                         "repeats": len(a_runs)})
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
    paper = pd.read_csv(resources.files(__package__).joinpath("paper_tables.csv").open(), comment="#", dtype={"cls_labels": str, "seg_labels": str})
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




def bridge_figure(histories: pd.DataFrame, out: Path) -> list[Path]:
    """Validation bridge sensitivity over training, per bridge run (figures/bridge_sensitivity.png)."""
    bridged = histories[histories["bridge"]] if histories is not None and not histories.empty else None
    if bridged is not None and not bridged.empty and "val_bridge_logit_change" in bridged:
        plt = tables.pyplot()
        out.mkdir(parents=True, exist_ok=True)
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
        fig.tight_layout()
        path = out / "bridge_sensitivity.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]
    return []


def load_histories(cfg, specs) -> pd.DataFrame:
    """Per-epoch training records (history.csv) of the study's runs, where present."""
    frames = []
    for spec in specs:
        path = cfg.runs_dir / spec.name / "history.csv"
        if path.is_file():
            frames.append(pd.read_csv(path).assign(run=spec.name, preset=spec.preset, bridge=spec.variant.bridge))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _no_runs(cfg, out: Path) -> list[Path]:
    written = []
    note = "No MultiMix runs in this study (other methods' runs: their own report files).\n"
    for stem, title in (("table2_in_domain", "Table 2 — in-domain (CheX, JSRT)"),
                        ("table3_cross_domain", "Table 3 — cross-domain (NIHX, MCU)"),
                        ("claims", "The paper's claims, tested on this study"),
                        ("bridge_sensitivity", "Saliency bridge sensitivity (test sets)"),
                        ("saliency_localisation", "Does the saliency point at the pneumonia? (phantom test sets)")):
        written.append(write_table(cfg, out, stem, title, "", pd.DataFrame(), empty=note))
    (out / "paper_comparison.md").write_text("# MultiMix: ours vs the paper (Tables 2–3)\n\n" + note)
    return written + [out / "paper_comparison.md"]




def report(cfg, runs, out: Path) -> list[Path]:
    """MultiMix's tables and its bridge figure for `runs` (the study's MultiMix runs)."""
    if not runs:
        return _no_runs(cfg, out)
    summary, images, _ = testsets.load_results(cfg, runs)
    written = []

    def w(*args, **kwargs) -> None:
        written.append(write_table(cfg, out, *args, **kwargs))

    for domain, (_, _, stem) in DOMAINS.items():
        title = "Table 2 — in-domain (CheX, JSRT)" if domain == "in-domain" else "Table 3 — cross-domain (NIHX, MCU)"
        w(stem, title, "\n\nmean ± std over repeats; p: paired t-test of MultiMix against the row's "
                    "model on per-image scores.", domain_table(summary, images, domain))
    w(
        "claims", "The paper's claims, tested on this study",
        "\n\nA vs B on per-image scores (Dice; accuracy = share of images classified correctly), each image's "
        "score averaged over repeats, paired Student's t-test over the test images both models saw; verdict at "
        "p < 0.05: *holds* (A better), *reversed* (B better) or *not significant*. A single-task model is compared "
        "at its own task's label count. p (repeats): the same comparison over the repeats (each repeat's mean over "
        "those images, paired by repeat: repeat r of A and B share the labelled subset); with few repeats it is "
        "weak, but a verdict it does not echo rests on the images alone while the repeats disagree.",
        claims_table(images), empty="No pair of models of a claim in this study.\n")
    w(
        "bridge_sensitivity", "Saliency bridge sensitivity (test sets)",
        f" Saliency normalisation: `{cfg.multimix.saliency_norm}`.\n\nDS with the bridge as trained, and with its "
        "saliency channel replaced by zeros (the image channel kept); Δ DS = DS − DS with saliency zeroed; mean "
        "|Δ logit| = mean absolute change of the mask logits. Models without a bridge have no saliency channel: 0 "
        "by definition.", bridge_table(summary))
    w(
        "saliency_localisation", "Does the saliency point at the pneumonia? (phantom test sets)",
        "\n\nThe classifier's saliency map (|∂ max-class logit / ∂ x|, the map MultiMix's bridge feeds the "
        "decoder) on the pneumonia phantoms of the classification test sets, scored against their exact opacity "
        "masks: hit = pointing game (the map's maximum inside an opacity), mass = share of the map inside the "
        "opacities, chance = the opacities' area share (what a uniform map scores on both), IoU top 5 % = IoU of "
        "the map's top 5 % of pixels with the opacities. Real data has no such masks: no rows.",
        saliency_table(summary), empty="No classification test set with known opacity masks in this study.\n")
    comparison = paper_comparison(summary)
    (out / "paper_comparison.md").write_text(
        "# MultiMix: ours vs the paper (Tables 2–3)\n\nPaper values transcribed from the paper's tables "
        "(src/multimix/methods/multimix/paper_tables.csv). Synthetic data is not the paper's data: the comparison is "
        "meaningful only on the real datasets.\n\nUnits of HD: ours is the average (modified) Hausdorff "
        "distance in pixels of the evaluation grid (256 × 256 in the paper study). The paper does not state its "
        "units; its values (≈ 0.1–5) fit neither pixels of a 256² grid for these masks nor millimetres well, so "
        "compare HD only between rows of our own tables.\n\n" + (tables.to_markdown(comparison) if len(comparison) else
                                                       "No MultiMix run matches a label setting of the paper.\n"))
    written.append(out / "paper_comparison.md")
    histories = load_histories(cfg, runs)
    written += bridge_figure(histories, out / "figures") if not histories.empty else []
    return written
