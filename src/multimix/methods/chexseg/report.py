"""Seed 004's part of `multimix report` (CheXseg), written when the study has its runs:

  chexseg.{md,csv}      the p-sweep as the paper's Table 1 (CAM rows): per p, the test mIoU and
                        per-pathology IoU, mean over trials (± std), each followed by the paper's
                        row (methods/chexseg/paper_tables.csv); the distillation runs (teacher and
                        students, mIoU with its bootstrap interval); the pathology classifiers'
                        test AUC and their Grad-CAM maps' localisation (pointing-game hit rate,
                        saliency mass inside the masks, IoU of the top 5%); on phantoms the
                        pseudo-labels' IoU with the known truth
  figures/chexseg_p_sweep.png   mIoU against p: ours per trial and their mean, the paper's curve
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from multimix.data import layout
from multimix import paths, tables
from multimix.methods.chexseg.checkpoints import pseudo_label_file
from multimix.methods.chexseg.config import runs as chexseg_runs

PATHOLOGIES = list(layout.CHEXLOCALIZE_PATHOLOGIES)


def has_runs(cfg) -> bool:
    return bool(chexseg_runs(cfg.study.chexseg))


def _metrics(cfg, name: str) -> dict:
    path = paths.eval_dir(cfg, name) / "metrics.json"
    if not path.is_file():
        from multimix.errors import InputError

        raise InputError(f"{path}: not found (run `multimix evaluate --run {name}` first)")
    return json.loads(path.read_text())


def paper_table() -> pd.DataFrame:
    with resources.files(__package__).joinpath("paper_tables.csv").open() as fh:
        return pd.read_csv(fh, comment="#").set_index("pathology")


def other_convention(cfg) -> str:
    """The column of the IoU convention the study does not use."""
    return "mIoU, empty predictions count" if cfg.seed004.true_pos_only else "mIoU, true positives only"


def sweep_table(cfg) -> pd.DataFrame:
    """Per p: ours (mean ± std over trials) then the paper's row where it has that p. Beside the
    mIoU: how many pathologies it averages (with true_pos_only, one a model never predicts has
    no IoU and drops out of the mean) and the mIoU under the other convention."""
    runs = [s for s in chexseg_runs(cfg.study.chexseg) if s.trial is not None]
    rows, paper, other = [], paper_table(), other_convention(cfg)
    for p in dict.fromkeys(s.p for s in runs):
        trials = [_metrics(cfg, s.name) for s in runs if s.p == p]
        row = {"p": f"{p:g}", "source": "ours", "trials": len(trials)}
        for name in ["mIoU"] + PATHOLOGIES:
            values = np.array([t[name]["mean"] for t in trials], dtype=float)
            row[name] = _mean_std(values)
            if name == "mIoU":
                defined = [sum(np.isfinite(t[q]["mean"]) for q in PATHOLOGIES) for t in trials]
                row["pathologies"] = f"{np.mean(defined):.2g}/{len(PATHOLOGIES)}"  # mean over trials: 6.7/10
                row[other] = _mean_std(np.array([t["mIoU_other_convention"] for t in trials], dtype=float))
        rows.append(row)
        column = f"p{p:g}"
        if column in paper.columns:
            rows.append({"p": f"{p:g}", "source": "paper (CAM)", "trials": 3, "pathologies": "—", other: "—"} |
                        {name: f"{paper.loc[name, column]:.3f}" for name in ["mIoU"] + PATHOLOGIES})
    return pd.DataFrame(rows)


def _mean_std(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if not len(values):
        return "—"
    return f"{values.mean():.3f}" + (f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else "")


def distillation_table(cfg) -> pd.DataFrame:
    rows = []
    for spec in chexseg_runs(cfg.study.chexseg):
        if spec.preset.startswith(("teacher_", "student_")):
            m = _metrics(cfg, spec.name)["mIoU"]
            rows.append({"run": spec.name, "init": spec.preset.split("_", 1)[1],
                         "unlabelled": "—" if spec.unlabelled is None else f"{spec.unlabelled:g}",
                         "mIoU": f"{m['mean']:.3f}", "95% CI": f"[{m['lower']:.3f}, {m['upper']:.3f}]"})
    return pd.DataFrame(rows)


def classifier_table(cfg) -> pd.DataFrame:
    rows = []
    for spec in chexseg_runs(cfg.study.chexseg):
        if not spec.preset.startswith("pathology_"):
            continue
        m = _metrics(cfg, spec.name)
        loc = m.get("localisation", {})
        for name in PATHOLOGIES:
            rows.append({"classifier": spec.preset.split("_", 1)[1], "pathology": name,
                         "AUC": _num(m["auc"].get(name)),
                         **{f"Grad-CAM {k}": _num(loc.get(k, {}).get(name)) for k in ("hit", "mass", "iou")}})
        rows.append({"classifier": spec.preset.split("_", 1)[1], "pathology": "mean", "AUC": _num(m["mean_auc"]),
                     **{f"Grad-CAM {k}": _num(loc.get(f"mean_{k}")) for k in ("hit", "mass", "iou")}})
    return pd.DataFrame(rows)


def quality_table(cfg) -> pd.DataFrame:
    rows = []
    for cam in cfg.study.chexseg.cam:
        path = pseudo_label_file(cfg).with_suffix(".json")
        info = json.loads(path.read_text()) if path.is_file() else {}
        quality = info.get("quality_vs_phantom_truth")
        if quality:
            rows.append({"classifier": cam, "threshold": info["threshold"], "gate": info["gate"]}
                        | {name: _num(quality[name]["mean"]) for name in ["mIoU"] + PATHOLOGIES})
    return pd.DataFrame(rows)


def _num(value) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.3f}"


def sweep_figure(cfg, out: Path) -> Path | None:
    runs = [s for s in chexseg_runs(cfg.study.chexseg) if s.trial is not None]
    if not runs:
        return None
    plt = tables.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ps = sorted(dict.fromkeys(s.p for s in runs))
    per_trial = {p: [_metrics(cfg, s.name)["mIoU"]["mean"] for s in runs if s.p == p] for p in ps}
    for p, values in per_trial.items():
        ax.scatter([p] * len(values), values, color="tab:blue", alpha=0.4, s=14)
    ax.plot(ps, [np.nanmean(v) for v in per_trial.values()], "o-", color="tab:blue",
            label=f"ours, {'true positives only' if cfg.seed004.true_pos_only else 'empty predictions count'} "
                  "(mean over trials)")
    # the other IoU convention: with true_pos_only, a pathology never predicted drops out of the mean
    other = {p: [_metrics(cfg, s.name)["mIoU_other_convention"] for s in runs if s.p == p] for p in ps}
    ax.plot(ps, [np.nanmean(v) for v in other.values()], "^:", color="tab:orange",
            label=f"ours, {other_convention(cfg).removeprefix('mIoU, ')}")
    paper = paper_table().loc["mIoU"]
    ax.plot([float(c[1:]) for c in paper.index], paper.values, "s--", color="tab:grey", label="paper (CAM, Table 1)")
    ax.set_xlabel("p (probability of an expert-annotated image per batch slot)")
    ax.set_ylabel("test mIoU")
    ax.set_title(f"CheXseg p-sweep ({cfg.data.source} data)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "chexseg_p_sweep.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(cfg, out: Path) -> list[Path]:
    """Write chexseg.md / chexseg.csv and the figure; returns the files."""
    tc = cfg.train
    budget = (f"Study `{cfg.study.name}`; every run trained {tc.epochs} × {tc.steps_per_epoch} = "
              f"{tc.epochs * tc.steps_per_epoch:,} optimiser steps at a fixed learning rate; images "
              f"{cfg.preprocess.size}².")
    sweep, distill, classifiers, quality = sweep_table(cfg), distillation_table(cfg), classifier_table(cfg), \
        quality_table(cfg)
    sweep.to_csv(out / "chexseg.csv", index=False)
    s4 = cfg.seed004
    parts = [
        "# Seed 004 — CheXseg: expert masks mixed with Grad-CAM pseudo-labels (its Table 1)\n",
        budget,
        f" CheXseg's models: Adam, lr {s4.segmentation_lr:g} (segmentation), {s4.classifier_lr:g} (classifiers), "
        f"{s4.distill_lr:g} (students, τ = {s4.temperature:g}); batches {s4.segmentation_batch} / "
        f"{s4.classifier_batch}; uncertainty policy `{s4.uncertainty}`; pseudo-labels `{s4.threshold}` thresholds, "
        f"`{s4.gate}` gate; the p-sweep's encoder init `{cfg.study.chexseg.init}`.\n",
        f"Test: CheXlocalize test images (data source `{cfg.data.source}`); IoU at each image's native size, "
        f"true_pos_only = {s4.true_pos_only} (CheXlocalize's convention), mIoU = mean over the ten pathologies; "
        "ours = mean ± std over pseudo-label trials. Synthetic phantoms are not CheXpert: compare the shape of "
        "the curve over p, not its values.\n",
        "`pathologies`: how many of the ten have an IoU (true_pos_only: a pathology the model never predicts "
        "on a positive image has none and drops out of the mIoU, which then flatters a model that gives up on "
        f"hard pathologies); `{other_convention(cfg)}`: the same predictions under the other convention "
        "(true_pos_only off: IoU on every image where the truth or the prediction is non-empty, so misses and "
        "false alarms count as 0).\n",
        "## p-sweep\n", _md(sweep, "No p-sweep runs in this study."),
        "## Distillation (teacher: expert masks only; students: its soft masks of unlabelled images)\n",
        _md(distill, "No distillation runs in this study."),
        "## Pathology classifiers: test AUC and Grad-CAM localisation against the expert masks\n",
        "hit = pointing game (the map's maximum inside the mask); mass = share of the map inside the mask; "
        "iou = IoU of the map's top 5% with the mask; over the positive (image, pathology) pairs.\n",
        _md(classifiers, "No classifier runs in this study."),
    ]
    if len(quality):
        parts += ["## Pseudo-labels against the phantoms' exact masks (CheXpert train, synthetic data only)\n",
                  _md(quality, "")]
    (out / "chexseg.md").write_text("\n".join(parts))
    files = [out / "chexseg.md"]
    figure = sweep_figure(cfg, out / "figures")
    return files + ([figure] if figure else [])


def _md(table: pd.DataFrame, empty: str) -> str:
    return (tables.to_markdown(table) if len(table) else empty) + "\n"
