"""Seed 003's models (Imran & Terzopoulos 2019; `SegmentorVariant`, method `appaunet`), named
`<segmentor>_<loss>`: a segmentor (`unet` = its batch-norm U-Net, `attunet` =
Attention U-Net, `ppaunet` = PPAU-Net) trained with one segmentation loss
(`tv` Tversky, `kltv`, `xetv`, `dice`), and `appaunet_<loss>`: PPAU-Net trained
adversarially with the (n+1)-class discriminator, which also classifies. They
learn from the segmentation source alone (its images, masks and class
labels), so a study lists them under `study.presets.segmentation`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentorVariant:
    """A seed-003 model (method `appaunet`): a segmentor and its loss, optionally adversarial."""

    architecture: str  # unet | attention_unet | ppaunet (multimix.methods.appaunet.network.ARCHITECTURES)
    loss: str  # dice | tversky | kltv | xetv (multimix.losses.SEGMENTATION_LOSSES)
    adversarial: bool = False  # APPAU-Net: the discriminator classifies and drives Eq. 5
    segmentation: bool = True
    ssl: str | None = None
    bridge: bool = False
    consistency: bool = False

    @property
    def classification(self) -> bool:
        return self.adversarial

    @property
    def streams(self) -> tuple[str, ...]:
        return ("seg_l", "seg_u") if self.adversarial else ("seg_l",)

    @property
    def tasks(self) -> str:
        return "segmentation"  # labels come from the segmentation source only: one run per |D_l^s|

    @property
    def method(self) -> str:
        return "appaunet"

    @property
    def class_source(self) -> str:
        """Whose labels the discriminator learns: `split.segmentation_dataset`'s (e.g. JSRT nodule)."""
        return "segmentation"


PRESETS: dict[str, SegmentorVariant] = {}
SEED003_LOSSES = {"tv": "tversky", "kltv": "kltv", "xetv": "xetv", "dice": "dice"}
SEED003_SEGMENTORS = {"unet": "unet", "attunet": "attention_unet", "ppaunet": "ppaunet"}
for _short, _loss in SEED003_LOSSES.items():
    for _name, _architecture in SEED003_SEGMENTORS.items():
        PRESETS[f"{_name}_{_short}"] = SegmentorVariant(_architecture, _loss)
    PRESETS[f"appaunet_{_short}"] = SegmentorVariant("ppaunet", _loss, adversarial=True)
