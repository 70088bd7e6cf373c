"""MultiMix's presets (its paper, section 3.2): one network, five switches.


| preset      | segmentation | classification | SSL (classification) | saliency bridge | unlabelled seg. consistency |
|-------------|--------------|----------------|----------------------|-----------------|-----------------------------|
| unet        | yes          |                |                      |                 |                             |
| enc         |              | yes            |                      |                 |                             |
| enc_ssl     |              | yes            | FixMatch-style       |                 |                             |
| enc_mm      |              | yes            | MixMatch             |                 |                             |
| umtl        | yes          | yes            |                      |                 |                             |
| umtl_s      | yes          | yes            |                      | yes             |                             |
| umtl_ssl    | yes          | yes            | FixMatch-style       |                 |                             |
| umtl_ssl_s  | yes          | yes            | FixMatch-style       | yes             |                             |
| multimix    | yes          | yes            | FixMatch-style       | yes             | yes                         |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """A MultiMix variant (method `multimix`)."""

    segmentation: bool
    classification: bool
    ssl: str | None = None  # None | "fixmatch" | "mixmatch"
    bridge: bool = False
    consistency: bool = False

    @property
    def streams(self) -> tuple[str, ...]:
        """The training streams a step reads: labelled / unlabelled x segmentation / classification."""
        wanted = {"seg_l": self.segmentation, "seg_u": self.consistency, "cls_l": self.classification,
                  "cls_u": self.ssl is not None}
        return tuple(name for name, used in wanted.items() if used)

    @property
    def tasks(self) -> str:
        """The study group the variant belongs to: segmentation, classification or multitask."""
        if self.segmentation and self.classification:
            return "multitask"
        return "segmentation" if self.segmentation else "classification"

    @property
    def method(self) -> str:
        return "multimix"

    @property
    def class_source(self) -> str:
        """Whose labels the classifier learns: `split.classification_dataset`'s."""
        return "classification"


PRESETS = {
    "unet": Variant(segmentation=True, classification=False),
    "enc": Variant(segmentation=False, classification=True),
    "enc_ssl": Variant(segmentation=False, classification=True, ssl="fixmatch"),
    "enc_mm": Variant(segmentation=False, classification=True, ssl="mixmatch"),
    "umtl": Variant(segmentation=True, classification=True),
    "umtl_s": Variant(segmentation=True, classification=True, bridge=True),
    "umtl_ssl": Variant(segmentation=True, classification=True, ssl="fixmatch"),
    "umtl_ssl_s": Variant(segmentation=True, classification=True, ssl="fixmatch", bridge=True),
    "multimix": Variant(segmentation=True, classification=True, ssl="fixmatch", bridge=True, consistency=True),
}
