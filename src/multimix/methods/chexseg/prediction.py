"""Seed 004's networks on new images (`multimix predict`, the MLflow model)."""

from __future__ import annotations

import numpy as np
import torch


def predict(spec, net: torch.nn.Module, x: torch.Tensor) -> dict:
    """A seed-004 network on new images (`MethodPlugin.predict`): a classifier's ten pathology
    probabilities and the Grad-CAM map of its most probable one; a segmenter's ten masks."""
    from multimix.data.layout import CHEXLOCALIZE_PATHOLOGIES
    from multimix.methods.chexseg.network import CAM_LAYER
    from multimix.methods.chexseg.pseudolabels import cams

    names = list(CHEXLOCALIZE_PATHOLOGIES)
    if spec.variant.role == "classifier":
        maps, probabilities = cams(net, CAM_LAYER[spec.variant.architecture], x, classes=len(names))
        top = probabilities.argmax(1)
        return {"probabilities": probabilities, "class_names": names,
                "saliency": maps[np.arange(len(x)), top]}
    with torch.no_grad():
        masks = torch.sigmoid(net(x).float()).cpu().numpy()
    return {"masks": masks, "mask_names": names}
