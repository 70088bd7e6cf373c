"""The presets a study can name, and the method that trains each.

MultiMix's variants (its paper, section 3.2): one network, five switches.

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

Seed 003's models (Imran & Terzopoulos 2019; `SegmentorVariant`), named
`<segmentor>_<loss>`: a segmentor (`unet` = its batch-norm U-Net, `attunet` =
Attention U-Net, `ppaunet` = PPAU-Net) trained with one segmentation loss
(`tv` Tversky, `kltv`, `xetv`, `dice`), and `appaunet_<loss>`: PPAU-Net trained
adversarially with the (n+1)-class discriminator, which also classifies. They
learn from the segmentation source alone (its images, masks and class
labels), so a study lists them under `study.presets.segmentation`.

Seed 004's models (CheXseg, Gadgil et al. 2021; `ChexsegVariant`, method `chexseg`),
listed by `study.chexseg` rather than by preset name:
  pathology_<arch>     the image-level classifier of the ten pathologies (densenet121:
                       the Grad-CAM source; resnet18: the encoder initialisation)
  chexseg_<init>       DeepLabV3+ on expert masks mixed with pseudo-labels (probability p)
  teacher_<init>       DeepLabV3+ on expert masks alone (p = 1): the distillation teacher
  student_<init>       DeepLabV3+ on the teacher's soft masks of unlabelled images
with <init> = classifier (encoder from pathology_resnet18) or random.
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


@dataclass(frozen=True)
class SegmentorVariant:
    """A seed-003 model (method `appaunet`): a segmentor and its loss, optionally adversarial."""

    architecture: str  # unet | attention_unet | ppaunet (multimix.models.ppaunet.ARCHITECTURES)
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
SEED003_LOSSES = {"tv": "tversky", "kltv": "kltv", "xetv": "xetv", "dice": "dice"}
SEED003_SEGMENTORS = {"unet": "unet", "attunet": "attention_unet", "ppaunet": "ppaunet"}
for _short, _loss in SEED003_LOSSES.items():
    for _name, _architecture in SEED003_SEGMENTORS.items():
        PRESETS[f"{_name}_{_short}"] = SegmentorVariant(_architecture, _loss)
    PRESETS[f"appaunet_{_short}"] = SegmentorVariant("ppaunet", _loss, adversarial=True)


@dataclass(frozen=True)
class ChexsegVariant:
    """A seed-004 model (method `chexseg`)."""

    role: str  # classifier | segmenter | teacher | student
    architecture: str = "deeplabv3plus"  # classifiers: densenet121 | resnet18
    init: str = "random"  # segmenters: classifier | random
    segmentation: bool = False  # (not MultiMix's segmentation task: these run on CheXpert)
    classification: bool = False
    ssl: str | None = None
    bridge: bool = False
    consistency: bool = False

    @property
    def tasks(self) -> str:
        return "chexseg"

    @property
    def method(self) -> str:
        return "chexseg"

    @property
    def streams(self) -> tuple[str, ...]:
        return {"classifier": ("pathology",), "segmenter": ("expert", "pseudo"), "teacher": ("expert",),
                "student": ("unlabelled",)}[self.role]


for _arch in ("densenet121", "resnet18"):
    PRESETS[f"pathology_{_arch}"] = ChexsegVariant("classifier", architecture=_arch)
for _init in ("classifier", "random"):
    PRESETS[f"chexseg_{_init}"] = ChexsegVariant("segmenter", init=_init)
    PRESETS[f"teacher_{_init}"] = ChexsegVariant("teacher", init=_init)
    PRESETS[f"student_{_init}"] = ChexsegVariant("student", init=_init)
