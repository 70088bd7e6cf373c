"""Seed 003's report: seed003.{md,csv}, its models on their segmentation source's test images
in the columns of its Tables 1-2 (classification Acc, PR, RE; segmentation DS, JS, SSIM, F1,
HD, SN, SP, PR, RC), mean ± std over repeats, each row followed by the paper's row for the
same dataset and model (paper_tables.csv) where the paper has one."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from multimix import testsets
from multimix.methods.appaunet.presets import PRESETS
from multimix.tables import MISSING, fmt as _fmt, write_table

SEED003_CLS = {"accuracy": "Acc", "precision": "PR (cls)", "recall": "RE (cls)"}
SEED003_SEG = {"dice": "DS", "jaccard": "JS", "ssim": "SSIM", "f1": "F1", "hausdorff": "HD", "sensitivity": "SN",
               "specificity": "SP", "precision": "PR", "recall": "RC"}


def seed003_table(summary: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Seed 003's models on `dataset` (the study's segmentation source), with the paper's rows."""
    columns = ["Model", "|D_l^s|", "source", *SEED003_CLS.values(), *SEED003_SEG.values(), "repeats"]
    if summary.empty:
        return pd.DataFrame(columns=columns)
    ours = summary[summary["preset"].isin(PRESETS)]  # this method's rows only
    paper = pd.read_csv(resources.files(__package__).joinpath("paper_tables.csv").open(), comment="#")
    paper = paper[paper["dataset"] == dataset]
    rows = []
    for (preset, seg_labels), grp in sorted(ours.groupby(["preset", "seg_labels"]),
                                            key=lambda kv: (list(PRESETS).index(kv[0][0]), str(kv[0][1]))):
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



def report(cfg, runs, out: Path) -> list[Path]:
    if not runs:
        return []
    summary, _, _ = testsets.load_results(cfg, runs)
    dataset = cfg.split.segmentation_dataset
    return [write_table(
        cfg, out, "seed003", f"Seed 003 — segmentors and APPAU-Net on {dataset} (its Tables 1–2)",
        f" Seed 003's models: Adam lr {cfg.seed003.lr_segmentor:g} (S) / {cfg.seed003.lr_discriminator:g} (D), "
        f"on the schedule above.\n\nTest images of `{dataset}` (`split.segmentation_dataset`, data source "
        f"`{cfg.data.source}`); mean ± std over repeats. Paper rows "
        "(src/multimix/methods/appaunet/paper_tables.csv) follow ours where the paper has the same dataset (mcx, "
        "scx, jcx, ccx: seed 003's Table 3 partitions) and model; it gives one value per cell. Classification "
        "(APPAU-Net's discriminator): accuracy, macro precision and recall. Segmentation per image: F1 = the mean of "
        "the lung and background classes' pixel F1, SN = RC = pixel recall, SP = pixel specificity; HD in pixels of "
        f"our {cfg.preprocess.size}² grid (the paper states no unit). Synthetic phantoms are not the paper's data.",
        seed003_table(summary, dataset))]
