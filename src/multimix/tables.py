"""Tables and plots every report shares: mean ± std cells, paired tests on per-image scores,
Markdown that keeps `|D_l^c|` in one column, each table written as .csv and .md, and a
headless pyplot. Imports nothing of the package but the run description (a leaf)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

if TYPE_CHECKING:
    from multimix.config import Config

MISSING = "—"  # the one marker of a value that does not exist (not trained, not defined)


def fmt(values: pd.Series, spec: str = ".3f") -> str:
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


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_markdown(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|")  # |D_l^c| must not split a Markdown column

    head = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def budget_line(cfg: Config) -> str:
    tc = cfg.train
    return (f"Study `{cfg.study.name}`; every run trained {tc.epochs} × {tc.steps_per_epoch} = "
            f"{tc.epochs * tc.steps_per_epoch:,} optimiser steps (batch {tc.batch_size} per stream), "
            f"lr {tc.lr:g} × {tc.lr_gamma:g} every {tc.lr_step_epochs * tc.steps_per_epoch:,} steps; "
            f"images {cfg.preprocess.size}².")




def write_table(cfg: Config, out: Path, stem: str, title: str, intro: str, table: pd.DataFrame,
                empty: str | None = None) -> Path:
    """`<stem>.csv` (plain) and `<stem>.md` (title, the study's budget, what the columns mean, the
    table, or `empty` when it has no rows); returns the .md path."""
    table.to_csv(out / f"{stem}.csv", index=False)
    body = to_markdown(table) if len(table) or empty is None else empty
    (out / f"{stem}.md").write_text(f"# {title}\n\n{budget_line(cfg)}{intro}\n\n" + body)
    return out / f"{stem}.md"
