"""Where a run's files live, for every stage that reads or writes them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multimix.config import Config


def best(cfg: Config, run: str) -> Path:
    """The run's selected weights (`multimix train`'s output, what evaluation loads)."""
    return Path(cfg.train.runs_dir) / run / "best.pt"


def eval_dir(cfg: Config, run: str) -> Path:
    """The run's test results: per_image.csv, metrics.json, examples.npz."""
    return Path(cfg.evaluate.dir) / run
