"""How each source takes and stores its images: the acquisition and the transfer to pixels.

`xray.py` renders a patient's line integrals and exposes them; this module holds what differs
per source (`Source`): scatter (with a grid or without), dose, lead markers, collimation,
portable AP views with devices, a wide paediatric field of view, and the transfer from log
signal to stored pixels (auto-ranging, unsharp masking, a display curve or film's
characteristic curve). Every draw comes from the image's acquisition stream, never from its
label (CNNs exploit site and scanner cues as shortcuts, Zech et al. 2018). `radiograph` runs the
whole chain for one patient; `synth.py` and `synth_chexseg.py` write what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from multimix.data import difficulty, phantom, xray


@dataclass(frozen=True)
class Source:
    """How a source takes and stores its images (drawn per image, never from the label).

    At the easy level only `gamma` (the display curve) and `pediatric` act, as in the old
    phantoms; the rest scales with the image realism's `nuisances`."""

    pediatric: bool
    gamma: float                      # display curve exponent (a domain difference)
    film: bool = False                # laser-digitised film: a characteristic curve (JSRT)
    unsharp: float = 0.0              # unsharp-masking strength (Montgomery's digital processing)
    scatter: tuple[float, float] = (0.3, 0.6)   # scatter-to-primary range (grid or not)
    photons: float = 1.0              # quanta scale (dose, detector efficiency)
    marker: float = 0.3               # probability of a lead L/R marker
    portable: float = 0.0             # probability of an AP portable with devices
    collimation: float = 0.2          # probability of visible collimator borders
    wide_field: float = 0.0           # how much smaller the thorax may sit in the field
    lung_segmentation: bool = False   # a lung-mask source: the segmentation knob's widening past
    #                                   level 1 applies (elsewhere the image stays at level <= 1)


SOURCES = {
    "jsrt": Source(pediatric=False, gamma=1.0, film=True, scatter=(0.25, 0.5), photons=1.5, marker=0.2,
                   lung_segmentation=True),
    "chex": Source(pediatric=True, gamma=0.75, unsharp=0.5, scatter=(0.4, 0.9), photons=0.8, marker=0.85,
                   portable=0.05, collimation=0.5, wide_field=0.3),
    "mcu": Source(pediatric=False, gamma=1.35, unsharp=1.0, scatter=(0.25, 0.55), photons=1.2, marker=0.3,
                  lung_segmentation=True),
    "nihx": Source(pediatric=False, gamma=1.15, unsharp=0.4, scatter=(0.3, 0.9), photons=1.0, marker=0.6,
                   portable=0.4, collimation=0.3),
    "shenzhen": Source(pediatric=False, gamma=0.9, unsharp=0.3, scatter=(0.3, 0.7), photons=1.0, marker=0.3,
                       collimation=0.3, lung_segmentation=True),
    # CheXpert / CheXlocalize (Stanford): many AP portables, but their devices are a labelled
    # pathology there (Support Devices), drawn by pathology.py, never as a nuisance
    "chexpert": Source(pediatric=False, gamma=1.05, unsharp=0.4, scatter=(0.4, 1.0), photons=1.0, marker=0.5,
                       collimation=0.3),
}

@dataclass(frozen=True)
class Level:
    """The two difficulty numbers a source is written at (difficulty.py)."""

    segmentation: float = 0.0
    classification: float = 0.0

    def image_for(self, dataset: str) -> difficulty.ImageRealism:
        """The image realism of one source. Past level 1 the segmentation knob only widens the
        anatomy's variability, a calibration device for lung segmentation from few masks; the
        other sources stay at the literature's level 1, where their task's difficulty is the
        disease knob's. (With the widening in the CheX phantoms too, Enc at 100 labels fell to
        chance - AUC 0.53 - at every disease level while 1,000 labels still reached AUC 0.98:
        the variability, not the disease, decided it. README "Phantoms".)"""
        d = self.segmentation if SOURCES[dataset].lung_segmentation else min(self.segmentation, 1.0)
        return difficulty.image_realism(d)

    @property
    def disease(self) -> difficulty.DiseaseRealism:
        return difficulty.disease_realism(self.classification)


EASY = Level()


def sample_acquisition(dataset: str, rng: np.random.Generator, realism: difficulty.ImageRealism,
                       anatomy: phantom.Anatomy) -> xray.Acquisition:
    """One image's acquisition (scatter, dose, heel effect, collimation, marker, devices): all
    drawn from the acquisition stream, so none depends on the label."""
    src = SOURCES[dataset]
    u = rng.uniform
    k = realism.nuisances
    # every value is drawn whether it is used or not, so the stream stays aligned across levels
    draws = rng.random(4)  # marker, collimation, portable, marker side
    marker = ("LR"[int(draws[3] < 0.5)], int(rng.integers(2)), u(0.035, 0.06))
    insets = tuple(float(v) for v in u(0.0, 0.07, 4))
    marker = marker if draws[0] < src.marker * k else ("", 0, 0.0)
    collimation = insets if draws[1] < src.collimation * k else (0.0, 0.0, 0.0, 0.0)
    lines, electrodes = phantom.sample_devices(rng)
    portable = draws[2] < src.portable * k
    return xray.Acquisition(
        scatter=u(*src.scatter) * (1.4 if portable else 1.0),  # portables are taken without a grid
        photons=src.photons * float(np.exp(rng.normal(0.0, 0.5 * k))),  # dose varies from image to image
        heel=u(-0.3, 0.3) * k,
        tilt_gradient=u(-0.2, 0.2) * k,
        nonuniformity=u(0.0, 0.35) * k,
        field_seed=int(rng.integers(0, 2**31 - 1)),
        collimation=collimation,
        marker=marker,
        lines=lines if portable else (),
        electrodes=electrodes if portable else (),
    )


def _window(v: np.ndarray, rng: np.random.Generator, jitter: float, lungs: np.ndarray,
            body: np.ndarray) -> np.ndarray:
    """Auto-ranging, as a digital reader's exposure recognition does: from the lungs' darkest
    density to the body's densest (collimated borders, markers and the raw beam outside the body
    left out), so the anatomy fills the range and the raw beam goes black."""
    lo = np.percentile(v[lungs], 2.0) if lungs.any() else np.percentile(v, 1.0)
    hi = np.percentile(v[body], 99.0) if body.any() else np.percentile(v, 97.0)
    span = max(hi - lo, 1e-3)
    lo -= 0.2 * span  # the darkest lung is dark grey, not black
    lo += span * rng.uniform(-0.15, 0.15) * jitter
    hi += span * rng.uniform(-0.15, 0.15) * jitter
    return np.clip((v - lo) / max(hi - lo, 1e-3), 0.0, 1.0)


def _sigmoid(n: np.ndarray, slope: float, mid: float) -> np.ndarray:
    """A sigmoid look-up table rescaled to map [0, 1] onto [0, 1]."""
    ends = np.tanh(slope * (np.array([0.0, 1.0]) - mid))
    return (np.tanh(slope * (n - mid)) - ends[0]) / (ends[1] - ends[0])


def transfer(dataset: str, v: np.ndarray, rng: np.random.Generator, realism: difficulty.ImageRealism,
             lungs: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Log signal -> display intensity in [0, 1] (bright = dense), per source: windowing, a film
    characteristic curve (JSRT) or a display curve, unsharp masking (digital processing)."""
    src = SOURCES[dataset]
    k = realism.nuisances
    n = _window(v, rng, k, lungs, body)
    size = max(n.shape)
    strengths = rng.uniform(0.2, 2.0), rng.uniform(0.0, 1.5), rng.uniform(0.0, 0.5)  # drawn at every level
    if src.unsharp > 0 and k > 0:
        n = np.clip(n + src.unsharp * k * strengths[0] * (n - xray.gaussian_blur(n, 0.04 * size)), 0.0, 1.0)
    if k > 0:  # multi-frequency processing (as CR/DR readers apply it): detail up, dynamic range down
        n = n + k * strengths[1] * (n - xray.gaussian_blur(n, 0.01 * size))
        n = np.clip(n - k * strengths[2] * (xray.gaussian_blur(n, 0.12 * size) - 0.5), 0.0, 1.0)
    # The display curve: a sigmoid with a toe and a shoulder, as readers' look-up tables (and
    # film's characteristic curve, steeper) are; the source's gamma moves its midpoint.
    gamma = src.gamma * rng.uniform(0.9, 1.1) * float(np.exp(rng.normal(0.0, 0.45 * k)))
    slope = (2.8 if src.film else 2.2) * (1.0 + 0.3 * k * rng.uniform(-1.0, 1.0))
    curve = _sigmoid(np.power(n, gamma), slope, 0.55)
    gain, offset = rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.08)
    return np.clip(offset + gain * curve, 0.0, 1.0).astype(np.float32)


def place(dataset: str, anat: phantom.Anatomy, level: Level,
          acq_rng: np.random.Generator) -> tuple[phantom.Anatomy, xray.Acquisition]:
    """The first draws of an image's acquisition stream: where the thorax sits in the field
    (patients and collimation differ, so it fills more or less of it; a wide paediatric field
    shows the neck and abdomen too), then how the image was taken. Masks follow the placed
    anatomy: callers take it as returned."""
    src = SOURCES[dataset]
    realism = level.image_for(dataset)
    zoom, wide, drop = acq_rng.uniform(-1.0, 1.0), acq_rng.uniform(0.0, 1.0), acq_rng.uniform(0.2, 0.6)
    shrink = (1.0 - src.wide_field * realism.nuisances * wide) * (1.0 + 0.18 * realism.nuisances * zoom)
    if shrink != 1.0:
        anat = replace(anat, height=anat.height * shrink, half_width=anat.half_width * shrink,
                       top=anat.top + (1.0 - shrink) * anat.height * drop)
    return anat, sample_acquisition(dataset, acq_rng, realism, anat)


def radiograph(dataset: str, anat: phantom.Anatomy, height: int, width: int, level: Level,
               acq_rng: np.random.Generator, noise_rng: np.random.Generator, finish=None, devices=None):
    """One patient of a source as display intensity at height x width: acquisition drawn,
    line integrals at the working size (`finish(chest)` may add findings first), exposure,
    transfer, upsampling. `devices` (lines, electrodes) are the patient's own (a labelled
    finding), drawn whatever the source's nuisances. Returns (display image, anatomy as drawn,
    acquisition)."""
    realism = level.image_for(dataset)
    anat, acq = place(dataset, anat, level, acq_rng)
    if devices is not None:
        acq = replace(acq, lines=devices[0], electrodes=devices[1])
    wh, ww = xray.work_size(height, width)
    chest = xray.chest(anat, wh, ww, realism, devices=acq)
    if finish is not None:
        finish(chest)
    v = xray.expose(chest.L, acq, realism, noise_rng)
    # what the reader's exposure recognition finds: the lungs, and the body inside the collimator
    lungs = chest.air_depth > 0.5 * chest.air_depth.max()
    body = (chest.L > 1.0) & ~xray.collimated(v.shape, acq)
    display = transfer(dataset, v, acq_rng, realism, lungs, body)
    return xray.upsample(display, height, width), anat, acq
