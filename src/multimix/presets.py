"""Model variants of the paper (section 3.2): one network, five switches.

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

from multimix.errors import InputError


@dataclass(frozen=True)
class Variant:
    segmentation: bool
    classification: bool
    ssl: str | None = None  # None | "fixmatch" | "mixmatch"
    bridge: bool = False
    consistency: bool = False


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


@dataclass(frozen=True)
class RunSpec:
    name: str
    preset: str
    segmentation_labels: str | None  # "10", "50", "full", … (keys of the split file) or None
    classification_labels: str | None
    repeat: int

    @property
    def variant(self) -> Variant:
        return PRESETS[self.preset]


def run_spec(name: str, raw: dict) -> RunSpec:
    """Validate one `train.runs` entry of params.yaml."""
    where = f"params.yaml: train.runs.{name}"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping with preset, segmentation_labels, classification_labels, repeat")
    unknown = set(raw) - {"preset", "segmentation_labels", "classification_labels", "repeat"}
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    preset = raw.get("preset")
    if preset not in PRESETS:
        raise InputError(f"{where}: preset {preset!r} is not one of {', '.join(PRESETS)}")
    variant = PRESETS[preset]
    seg = raw.get("segmentation_labels")
    cls = raw.get("classification_labels")
    if variant.segmentation and seg is None:
        raise InputError(f"{where}: preset {preset} needs segmentation_labels (e.g. 10, 50 or full)")
    if variant.classification and cls is None:
        raise InputError(f"{where}: preset {preset} needs classification_labels (e.g. 100, 1000 or full)")
    return RunSpec(
        name=name, preset=preset,
        segmentation_labels=str(seg) if variant.segmentation else None,
        classification_labels=str(cls) if variant.classification else None,
        repeat=int(raw.get("repeat", 0)),
    )


def configured_run(runs: dict, name: str) -> RunSpec:
    """The validated spec of run `name` from `train.runs`, or a one-line error."""
    if name not in runs:
        raise InputError(f"params.yaml: train.runs has no run {name!r} (have {', '.join(runs) or 'none'})")
    return run_spec(name, runs[name])
