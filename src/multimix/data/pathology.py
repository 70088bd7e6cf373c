"""Pathology phantoms for CheXseg (seed 004): CheXlocalize's ten pathologies drawn into an
adult phantom chest (`phantom.py`) in the same physics (`xray.py`: each a change of the line
integrals), each with an exact mask at any size.

A patient is an `Anatomy` plus a `Findings` record of what it has and where. Every
pathology is a shape in the thorax frame (x in [-1, 1] across the thorax, y = 0 at the
lung apices, 1 at the costophrenic angles; `side` 0 = image-left, 1 = image-right), so
`masks` evaluates the very shapes `add_findings` draws, at the mask's own resolution:

  Enlarged Cardiomediastinum  a widened upper mediastinum; mask = the mediastinal
                              silhouette from the apices down to the heart
  Cardiomegaly                a heart 1.3-1.6x wider; mask = the heart
  Lung Lesion                 one round nodule (a disc with a soft rim); mask = the disc
  Airspace Opacity            patchy textured opacities; mask = their cores in the lungs
  Edema                       bilateral perihilar haze ("bat wing"); mask = where it is
                              at least half its peak, inside the lungs
  Consolidation               a dense homogeneous lower-zone opacity in one lung
  Atelectasis                 a plate-like band across the lower zone of one lung
  Pneumothorax                the lung edge pulled in at apex and side, no lung markings
                              beyond it, a thin visceral pleural line; mask = the gap
  Pleural Effusion            fluid with a meniscus rising to the chest wall at one
                              costophrenic angle; mask = the lung field below the meniscus
  Support Devices             tubes, lines and ECG electrodes with their wires
                              (`phantom.sample_devices`); mask = where they are drawn

Masks may overlap (an effusion under a consolidation), as in CheXlocalize, where each
pathology is its own binary mask. Image-level labels are consistent with the masks: a
pathology is present exactly when its mask is non-empty.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from multimix.data import layout, phantom, xray

PATHOLOGIES = layout.CHEXLOCALIZE_PATHOLOGIES
# Share of phantoms with each pathology (roughly CheXpert's frontal-view prevalences).
PREVALENCE = {
    "Enlarged Cardiomediastinum": 0.15, "Cardiomegaly": 0.2, "Lung Lesion": 0.1, "Airspace Opacity": 0.4,
    "Edema": 0.25, "Consolidation": 0.15, "Atelectasis": 0.3, "Pneumothorax": 0.12, "Pleural Effusion": 0.35,
    "Support Devices": 0.45,
}


@dataclass(frozen=True)
class Findings:
    """Where each present pathology lies (anatomy-changing ones live in the Anatomy itself:
    heart, mediastinum, nodules, opacities)."""

    present: tuple[str, ...] = ()
    edema: tuple[float, float] = (0.0, 0.0)                       # amplitude, spread
    consolidation: tuple[int, float, float, float, float] = (0, 0.0, 0.0, 0.0, 0.0)  # side, sx, y, rx, ry
    atelectasis: tuple[int, float, float, float, float] = (0, 0.0, 0.0, 0.0, 0.0)    # side, y0, slope, half, sx0
    pneumothorax: tuple[int, float] = (0, 0.0)                    # side, depth of the collapse
    effusion: tuple[int, float] = (0, 0.0)                        # side, meniscus level
    # support devices as `phantom.sample_devices` draws them: polylines and electrodes
    lines: tuple = ()
    electrodes: tuple[tuple[float, float, float], ...] = ()


def _mirror(side: int) -> float:
    return -1.0 if side == 0 else 1.0


def _inside_points(a: phantom.Anatomy, rng: np.random.Generator, side: int | None = None,
                   y_range=(0.0, 1.1), erode: int = 0) -> tuple[float, float]:
    """A point inside the lungs (optionally one side, a height band, away from the edge)."""
    n = 96
    x, y = phantom._grid(replace(a, tilt=0.0), n, n)
    x, y = np.broadcast_arrays(x, y)
    lungs = phantom._lung_field(a, 0, x, y) | phantom._lung_field(a, 1, x, y) if side is None \
        else phantom._lung_field(a, side, x, y)
    if erode:
        lungs = ndimage.binary_erosion(lungs, iterations=erode)
    band = lungs & (y >= y_range[0]) & (y <= y_range[1])
    ys, xs = np.nonzero(band if band.any() else lungs)
    i = int(rng.integers(len(ys)))
    return float(x[ys[i], xs[i]]), float(y[ys[i], xs[i]])


def sample_patient(rng: np.random.Generator, aspect: float = 1.0, present: tuple[str, ...] | None = None,
                   realism=None) -> tuple[phantom.Anatomy, Findings]:
    """Draw an adult patient and its pathologies (each by PREVALENCE unless `present` is given);
    `realism` (difficulty.ImageRealism) widens pose and habitus as for every source."""
    anat = phantom.sample_anatomy(rng, pediatric=False, abnormal=False, aspect=aspect, realism=realism)
    if present is None:
        present = tuple(p for p in PATHOLOGIES if rng.random() < PREVALENCE[p])
    unknown = set(present) - set(PATHOLOGIES)
    if unknown:
        raise ValueError(f"unknown pathology {sorted(unknown)[0]!r}; expected one of {', '.join(PATHOLOGIES)}")
    u = rng.uniform
    f: dict = {"present": tuple(p for p in PATHOLOGIES if p in present)}
    # Anatomy first (heart, mediastinum): the lungs the other findings sit in depend on it.
    if "Cardiomegaly" in present:
        hx, hy, rx, ry = anat.heart
        anat = replace(anat, heart=(hx + u(0.02, 0.06), hy, rx * u(1.3, 1.6), ry * u(1.08, 1.2)))
    if "Enlarged Cardiomediastinum" in present:
        top, base = anat.mediastinum
        anat = replace(anat, mediastinum=(top * u(1.8, 2.3), base * u(1.3, 1.6)))
    if "Lung Lesion" in present:
        x, y = _inside_points(anat, rng, erode=5)
        anat = replace(anat, nodules=((x, y, u(0.035, 0.07), u(0.18, 0.3), 0),))
    if "Airspace Opacity" in present:
        blobs = []
        for _ in range(int(rng.integers(2, 5))):
            x, y = _inside_points(anat, rng)
            blobs.append((x, y, u(0.07, 0.14), u(0.22, 0.4)))
        anat = replace(anat, opacities=tuple(blobs))
    if "Edema" in present:
        f["edema"] = (u(0.2, 0.3), u(0.9, 1.15))
    if "Consolidation" in present:
        side = int(rng.integers(2))
        x, y = _inside_points(anat, rng, side=side, y_range=(0.5, 0.85), erode=3)
        f["consolidation"] = (side, abs(x), y, u(0.12, 0.2), u(0.1, 0.16))
    if "Atelectasis" in present:
        side = int(rng.integers(2))
        x, y = _inside_points(anat, rng, side=side, y_range=(0.6, 0.85), erode=3)
        f["atelectasis"] = (side, y, u(-0.25, 0.25), u(0.018, 0.03), abs(x))
    if "Pneumothorax" in present:
        f["pneumothorax"] = (int(rng.integers(2)), u(0.18, 0.32))
    if "Pleural Effusion" in present:
        f["effusion"] = (int(rng.integers(2)), u(0.72, 0.84))
    if "Support Devices" in present:
        f["lines"], f["electrodes"] = phantom.sample_devices(rng)
    return anat, Findings(**f)


# ------------------------------------------------------------------ shapes (thorax frame)
def _lungs(a, x, y):
    return phantom._lung_field(a, 0, x, y), phantom._lung_field(a, 1, x, y)


def _collapsed(a: phantom.Anatomy, side: int, depth: float) -> phantom.Anatomy:
    """The lung retracted towards the hilum: narrower and shorter, its base kept."""
    rx, ry = list(a.lung_rx), list(a.lung_ry)
    cx, cy = list(a.lung_cx), list(a.lung_cy)
    new_rx, new_ry = rx[side] * (1 - depth), ry[side] * (1 - 0.45 * depth)
    cx[side] -= rx[side] - new_rx
    cy[side] += ry[side] - new_ry
    rx[side], ry[side] = new_rx, new_ry
    return replace(a, lung_rx=tuple(rx), lung_ry=tuple(ry), lung_cx=tuple(cx), lung_cy=tuple(cy))


def _edema_field(f: Findings, x, y):
    _, spread = f.edema
    return np.exp(-(((np.abs(x) - 0.3) / (0.26 * spread)) ** 2) - ((y - 0.5) / (0.3 * spread)) ** 2)


def _shapes(a: phantom.Anatomy, f: Findings, frame: phantom.Frame) -> dict[str, np.ndarray]:
    """Every present pathology's region on the frame's grid."""
    x, y = frame.coords()
    left, right = _lungs(a, x, y)
    lungs = left | right
    side_lung = (left, right)
    out = {}
    for name in f.present:
        if name == "Cardiomegaly":
            region = phantom._heart(a, x, y)
        elif name == "Enlarged Cardiomediastinum":
            hx, hy, rx, ry = a.heart
            med = a.mediastinum[0] + (a.mediastinum[1] - a.mediastinum[0]) * np.clip(y, 0.0, 1.0)
            region = (np.abs(x) < med) & (y >= -0.05) & (y <= hy - 0.6 * ry)
        elif name == "Lung Lesion":
            region = np.zeros_like(lungs)
            for nx, ny, r, _, _ in a.nodules:
                region |= (x - nx) ** 2 + (y - ny) ** 2 <= r ** 2
            region &= lungs
        elif name == "Airspace Opacity":
            region = np.zeros_like(lungs)
            for ox, oy, sigma, _ in a.opacities:
                region |= (x - ox) ** 2 + (y - oy) ** 2 <= sigma ** 2
            region &= lungs
        elif name == "Edema":
            region = (_edema_field(f, x, y) >= 0.5) & lungs
        elif name == "Consolidation":
            side, sx0, y0, rx, ry = f.consolidation
            region = (((_mirror(side) * x - sx0) / rx) ** 2 + ((y - y0) / ry) ** 2 <= 1.0) & side_lung[side]
        elif name == "Atelectasis":
            side, y0, slope, half, sx0 = f.atelectasis
            sx = _mirror(side) * x
            region = (np.abs(y - (y0 + slope * (sx - sx0))) <= half) & (np.abs(sx - sx0) <= 0.22) & side_lung[side]
        elif name == "Pneumothorax":
            side, depth = f.pneumothorax
            region = side_lung[side] & ~phantom._lung_field(_collapsed(a, side, depth), side, x, y)
        elif name == "Pleural Effusion":
            side, level = f.effusion
            sx = _mirror(side) * x
            meniscus = level - 0.14 * np.clip((sx - 0.3) / 0.6, 0.0, 1.0) ** 2
            region = side_lung[side] & (y >= meniscus)
        else:  # Support Devices: where they are drawn, at this grid's resolution
            region = xray.device_thickness(frame, xray.Acquisition(lines=f.lines, electrodes=f.electrodes)) > 0
        out[name] = np.broadcast_to(region, frame_shape(frame)).copy()
    return out


def frame_shape(frame: phantom.Frame) -> tuple[int, int]:
    return frame.height, frame.width


def masks(a: phantom.Anatomy, f: Findings, height: int, width: int) -> dict[str, np.ndarray]:
    """All ten pathologies' masks (bool, height x width); absent ones are empty."""
    shapes = _shapes(a, f, phantom.Frame(a, height, width))
    return {p: shapes.get(p, np.zeros((height, width), dtype=bool)) for p in PATHOLOGIES}


def add_findings(chest: xray.Chest, a: phantom.Anatomy, f: Findings) -> None:
    """The findings that are not anatomy, as changes of a chest's line integrals: fluid
    replacing lung air (edema, consolidation, atelectasis, effusion, which also adds its own
    layer), air without lung tissue (pneumothorax: no vessels, a thin visceral pleural line).
    Support devices come with the acquisition (`xray.Acquisition`), heart, mediastinum, nodules
    and opacities with the anatomy."""
    frame = chest.frame
    shapes = _shapes(a, f, frame)
    x, y = chest.x, chest.y
    px = frame.px_per_unit
    rng = np.random.default_rng(a.texture_seed + 1)

    def soft(mask, sigma_units=0.006):
        return ndimage.gaussian_filter(mask.astype(np.float32), sigma_units * px)

    share = np.zeros(chest.L.shape, dtype=np.float32)
    if "Edema" in shapes:
        amp, _ = f.edema
        haze = np.clip(0.7 + 0.4 * xray._smooth_noise(rng, chest.L.shape, 0.006 * px), 0.2, 1.3)
        share += 2.2 * amp * _edema_field(f, x, y) * haze
    if "Consolidation" in shapes:
        share += 0.9 * soft(shapes["Consolidation"], 0.01)
    if "Atelectasis" in shapes:
        share += 0.75 * soft(shapes["Atelectasis"], 0.004)
    if "Pleural Effusion" in shapes:
        # denser towards the base; the meniscus edge is soft, the costophrenic angle blunted
        _, level = f.effusion
        depth = np.clip((y - level + 0.15) / 0.3, 0.3, 1.0)
        layer = soft(shapes["Pleural Effusion"], 0.012) * depth
        share += 0.8 * layer
        chest.L += 0.5 * layer
    chest.fill(share)
    if "Pneumothorax" in shapes:
        side, depth = f.pneumothorax
        gap = shapes["Pneumothorax"]
        chest.L -= soft(gap, 0.003) * (0.25 + chest.extras.get("vessels", 0.0))  # no lung, no vessels
        edge = ndimage.binary_dilation(gap) & phantom._lung_field(_collapsed(a, side, depth), side, x, y)
        chest.L += 0.25 * soft(edge, 0.002)
    np.maximum(chest.L, 0.0, out=chest.L)


def devices(f: Findings) -> tuple:
    """The support devices of a patient (for `xray.Acquisition`)."""
    return f.lines, f.electrodes


def line_integrals(a: phantom.Anatomy, f: Findings, height: int, width: int, realism=None) -> np.ndarray:
    """A patient's line integrals with all its findings (devices included), before exposure."""
    chest = xray.chest(a, height, width, realism, devices=xray.Acquisition(lines=f.lines, electrodes=f.electrodes))
    add_findings(chest, a, f)
    return chest.L
