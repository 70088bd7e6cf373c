"""Phantom patients: anatomy, pose and findings, and their exact masks at any size.

This module is geometry only; `xray.py` turns a patient into a radiograph. A patient
(`Anatomy`) is a handful of random parameters in a *thorax frame*: x in [-1, 1] from
image-left to image-right across the lungs, y = 0 at the lung apices and y = 1 at the
costophrenic angles. Image-left is the patient's right (radiographic convention), so the heart
bulges to the image-right (side +1). The frame is placed on the image by a centre, a size and
an in-plane tilt (pose), so every shape is evaluated analytically at the resolution asked for:
masks are exact at every size.

Lung masks follow the SCR convention (van Ginneken et al. 2006, JSRT's masks; Montgomery's and
Shenzhen's alike): the lung field is where radiation passed through lung but not through the
heart, the mediastinum (aortic knob included) or the structures below the diaphragm. Real lung
extends beyond that field — behind the heart and into the posterior recesses below the dome
(about a quarter of lung volume) — and `xray.py` draws that air, at the image realism's level, so
the mask's edge there has to be inferred from anatomy, not found as an intensity step.

Findings, each with an exact extent (`lesion_mask`), all of them as changes of what fills the
lung (`xray.py` renders them as fluid replacing air, so a consolidation beside the heart erases
its border: the silhouette sign):
  opacities       patchy foci (x, y, sigma, fill): bronchopneumonia, TB's upper-zone disease,
                  CheXseg's airspace opacity
  consolidations  lobar / segmental consolidation (side, x, y, rx, ry, angle, fill): bounded by
                  a fissure-like sharp edge on its upper side, soft elsewhere, air bronchograms
  haze            bilateral perihilar interstitial pattern (amplitude, spread): viral pneumonia
  nodules         round lesions (x, y, radius, amplitude, cavity 0/1): JSRT's nodules, TB cavities
Confounders (drawn into any image whatever its label): plate atelectasis bands, a thymus sail,
nipple shadows, prominent hila, skin folds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from multimix.data.difficulty import DiseaseRealism, ImageRealism, disease_realism, image_realism

FINDINGS = ("nodule", "tb")
PATTERNS = ("patchy", "lobar", "interstitial")


@dataclass(frozen=True)
class Anatomy:
    # placement of the thorax frame in normalised image coordinates [0, 1], and its tilt
    cx: float
    top: float
    height: float
    half_width: float
    # lungs (index 0 = image-left / patient-right, 1 = image-right)
    lung_cx: tuple[float, float]
    lung_rx: tuple[float, float]
    lung_ry: tuple[float, float]
    lung_cy: tuple[float, float]
    lung_power: float
    wobble: tuple[float, float, float]  # amplitude, frequency, phase of boundary variation
    dome: tuple[float, float]  # base of each hemidiaphragm
    dome_height: float
    mediastinum: tuple[float, float]  # half-width at apex and at base
    heart: tuple[float, float, float, float]  # cx, cy, rx, ry
    rib_spacing: float
    rib_slope: float
    pediatric: bool
    opacities: tuple[tuple[float, float, float, float], ...]  # (x, y, sigma, fill)
    texture_seed: int
    # round lesions: nodules and TB cavities, (x, y, radius, amplitude, cavity 0/1)
    nodules: tuple[tuple[float, float, float, float, int], ...] = ()
    # pose and habitus
    tilt: float = 0.0               # in-plane rotation (radians, image-right down positive)
    heart_tilt: float = 0.0         # the heart's long axis (radians)
    midline_shift: float = 0.0      # spine and trachea against the mediastinum (axial rotation)
    body_width: float = 1.35        # half-width of the body (thorax x units)
    body_density: float = 1.0       # soft-tissue line integral scale (habitus)
    lung_profile: float = 1.0       # x the air profile's edge power (flat to barrel chests)
    female: bool = False
    breasts: tuple[float, float, float] = (0.0, 0.0, 0.0)  # amplitude, centre y, radius (0 = none)
    fat: float = 0.0                # subcutaneous fat over the whole body (line integral)
    shoulders: float = 0.0          # soft tissue of the shoulder girdle over the apices
    arms: int = 0                   # 0 none in the field, 1 beside the body, 2 raised
    aortic_knob: tuple[float, float, float] = (0.2, 0.14, 0.06)  # x, y, radius
    gastric_bubble: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # sx, dy below dome, rx, ry
    # disease: lobar consolidations (side, sx, y, rx, ry, angle, fill) and interstitial haze
    consolidations: tuple[tuple[int, float, float, float, float, float, float], ...] = ()
    haze: tuple[float, float] = (0.0, 0.0)  # amplitude, spread
    # confounders: (kind, values...) with kind in CONFOUNDERS
    confounders: tuple[tuple, ...] = ()


CONFOUNDERS = ("band", "thymus", "nipples", "hila", "skinfold")


# ------------------------------------------------------------------ the frame on an image
@dataclass(frozen=True)
class Frame:
    """The thorax frame of one anatomy on an image of height x width pixels."""

    a: Anatomy
    height: int
    width: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def px_per_unit(self) -> float:
        """Pixels per thorax unit (the smaller of the two axes' scales)."""
        return min(self.height * self.a.height, self.width * self.a.half_width)

    @property
    def unit_ratio(self) -> float:
        """Length of one x unit in y units (to draw round things round)."""
        return self.a.half_width * self.aspect / self.a.height

    def coords(self, rows: slice = slice(None), cols: slice = slice(None)):
        """Thorax coordinates (x, y) of the pixel centres in rows x cols. Without tilt they are a
        row and a column vector (broadcast by every shape function); with tilt, full arrays."""
        a = self.a
        r = np.arange(self.height, dtype=np.float64)[rows]
        c = np.arange(self.width, dtype=np.float64)[cols]
        u = ((c + 0.5) / self.width - a.cx) * self.aspect  # image-height units
        v = (r + 0.5) / self.height - (a.top + 0.5 * a.height)
        hw = a.half_width * self.aspect
        if a.tilt == 0.0:
            x = (u / hw)[None, :]
            y = ((v + 0.5 * a.height) / a.height)[:, None]
        else:
            cos, sin = np.cos(a.tilt), np.sin(a.tilt)
            uu, vv = u[None, :], v[:, None]
            x = (cos * uu + sin * vv) / hw
            y = ((-sin * uu + cos * vv) + 0.5 * a.height) / a.height
        return x.astype(np.float32), y.astype(np.float32)

    def to_pixels(self, x: float, y: float) -> tuple[float, float]:
        """(row, column) of a thorax-frame point (pixel-centre convention); arrays work too."""
        a = self.a
        up, vp = np.asarray(x) * a.half_width * self.aspect, np.asarray(y) * a.height - 0.5 * a.height
        cos, sin = np.cos(a.tilt), np.sin(a.tilt)
        u, v = cos * up - sin * vp, sin * up + cos * vp
        return (a.top + 0.5 * a.height + v) * self.height - 0.5, (a.cx + u / self.aspect) * self.width - 0.5

    def box(self, x0: float, x1: float, y0: float, y1: float, margin: int = 2) -> tuple[slice, slice]:
        """Pixel rows and columns covering the thorax-frame rectangle [x0, x1] x [y0, y1]."""
        rows, cols = self.to_pixels(np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
        r0 = max(0, int(np.floor(rows.min())) - margin)
        r1 = min(self.height, int(np.ceil(rows.max())) + margin + 1)
        c0 = max(0, int(np.floor(cols.min())) - margin)
        c1 = min(self.width, int(np.ceil(cols.max())) + margin + 1)
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _grid(a: Anatomy, height: int, width: int):
    return Frame(a, height, width).coords()


def _to_thorax(a: Anatomy, px, py):
    """Normalised image coordinates -> thorax frame (no tilt: the sampler's coarse grids)."""
    return (px - a.cx) / a.half_width, (py - a.top) / a.height


# ------------------------------------------------------------------ sampling
def sample_anatomy(rng: np.random.Generator, *, pediatric: bool, abnormal: bool = False, aspect: float = 1.0,
                   finding: str | None = None, realism: ImageRealism | None = None,
                   disease: DiseaseRealism | None = None, pattern: str | None = None,
                   severity: float | None = None, cause: str | None = None) -> Anatomy:
    """Draw one patient. `aspect` = image width / height, to keep the thorax roughly anatomical
    on non-square images; `realism` widens pose and habitus (None: the easy level). Disease is
    drawn after the normal anatomy, so the same generator state gives the same patient with and
    without it: `abnormal` adds pneumonia of `pattern` and `severity` (drawn from `disease` when
    not given), `finding` a nodule or TB (seed 003's classes)."""
    r = realism or image_realism(0.0)
    u = rng.uniform
    spread = 1.0 + 1.5 * r.pose  # placement varies more at higher levels
    widen = 1.0 + 3.0 * r.shape  # beyond level 1: shapes vary past the normal range

    def v(lo: float, hi: float) -> float:
        """A shape parameter: uniform on [lo, hi], its deviation from the middle widened (one
        draw whatever the level, so the stream stays aligned)."""
        x, mid = u(lo, hi), 0.5 * (lo + hi)
        return x if widen == 1.0 else mid + (x - mid) * widen  # exact up to level 1

    if pediatric:
        height, half_width, top = u(0.48, 0.6), u(0.3, 0.38), u(0.16, 0.26)
        rx, ry, power = v(0.34, 0.4), v(0.52, 0.6), u(1.9, 2.3)
        heart = (u(0.06, 0.14), u(0.66, 0.74), v(0.36, 0.46), v(0.22, 0.28))
        rib_slope = u(0.1, 0.25)
    else:
        height, half_width, top = u(0.52, 0.66), u(0.33, 0.42), u(0.08, 0.18)
        rx, ry, power = v(0.3, 0.37), v(0.56, 0.64), u(2.2, 3.0)
        heart = (u(0.1, 0.18), u(0.7, 0.8), v(0.32, 0.42), v(0.2, 0.26))
        rib_slope = u(0.25, 0.45)
    half_width = half_width / max(aspect, 0.5) ** 0.5
    asym = v(-0.03, 0.03)
    habitus = float(np.exp(rng.normal(0.0, 0.07)))  # drawn at every level, used as the realism says
    scale = habitus ** r.pose
    anat = dict(
        cx=0.5 + u(-0.03, 0.03) * spread,
        top=top + u(-0.02, 0.02) * (spread - 1.0),
        height=height * scale,
        half_width=half_width * scale,
        lung_cx=(0.5 + asym, 0.52 - asym),
        lung_rx=(rx * u(0.95, 1.05), rx * u(0.88, 0.98)),
        lung_ry=(ry * u(0.95, 1.05), ry * u(0.97, 1.07)),
        lung_cy=(v(0.48, 0.54), v(0.5, 0.56)),
        lung_power=power,
        wobble=(max(v(0.0, 0.05), 0.0), float(rng.integers(2, 5)), u(0, 2 * np.pi)),
        dome=(u(0.9, 0.97), u(0.95, 1.02)),  # the right hemidiaphragm sits higher
        dome_height=max(v(0.06, 0.14), 0.02),
        mediastinum=(v(0.08, 0.12), v(0.14, 0.2)),
        heart=heart,
        rib_spacing=u(0.085, 0.11),
        rib_slope=rib_slope,
        pediatric=pediatric,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )
    # Pose and habitus: drawn at every level (the same patient at every level), scaled by it.
    inspiration = u(-1.0, 1.0) * r.pose  # > 0 a deep breath (lower domes), < 0 a shallow one
    tilt = float(np.clip(rng.normal(0.0, np.radians(4.0)), -np.radians(10), np.radians(10))) * r.pose
    female = bool(rng.random() < 0.5) and not pediatric
    breast = (u(0.5, 1.3), u(0.68, 0.86), u(0.34, 0.5))  # 4-8 cm of tissue over the lower zones
    has_breasts = female and rng.random() < r.breasts
    fat = float(np.exp(rng.normal(np.log(0.35), 0.6)))  # subcutaneous fat (line integral), obesity's tail
    shoulders = u(0.3, 0.8)  # the shoulder girdle's muscle over the apices
    arms = int(rng.choice([0, 1, 2], p=[0.2, 0.4, 0.4] if pediatric else [0.5, 0.5, 0.0]))
    hx, hy, hrx, hry = anat["heart"]
    anat.update(
        tilt=tilt,
        heart_tilt=u(0.1, 0.45) * r.pose,
        midline_shift=u(-0.04, 0.04) * r.pose,
        body_width=u(1.25, 1.5) + (0.05 if pediatric else 0.0),
        body_density=float(np.exp(rng.normal(0.0, 0.2) * r.pose)),
        female=female,
        breasts=breast if has_breasts else (0.0, 0.0, 0.0),
        fat=min(fat, 2.0) * r.soft_tissue,
        shoulders=shoulders * r.soft_tissue,
        arms=arms if r.nuisances > 0 else 0,
        aortic_knob=(u(0.16, 0.24), u(0.1, 0.18), u(0.045, 0.07)),
        gastric_bubble=(u(0.35, 0.6), u(0.06, 0.12), u(0.08, 0.15), u(0.04, 0.08)),
        dome=tuple(d + 0.05 * inspiration for d in anat["dome"]),
        heart=(hx, hy, hrx * (1.0 - 0.1 * min(inspiration, 0.0)), hry),
    )
    # Beyond level 1 the chest's depth profile varies too, from flat to barrel (how fast the air
    # thins towards the outline). Drawn from the patient's own seed, not the stream, so the
    # patients stay aligned at every level.
    profile_rng = np.random.default_rng([anat["texture_seed"], 1])
    anat["lung_profile"] = float(np.exp(profile_rng.normal(0.0, 0.5 * r.shape)))
    a = Anatomy(opacities=(), **anat)
    if abnormal:
        a = add_pneumonia(a, rng, disease, pattern=pattern, severity=severity, cause=cause)
    if finding is not None:
        a = add_finding(a, rng, finding)
    return a


def _lung_points(a: Anatomy, n: int = 96, erode: int = 0) -> list[tuple[float, float]]:
    """Thorax coordinates of the points of an n x n grid inside the lung fields (no tilt)."""
    flat = replace(a, tilt=0.0)
    lungs = lung_mask(flat, n, n)
    if erode:
        core = ndimage.binary_erosion(lungs, iterations=erode)
        lungs = core if core.any() else lungs
    ys, xs = np.nonzero(lungs)
    return [_to_thorax(flat, (xs[i] + 0.5) / n, (ys[i] + 0.5) / n) for i in range(len(ys))]


def draw_severity(rng: np.random.Generator, disease: DiseaseRealism | None) -> float:
    """A pneumonia's severity in (0, 1]: Beta(a, b) rescaled to [min_severity, 1]."""
    disease = disease or disease_realism(0.0)
    s = rng.beta(disease.severity_a, disease.severity_b)
    return float(disease.min_severity + (1.0 - disease.min_severity) * s)


# Patterns by cause (Kermany's file names say bacterial or viral): bacterial pneumonia is often
# one lobar focus, viral a bilateral perihilar / interstitial one; both can be patchy.
PATTERN_WEIGHTS = {"bacteria": (0.4, 0.6, 0.0), "virus": (0.4, 0.0, 0.6), None: (0.3, 0.45, 0.25)}


def add_pneumonia(a: Anatomy, rng: np.random.Generator, disease: DiseaseRealism | None = None, *,
                  pattern: str | None = None, severity: float | None = None, cause: str | None = None) -> Anatomy:
    """Pneumonia of a pattern (patchy, lobar, interstitial) and a severity: extent and density
    grow with severity. At the disease level's `pattern_mix` the pattern follows the cause,
    else it is patchy (the old look). `disease` None is the easy level (patchy, mostly obvious)."""
    u = rng.uniform
    disease = disease or disease_realism(0.0)
    if severity is None:
        severity = draw_severity(rng, disease)
    mixed = rng.random() < disease.pattern_mix  # drawn at every level: streams stay aligned
    choice = str(rng.choice(PATTERNS, p=PATTERN_WEIGHTS[cause]))
    if pattern is None:
        pattern = choice if mixed else "patchy"
    points = _lung_points(a)
    s = severity
    if pattern == "patchy":
        count = 1 + int(rng.binomial(5, 0.25 + 0.6 * s))
        side = int(rng.integers(2)) if rng.random() < 0.5 else None  # one lung or both
        opacities = []
        for _ in range(count):
            pool = [p for p in points if side is None or (p[0] < 0) == (side == 0)] or points
            x, y = pool[int(rng.integers(len(pool)))]
            opacities.append((float(x), float(y), u(0.05, 0.09 + 0.08 * s), u(0.15, 0.35) + 0.55 * s))
        return replace(a, opacities=tuple(opacities))
    if pattern == "lobar":
        # a lobe or segment: upper, middle (beside the right heart border), lower (on the dome);
        # lingula beside the left heart border
        side = int(rng.integers(2))
        zone = str(rng.choice(["upper", "middle", "lower"], p=[0.3, 0.3, 0.4]))
        y = {"upper": u(0.18, 0.35), "middle": u(0.5, 0.65), "lower": u(0.75, 0.9)}[zone]
        sx = u(0.35, 0.6) if zone != "middle" else u(0.25, 0.45)
        rx, ry = u(0.18, 0.3) * (0.6 + 0.5 * s), u(0.1, 0.18) * (0.6 + 0.5 * s)
        fill = 0.2 + 0.7 * s
        return replace(a, consolidations=((side, float(sx), float(y), float(rx), float(ry), u(-0.4, 0.4), fill),))
    return replace(a, haze=(0.12 + 0.45 * s, u(0.8, 1.0) + 0.35 * s))


def add_finding(a: Anatomy, rng: np.random.Generator, finding: str) -> Anatomy:
    """Seed 003's classes: one nodule (JSRT's JPCLN cases; radius 0.02-0.06 thorax heights,
    contrast over JSRT's subtlety grades) or TB (Montgomery's and Shenzhen's _1 cases:
    upper-zone predominant patchy consolidation and, in some cases, a cavity)."""
    if finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}; expected one of {', '.join(FINDINGS)}")
    u = rng.uniform
    if finding == "nodule":
        core = _lung_points(a, erode=4)
        x, y = core[int(rng.integers(len(core)))]
        return replace(a, nodules=a.nodules + ((float(x), float(y), u(0.02, 0.06), u(0.1, 0.25), 0),))
    points = _lung_points(a)
    upper = [p for p in points if p[1] < 0.45] or points
    opacities = list(a.opacities)
    for i in rng.choice(len(upper), size=min(len(upper), int(rng.integers(2, 6))), replace=False):
        x, y = upper[int(i)]
        opacities.append((float(x), float(y), u(0.04, 0.1), u(0.45, 0.9)))
    nodules = list(a.nodules)
    if rng.random() < 0.4:
        x, y = upper[int(rng.integers(len(upper)))]
        nodules.append((float(x), float(y), u(0.03, 0.05), u(0.15, 0.25), 1))
    return replace(a, opacities=tuple(opacities), nodules=tuple(nodules))


def add_confounders(a: Anatomy, rng: np.random.Generator, disease: DiseaseRealism | None) -> Anatomy:
    """Look-alikes drawn into any image of a classification source, each with probability
    `disease.confounders`, whatever its label: a plate atelectasis band, a thymus sail
    (children), nipple shadows (adults), prominent hila, a skin fold."""
    p = disease.confounders if disease is not None else 0.0
    u = rng.uniform
    draws = rng.random(len(CONFOUNDERS))  # one draw per kind, present or not: streams stay aligned
    found = []
    for kind, draw in zip(CONFOUNDERS, draws):
        values = {
            "band": (int(rng.integers(2)), u(0.62, 0.88), u(-0.25, 0.25), u(0.012, 0.025), u(0.35, 0.7), u(0.25, 0.5)),
            "thymus": (int(rng.integers(2)), u(0.16, 0.28), u(0.3, 0.55)),
            "nipples": (u(0.45, 0.7), u(0.62, 0.85), u(0.015, 0.025), u(0.15, 0.3)),
            "hila": (u(1.3, 1.8),),
            "skinfold": (int(rng.integers(2)), u(0.75, 1.0), u(-0.1, 0.3), u(0.25, 0.45)),
        }[kind]
        if draw < p and (kind != "thymus" or a.pediatric) and (kind != "nipples" or not a.pediatric):
            found.append((kind, *values))
    return replace(a, confounders=tuple(found))


# ------------------------------------------------------------------ shapes (thorax frame)
def _lung_polar(a: Anatomy, side: int, x, y):
    """(p-norm radius, its boundary) of one lung's outline, before any exclusion."""
    s = -1.0 if side == 0 else 1.0
    sx = s * x  # mirror so both lungs are computed in the same half-plane
    dx = (sx - a.lung_cx[side]) / a.lung_rx[side]
    dy = (y - a.lung_cy[side]) / a.lung_ry[side]
    # Narrower towards the apex: scale the horizontal distance by height.
    taper = 0.62 + 0.38 * np.clip(y / 0.45, 0.0, 1.0)
    dx = dx / taper
    amp, freq, phase = a.wobble
    theta = np.arctan2(dy, dx)
    radius = (np.abs(dx) ** a.lung_power + np.abs(dy) ** a.lung_power) ** (1.0 / a.lung_power)
    return radius, 1.0 + amp * np.sin(freq * theta + phase + side)


def dome_line(a: Anatomy, side: int, sx):
    """Height of the hemidiaphragm under a lung: highest near mid-lung, deepest at the angle."""
    return a.dome[side] - a.dome_height * np.exp(-(((sx - 0.45) / 0.28) ** 2))


def mediastinal_half_width(a: Anatomy, y):
    return a.mediastinum[0] + (a.mediastinum[1] - a.mediastinum[0]) * np.clip(y, 0.0, 1.0)


def heart_radius(a: Anatomy, x, y):
    """Normalised radius of the heart's (tilted) ellipse: <= 1 inside."""
    hx, hy, rx, ry = a.heart
    dx, dy = x - hx, y - hy
    if a.heart_tilt:
        cos, sin = np.cos(a.heart_tilt), np.sin(a.heart_tilt)
        dx, dy = cos * dx + sin * dy, -sin * dx + cos * dy
    return np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)


def _heart(a: Anatomy, x, y):
    return heart_radius(a, x, y) <= 1.0


def _aortic_knob(a: Anatomy, x, y):
    kx, ky, kr = a.aortic_knob
    return (x - kx) ** 2 + ((y - ky) / 1.2) ** 2 <= kr ** 2


def _lung_field(a: Anatomy, side: int, x, y) -> np.ndarray:
    """The SCR lung field of one lung on any broadcastable x, y."""
    radius, bound = _lung_polar(a, side, x, y)
    inside = radius <= bound
    sx = (-1.0 if side == 0 else 1.0) * x
    inside &= y <= dome_line(a, side, sx)
    inside &= sx >= mediastinal_half_width(a, y)
    inside &= ~_heart(a, x, y)
    if side == 1:
        inside &= ~_aortic_knob(a, x, y)
    return inside


def _lung_reach(a: Anatomy, side: int) -> tuple[float, float, float, float]:
    """A thorax rectangle (x0, x1, y0, y1) holding the lung: inside needs a p-norm radius of at
    most 1 + wobble amplitude, so |dx| and |dy| at most that (the taper only narrows the lung)."""
    reach = (1.0 + abs(a.wobble[0])) * 1.01
    s = -1.0 if side == 0 else 1.0
    xs = sorted([s * (a.lung_cx[side] - reach * a.lung_rx[side]), s * (a.lung_cx[side] + reach * a.lung_rx[side])])
    return xs[0], xs[1], a.lung_cy[side] - reach * a.lung_ry[side], a.lung_cy[side] + reach * a.lung_ry[side]


def lung_masks(a: Anatomy, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(image-left lung, image-right lung) SCR masks at the given size.

    The shape function is evaluated only inside each lung's pixel box (at Montgomery's
    4892 x 4020 a lung covers a fifth of the image). In the patient's frame image-left is the
    *right* lung: callers writing SCR/Montgomery files name them accordingly."""
    frame = Frame(a, height, width)
    out = []
    for side in (0, 1):
        inside = np.zeros((height, width), dtype=bool)
        rows, cols = frame.box(*_lung_reach(a, side))
        if rows.stop > rows.start and cols.stop > cols.start:
            x, y = frame.coords(rows, cols)
            inside[rows, cols] = _lung_field(a, side, x, y)
        out.append(inside)
    return out[0], out[1]


def lung_mask(a: Anatomy, height: int, width: int) -> np.ndarray:
    left, right = lung_masks(a, height, width)
    return left | right


def air_region(a: Anatomy, x, y, realism: ImageRealism | None = None) -> np.ndarray:
    """Where the lungs hold air: the SCR field, and at realistic levels also behind the heart
    and in the posterior recesses below the dome (where findings can lie outside the mask)."""
    r = realism or image_realism(0.0)
    region = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)), dtype=bool)
    for side in (0, 1):
        radius, bound = _lung_polar(a, side, x, y)
        sx = (-1.0 if side == 0 else 1.0) * x
        inside = (radius <= bound) & (sx >= mediastinal_half_width(a, y))
        inside &= y <= dome_line(a, side, sx) + (r.recess_depth if r.recess_air > 0 else 0.0)
        if r.retrocardiac_air <= 0:
            inside &= ~_heart(a, x, y)
        region |= inside
    return region


# ------------------------------------------------------------------ disease fields
def _consolidation_envelope(a: Anatomy, x, y):
    """Per lobar consolidation, its normalised radius (<= 1 inside) on the grid."""
    out = []
    for side, sx0, y0, rx, ry, angle, _ in a.consolidations:
        sx = (-1.0 if side == 0 else 1.0) * x
        dx, dy = sx - sx0, y - y0
        cos, sin = np.cos(angle), np.sin(angle)
        du, dv = cos * dx + sin * dy, -sin * dx + cos * dy
        out.append((side, np.sqrt((du / rx) ** 2 + (dv / ry) ** 2), dv / ry))
    return out


def haze_field(a: Anatomy, x, y):
    """The perihilar interstitial pattern's envelope in [0, 1] (bilateral, both lungs)."""
    _, spread = a.haze
    return np.exp(-(((np.abs(x) - 0.32) / (0.3 * spread)) ** 2) - ((y - 0.48) / (0.32 * spread)) ** 2)


def finding_region(a: Anatomy, x, y) -> np.ndarray:
    """Where the findings are, before the lungs' air bounds them: nodule and cavity discs
    (d <= r), the patchy foci's cores (within one sigma of a centre), lobar consolidations (their
    ellipse) and the interstitial pattern (at least half its peak)."""
    inside = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)), dtype=bool)
    for nx, ny, r, _, _ in a.nodules:
        inside |= (x - nx) ** 2 + (y - ny) ** 2 <= r ** 2
    for ox, oy, sigma, _ in a.opacities:
        inside |= (x - ox) ** 2 + (y - oy) ** 2 <= sigma ** 2
    for _, radius, _ in _consolidation_envelope(a, x, y):
        inside |= radius <= 1.0
    if a.haze[0] > 0:
        inside |= haze_field(a, x, y) >= 0.5
    return inside


def lesion_mask(a: Anatomy, height: int, width: int, realism: ImageRealism | None = None) -> np.ndarray:
    """Exact extent of the findings inside the lungs' air: `finding_region & air_region` on the image's
    pixel grid."""
    frame = Frame(a, height, width)
    inside = finding_region(a, *frame.coords())
    # The air region only in the findings' bounding box: its shape functions (powers, arctangents)
    # cost most of a native-size mask, and findings cover a small part of the image. The box's
    # coordinates are the whole grid's, value for value (tests/test_phantoms.py compares).
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if rows.size:
        box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        inside[box] &= air_region(a, *frame.coords(*box), realism)
    return inside


# ------------------------------------------------------------------ devices
def _bezier(p0, p1, p2, n: int = 24) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t ** 2 * np.array(p2)
    return [tuple(map(float, p)) for p in pts]


DEVICE_KINDS = ("tube", "line", "electrodes", "gastric")


def sample_devices(rng: np.random.Generator, kinds: tuple[str, ...] | None = None):
    """Support devices in the thorax frame: polylines ((points), radius in thorax y units, kind)
    and ECG electrodes (x, y, radius). `kinds` None draws 1-4 of DEVICE_KINDS (the generator's
    draws are the same either way, so a caller that ignores the result stays aligned)."""
    u = rng.uniform
    order = rng.permutation(len(DEVICE_KINDS))
    count = int(rng.integers(1, len(DEVICE_KINDS) + 1))
    chosen = kinds if kinds is not None else tuple(DEVICE_KINDS[i] for i in order[:count])
    x0 = u(-0.03, 0.03)
    tube = ((x0, -0.6), (x0 + u(-0.02, 0.02), u(0.08, 0.2)))  # endotracheal tube, tip above the carina
    s = -1.0 if rng.random() < 0.5 else 1.0
    line = _bezier((s * u(0.85, 1.05), u(-0.3, -0.15)), (s * 0.35, u(-0.05, 0.05)), (s * 0.06, u(0.2, 0.32)))
    gastric = _bezier((u(-0.05, 0.05), -0.6), (u(-0.05, 0.1), 0.6), (u(0.3, 0.5), u(1.05, 1.2)))
    wires = [_bezier((ex, ey), (ex + u(-0.3, 0.3), ey + u(-0.3, 0.3)), (ex * 1.6, -0.7), n=10)
             for ex, ey in [(u(-1.0, 1.0), u(-0.2, 0.9)) for _ in range(4)]]
    radii = [u(0.025, 0.035) for _ in range(4)]
    n_electrodes = int(rng.integers(2, 5))
    lines, electrodes = [], []
    if "tube" in chosen:
        lines.append((tube, 0.012, 1))
    if "line" in chosen:
        lines.append((tuple(line), 0.006, 0))
    if "gastric" in chosen:
        lines.append((tuple(gastric), 0.008, 1))
    if "electrodes" in chosen:
        for (points, r) in list(zip(wires, radii))[:n_electrodes]:
            electrodes.append((points[0][0], points[0][1], r))
            lines.append((tuple(points), 0.003, 0))
    return tuple(lines), tuple(electrodes)
