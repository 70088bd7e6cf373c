"""`multimix paired A B`: two evaluations compared image by image.

An ablation with one training per arm (say MultiMix with the saliency scaled by its 99th
percentile against raw gradients, same subset and seeds) is judged on the test images both
arms scored, not on two means: for each dataset and each per-image score the two evaluations
share, the mean of each, their mean difference (A − B) and the paired Student's t-test p; for
a classification test set also the accuracy with the exact McNemar test on the images only
one arm gets right, and each arm's AUC. A and B are evaluation folders (`data/eval/<run>/`)
or their `per_image.csv`. Images scored by one arm only are counted and named in the output,
never silently dropped. Method-agnostic: it reads the shared columns of per_image.csv and
whatever other numeric columns both files carry.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from multimix.errors import InputError
from multimix.tables import paired_t_p, to_markdown

KEYS = ("dataset", "id")
# Per-image columns that are not scores: the truth, the decision and its input, and the
# reference's and the lesion's size (properties of the image, the same for both arms).
NOT_SCORES = ("label", "predicted", "probability", "ref_pixels", "lesion_share")


def read(path: Path) -> pd.DataFrame:
    """An evaluation's per_image.csv, indexed by (dataset, id), its numeric columns."""
    csv = path / "per_image.csv" if path.is_dir() else path
    if not csv.is_file():
        raise InputError(f"{csv}: not found (expected an evaluation folder data/eval/<run>/ or its per_image.csv)")
    try:
        frame = pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{csv}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [k for k in KEYS if k not in frame.columns]
    if missing:
        raise InputError(f"{csv}: no column {', '.join(missing)} (expected the per_image.csv `multimix evaluate` writes)")
    repeated = frame[frame.duplicated(list(KEYS), keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        raise InputError(f"{csv}: {first['dataset']} image {first['id']} has {len(repeated[repeated.id == first['id']])} "
                         "rows (expected one evaluation: one row per test image)")
    numeric = frame.select_dtypes("number").columns.difference(KEYS)
    return frame.set_index(list(KEYS))[list(numeric)]


def mcnemar_p(right_a: np.ndarray, right_b: np.ndarray) -> tuple[int, int, float]:
    """Images only A gets right, only B gets right, and the exact (binomial) McNemar p."""
    only_a = int((right_a & ~right_b).sum())
    only_b = int((right_b & ~right_a).sum())
    p = stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return only_a, only_b, float(p)


def auc(label: pd.Series, probability: pd.Series) -> float:
    from sklearn.metrics import roc_auc_score

    if label.nunique() < 2:
        return float("nan")  # undefined with one class
    return float(roc_auc_score(label.astype(int), probability))


def compare_pair(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[int, int]]]:
    """The table of paired comparisons, and per dataset the images only A / only B scored."""
    rows, unpaired = [], {}
    def images(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:  # one dataset's rows, indexed by id
        return frame.xs(dataset, level="dataset") if dataset in frame.index.get_level_values("dataset") \
            else frame.iloc[:0].droplevel("dataset")

    datasets = dict.fromkeys([*a.index.get_level_values("dataset"), *b.index.get_level_values("dataset")])
    for dataset in datasets:  # in the order A lists them, then B's own
        ia, ib = images(a, dataset), images(b, dataset)
        common = ia.index.intersection(ib.index)
        unpaired[dataset] = (len(ia.index.difference(common)), len(ib.index.difference(common)))
        if common.empty:
            continue
        ia, ib = ia.loc[common], ib.loc[common]
        if {"label", "predicted"} <= set(ia.columns) & set(ib.columns) and ia["label"].notna().all():
            right_a = (ia["predicted"] == ia["label"]).to_numpy()
            right_b = (ib["predicted"] == ib["label"]).to_numpy()
            only_a, only_b, p = mcnemar_p(right_a, right_b)
            rows.append(dict(dataset=dataset, score="accuracy", images=len(common), A=right_a.mean(),
                             B=right_b.mean(), diff=right_a.mean() - right_b.mean(), p=p,
                             test=f"McNemar exact (only A right {only_a}, only B right {only_b})"))
            if "probability" in ia.columns and "probability" in ib.columns:
                auc_a, auc_b = auc(ia["label"], ia["probability"]), auc(ib["label"], ib["probability"])
                rows.append(dict(dataset=dataset, score="auc", images=len(common), A=auc_a, B=auc_b,
                                 diff=auc_a - auc_b, p=float("nan"), test="— (one value per arm)"))
        for score in sorted(set(ia.columns) & set(ib.columns)):
            if score in NOT_SCORES:
                continue
            both = ia[score].notna() & ib[score].notna()
            if not both.any():
                continue  # a score this test set does not have (e.g. Dice on a classification set)
            sa, sb = ia.loc[both, score], ib.loc[both, score]
            rows.append(dict(dataset=dataset, score=score, images=int(both.sum()), A=sa.mean(), B=sb.mean(),
                             diff=(sa - sb).mean(), p=paired_t_p(sa, sb), test="paired t"))
    return pd.DataFrame(rows, columns=["dataset", "score", "images", "A", "B", "diff", "p", "test"]), unpaired


def paired(path_a: Path, path_b: Path, csv: bool = False) -> pd.DataFrame:
    a, b = read(path_a), read(path_b)
    table, unpaired = compare_pair(a, b)
    if table.empty:
        raise InputError(f"{path_a} and {path_b}: no test image scored by both (expected two evaluations "
                         "of the same test sets)")
    if csv:
        table.to_csv(sys.stdout, index=False)
        return table
    print(f"A = {path_a}\nB = {path_b}\n")
    shown = table.copy()
    for col in ("A", "B"):
        shown[col] = shown[col].map(lambda v: f"{v:.4g}")
    shown["diff"] = shown["diff"].map(lambda v: f"{v:+.3g}")
    shown["p"] = shown["p"].map(lambda v: "—" if np.isnan(v) else f"{v:.2g}")
    print(to_markdown(shown), end="")
    for dataset, (only_a, only_b) in unpaired.items():
        if only_a or only_b:
            print(f"{dataset}: {only_a} images scored by A only, {only_b} by B only (left out of the pairs)")
    return table
