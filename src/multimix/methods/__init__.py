"""Training methods: each owns its networks, optimisers and step (`base.Method`).

A run's preset names its method; the loop (`multimix.training.loop`),
evaluation and reports ask this registry and never which method they run.
"""

from __future__ import annotations

from multimix.methods.base import Method
from multimix.study import RunSpec


def method_class(spec: RunSpec) -> type[Method]:
    """The method that trains run `spec` (every preset of multimix.presets is a MultiMix variant)."""
    from multimix.methods.multimix import MultiMixMethod

    return MultiMixMethod


def load_predictor(best: dict, device):
    """The trained networks of a best.pt, ready for evaluation."""
    from multimix.methods import multimix

    return multimix.load_predictor(best, device)
