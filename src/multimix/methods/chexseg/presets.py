"""Seed 004's models (CheXseg, Gadgil et al. 2021; `ChexsegVariant`, method `chexseg`),
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


PRESETS: dict[str, ChexsegVariant] = {}
for _arch in ("densenet121", "resnet18"):
    PRESETS[f"pathology_{_arch}"] = ChexsegVariant("classifier", architecture=_arch)
for _init in ("classifier", "random"):
    PRESETS[f"chexseg_{_init}"] = ChexsegVariant("segmenter", init=_init)
    PRESETS[f"teacher_{_init}"] = ChexsegVariant("teacher", init=_init)
    PRESETS[f"student_{_init}"] = ChexsegVariant("student", init=_init)
