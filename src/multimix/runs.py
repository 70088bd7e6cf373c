"""The description of one run that every layer shares, and the table of presets it is resolved by.

The registry (`multimix.methods`) fills `PRESETS` with every registered method's presets, in
registration order (the order of report rows), when it loads its plugins; this module
imports nothing of the package, so the lowest layers can name runs and their variants.
"""

from __future__ import annotations

from dataclasses import dataclass

PRESETS: dict[str, object] = {}


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: its name (its identity in folders, MLflow and tables), preset,
    labelled-set sizes and repeat; seed 004's runs also a probability p, a pseudo-label trial
    or an unlabelled share."""

    name: str
    preset: str
    segmentation_labels: str | None  # "10", "50", "full", … (keys of the split file) or None
    classification_labels: str | None
    repeat: int
    p: float | None = None
    trial: int | None = None
    unlabelled: float | None = None

    @property
    def variant(self):
        return PRESETS[self.preset]


def run_name(preset: str, segmentation_labels=None, classification_labels=None, repeat: int = 0) -> str:
    parts = [preset]
    if segmentation_labels is not None:
        parts.append(f"s{segmentation_labels}")
    if classification_labels is not None:
        parts.append(f"c{classification_labels}")
    return "-".join(parts + [f"r{repeat}"])
