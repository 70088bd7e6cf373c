"""How hard the phantoms are: one knob per task, named levels, and the calibration file.

Two numbers drive every realistic component of the phantoms (`phantom.py`, `xray.py`):

  segmentation (d_s)    the image: how far the lung lucency reaches outside the SCR mask
                        (behind the heart, below the dome), overlapping anatomy (ribs with
                        cortex, clavicles, scapulae, breasts, vessels, textured background),
                        pose and habitus, scatter, quantum noise and detector blur, and each
                        source's transfer nuisances. Up to 1 it applies to every source, since
                        all share one physics; past 1 only to the lung-mask sources
                        (`acquisition.Level.image_for`).
  classification (d_c)  the disease: the pneumonia severity distribution (a share of subtle
                        cases), its patterns (patchy, lobar, interstitial), confounders drawn
                        into every image of the classification sources whatever its label,
                        and the severity-dependent label noise on training labels.

0 is `easy` (the old look: lucency = mask, no overlap, no noise, obvious blobs; kept for fast
tests), 1 every component at the value the literature gives (`shared/notes/phantom-realism.md`;
the weights below were fixed before any calibration).

Beyond 1 (up to MAX_LEVEL) the image's physics stays at the literature's values - bone, vessels,
scatter, dose and blur would otherwise destroy information no labels could recover - and only
what varies from patient to patient and from acquisition to acquisition keeps widening: the
shape of lungs, heart and domes, the chest's depth profile (how fast the air thins towards the
outline), pose and habitus (the tail of subcutaneous fat), and how much lucency lies outside the
mask, and how far below the dome (the transfer nuisances stay too: past 1 they turn the images
black or white), and only in JSRT, Montgomery and Shenzhen (the other sources' task is the
disease: with the widening in CheX too, Enc-100 fell to chance at every disease level). That is the
difficulty a few labels cannot cover and many can (the calibration's headroom check measures
it). The first calibration sweep, with every component extrapolated past 1, measured U-Net-10 at
mean Dice 0.955, 0.948, 0.929 and 0.883 at 0.25, 0.5, 0.75 and 1 (3 repeats), and a one-repeat
probe of an earlier version 0.78 at 1.5: too slow a fall to reach the paper's
range before the images stop looking like radiographs. That was the reason for this split
(up to 1 the phantoms are unchanged by it, pixel for pixel; README "Phantoms").
`paper` is read from `phantom_calibration.json`, written by `multimix calibrate`: the levels at
which the paper's baselines (U-Net at 10 JSRT labels, Enc at 100 CheX labels) land in the
paper's range at the default's budget. A number in [0, MAX_LEVEL] may be given instead of a name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from multimix.errors import InputError

LEVEL_NAMES = ("easy", "paper")
MAX_LEVEL = 3.0  # past 1 only the variability widens (pose stops at 2: rotation beyond ~20 degrees is rejected)
CALIBRATION_FILE = "phantom_calibration.json"
TASKS = ("segmentation", "classification")


@lru_cache(maxsize=1)
def calibration() -> dict:
    """The committed calibration (package data): its `levels` name the numbers."""
    try:
        text = resources.files("multimix.data").joinpath(CALIBRATION_FILE).read_text()
    except FileNotFoundError:
        raise InputError(f"multimix/data/{CALIBRATION_FILE}: not found (run `multimix calibrate`)") from None
    return json.loads(text)


def resolve(task: str, level: str | float) -> float:
    """A level of one task as its number: easy = 0, paper = the calibrated value, or the number."""
    if isinstance(level, str):
        if level == "easy":
            return 0.0
        if level == "paper":
            levels = calibration().get("levels", {}).get("paper", {})
            if task not in levels:
                raise InputError(f"multimix/data/{CALIBRATION_FILE}: levels.paper.{task} missing "
                                 "(run `multimix calibrate`)")
            return float(levels[task])
        raise InputError(f"synth.difficulty.{task} is {level!r}; expected one of {', '.join(LEVEL_NAMES)} or a "
                         f"number in [0, {MAX_LEVEL}]")
    value = float(level)
    if not 0.0 <= value <= MAX_LEVEL:
        raise InputError(f"synth.difficulty.{task} is {level!r}; expected one of {', '.join(LEVEL_NAMES)} or a "
                         f"number in [0, {MAX_LEVEL}]")
    return value


def _lerp(easy: float, hard: float, d: float) -> float:
    return easy + (hard - easy) * d


@dataclass(frozen=True)
class ImageRealism:
    """The segmentation knob's components (every source). Amplitudes are in line-integral units
    (`xray.py`): the soft tissue of an adult chest is about 4, its lungs remove about 2."""

    level: float
    retrocardiac_air: float   # share of the lung's air kept behind the heart (outside the SCR mask)
    recess_air: float         # share kept in the posterior recesses just below the dome
    recess_depth: float       # how far below the dome the recesses reach (thorax heights)
    mediastinal_air: float    # share of air behind the mediastinum
    edge_power: float         # air-thickness profile (1 - r^p)^edge_power: 0 = a step at the mask
    shape: float              # spread of lung, heart, dome and mediastinum sizes beyond the
    #                           normal range (x the normal half-range; 0 up to level 1), and of
    #                           the chest's depth profile (log-sd 0.5 x shape)
    posterior_ribs: float     # bone amplitudes
    anterior_ribs: float
    rib_cortex: float         # 0 = solid ribs, 1 = hollow with a bright cortex
    clavicles: float
    scapulae: float
    spine: float
    breasts: float            # probability of breast shadows in adult women
    soft_tissue: float        # subcutaneous fat and the shoulder girdle over the apices (x drawn;
    #                           past 1 obesity's tail widens)
    vessels: float
    lung_texture: float       # power-law parenchymal texture in the air thickness
    background: float         # power-law anatomical background of the soft tissue
    heart_motion: float       # motion blur of the heart border (thorax units)
    mediastinal_detail: float  # trachea, aortic knob, gastric bubble
    pose: float               # rotation, shift, scale and inspiration spread (x easy's)
    scatter: float            # scatter-to-primary scale
    photons: float            # quanta per working pixel at unit transmission; inf = no noise
    detector_blur: float      # in working pixels
    nuisances: float          # per-source transfer and nuisance strength (film curve, unsharp
    #                           masking, markers, devices, collimation, wide paediatric fields)


def image_realism(d: float) -> ImageRealism:
    p = min(d, 1.0)        # the physics: at the literature's values from 1 on
    beyond = max(d - 1.0, 0.0)
    return ImageRealism(
        level=d,
        retrocardiac_air=min(0.9, _lerp(0.0, 0.5, d)),
        recess_air=min(0.95, _lerp(0.0, 0.85, d)),
        recess_depth=min(0.35, _lerp(0.0, 0.2, d)) + 0.05 * beyond,
        mediastinal_air=min(0.3, _lerp(0.0, 0.15, d)),
        edge_power=_lerp(0.02, 0.6, p),
        shape=beyond,
        posterior_ribs=_lerp(0.12, 0.3, p),
        anterior_ribs=_lerp(0.0, 0.14, p),
        rib_cortex=_lerp(0.0, 1.0, p),
        clavicles=_lerp(0.2, 0.7, p),
        scapulae=_lerp(0.0, 0.3, p),
        spine=_lerp(0.2, 0.25, p),
        breasts=min(1.0, _lerp(0.0, 0.8, d)),
        soft_tissue=p + 0.75 * beyond,  # habitus: obesity's tail widens
        vessels=_lerp(0.08, 0.5, p),
        lung_texture=_lerp(0.0, 0.06, p),
        background=_lerp(0.0, 0.03, p),
        heart_motion=_lerp(0.0, 0.012, p),
        mediastinal_detail=_lerp(0.0, 1.0, p),
        pose=min(d, 2.0),
        scatter=_lerp(0.0, 1.0, p),
        photons=float("inf") if d <= 0 else 20000.0 / p,
        detector_blur=_lerp(0.5, 1.0, p),
        nuisances=p,
    )


@dataclass(frozen=True)
class DiseaseRealism:
    """The classification knob's components (pneumonia in CheX and NIHX, their confounders and
    label noise)."""

    level: float
    severity_a: float          # severity ~ Beta(a, b) on [min_severity, 1]
    severity_b: float
    min_severity: float
    pattern_mix: float         # 0 = patchy blobs only (the old look), 1 = lobar / patchy / interstitial
    confounders: float         # probability of each confounder in any image, whatever its label
    flip_subtle: float         # P(pneumonia labelled normal) = flip_subtle * (1 - severity)^2
    flip_normal: float         # P(normal labelled pneumonia) per confounder it carries


def disease_realism(d: float) -> DiseaseRealism:
    # beyond 1 the shares keep growing, within what a distribution allows
    return DiseaseRealism(
        level=d,
        severity_a=max(0.7, _lerp(6.0, 1.1, d)),
        severity_b=_lerp(1.0, 2.2, d),
        min_severity=max(0.02, _lerp(0.6, 0.05, d)),
        pattern_mix=min(1.0, d),
        confounders=min(0.6, _lerp(0.0, 0.3, d)),
        flip_subtle=min(0.6, _lerp(0.0, 0.35, d)),
        flip_normal=min(0.15, _lerp(0.0, 0.06, d)),
    )
