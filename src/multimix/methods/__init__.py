"""Training methods: each owns its networks, optimisers and step (`base.Method`).

A run's preset names its method (`multimix.presets`); the loop
(`multimix.training.loop`), evaluation and reports ask this registry and
never which method they run. A new method is a module here and one line in
each table below.
"""

from __future__ import annotations

import importlib

from multimix.methods.base import Method
from multimix.study import RunSpec

MODULES = {"multimix": "multimix.methods.multimix", "appaunet": "multimix.methods.appaunet",
           "chexseg": "multimix.methods.chexseg"}
CLASSES = {"multimix": "MultiMixMethod", "appaunet": "APPAUNetMethod", "chexseg": "ChexsegMethod"}


def method_class(spec: RunSpec) -> type[Method]:
    """The method that trains run `spec`."""
    method = spec.variant.method
    return getattr(importlib.import_module(MODULES[method]), CLASSES[method])


def load_predictor(best: dict, device):
    """The trained networks of a best.pt, ready for evaluation (best.pt names its method)."""
    return importlib.import_module(MODULES[str(best["method"])]).load_predictor(best, device)
