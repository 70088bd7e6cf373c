"""Pathology phantoms for CheXseg (seed 004): CheXlocalize's ten pathologies drawn into an
adult phantom chest (`phantom.py`), each with an exact mask at any size.

A patient is an `Anatomy` plus a `Findings` record of what it has and where. Every
pathology is a shape in the thorax frame (x in [-1, 1] across the thorax, y = 0 at the
lung apices, 1 at the costophrenic angles; `side` 0 = image-left, 1 = image-right), so
`masks` evaluates the very shapes `render` draws, at the mask's own resolution:

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
  Support Devices             thin bright lines (tube, central line) and ECG electrodes;
                              mask = the lines and discs

Masks may overlap (an effusion under a consolidation), as in CheXlocalize, where each
pathology is its own binary mask. Image-level labels are consistent with the masks: a
pathology is present exactly when its mask is non-empty.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from multimix.data import layout, phantom

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
    # line segments (x0, y0, x1, y1, half width) and electrodes (x, y, r)
    lines: tuple[tuple[float, float, float, float, float], ...] = ()
    electrodes: tuple[tuple[float, float, float], ...] = ()


def _mirror(side: int) -> float:
    return -1.0 if side == 0 else 1.0


def _bezier(p0, p1, p2, n: int = 24) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t ** 2 * np.array(p2)
    return [tuple(map(float, p)) for p in pts]


def _inside_points(a: phantom.Anatomy, rng: np.random.Generator, side: int | None = None,
                   y_range=(0.0, 1.1), erode: int = 0) -> tuple[float, float]:
    """A point inside the lungs (optionally one side, a height band, away from the edge)."""
    n = 96
    x, y = phantom._grid(a, n, n)
    lungs = phantom._lung_side(a, 0, x, y) | phantom._lung_side(a, 1, x, y) if side is None \
        else phantom._lung_side(a, side, x, y)
    if erode:
        lungs = ndimage.binary_erosion(lungs, iterations=erode)
    band = lungs & (y >= y_range[0]) & (y <= y_range[1])
    ys, xs = np.nonzero(band if band.any() else lungs)
    i = int(rng.integers(len(ys)))
    return float(x[0, xs[i]]), float(y[ys[i], 0])


def sample_patient(rng: np.random.Generator, aspect: float = 1.0,
                   present: tuple[str, ...] | None = None) -> tuple[phantom.Anatomy, Findings]:
    """Draw an adult patient and its pathologies (each by PREVALENCE unless `present` is given)."""
    anat = phantom.sample_anatomy(rng, pediatric=False, abnormal=False, aspect=aspect)
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
        lines, electrodes = [], []
        kinds = rng.permutation(["tube", "line", "electrodes"])[: int(rng.integers(1, 4))]
        if "tube" in kinds:  # endotracheal tube down the midline, tip above the carina
            x0 = u(-0.03, 0.03)
            lines += [(x0, -0.45, x0 + u(-0.02, 0.02), u(0.08, 0.2), 0.012)]
        if "line" in kinds:  # central venous line from a shoulder into the superior vena cava
            s = _mirror(int(rng.integers(2)))
            pts = _bezier((s * u(0.85, 1.05), u(-0.3, -0.15)), (s * 0.35, u(-0.05, 0.05)), (s * 0.06, u(0.2, 0.32)))
            lines += [(*p, *q, 0.007) for p, q in zip(pts[:-1], pts[1:])]
        if "electrodes" in kinds:
            for _ in range(int(rng.integers(2, 5))):
                electrodes.append((u(-1.0, 1.0), u(-0.2, 0.9), u(0.025, 0.035)))
        f["lines"], f["electrodes"] = tuple(lines), tuple(electrodes)
    return anat, Findings(**f)


# ------------------------------------------------------------------ shapes (thorax frame)
def _lungs(a, x, y):
    return phantom._lung_side(a, 0, x, y), phantom._lung_side(a, 1, x, y)


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


def _segments_mask(f: Findings, x, y) -> np.ndarray:
    """Lines and electrodes, each evaluated on its own bounding box (exact and cheap at 3k pixels)."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    xs, ys = x[0], y[:, 0]
    for x0, y0, x1, y1, half in f.lines:
        c = np.searchsorted(xs, [min(x0, x1) - half, max(x0, x1) + half])
        r = np.searchsorted(ys, [min(y0, y1) - half, max(y0, y1) + half])
        if c[0] >= c[1] or r[0] >= r[1]:
            continue
        px, py = xs[None, c[0]:c[1]], ys[r[0]:r[1], None]
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        out[r[0]:r[1], c[0]:c[1]] |= (px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2 <= half ** 2
    for ex, ey, er in f.electrodes:
        out |= (x - ex) ** 2 + (y - ey) ** 2 <= er ** 2
    return out


def _shapes(a: phantom.Anatomy, f: Findings, x, y) -> dict[str, np.ndarray]:
    """Every present pathology's region on the grid (x, y)."""
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
            region = side_lung[side] & ~phantom._lung_side(_collapsed(a, side, depth), side, x, y)
        elif name == "Pleural Effusion":
            side, level = f.effusion
            sx = _mirror(side) * x
            meniscus = level - 0.14 * np.clip((sx - 0.3) / 0.6, 0.0, 1.0) ** 2
            region = side_lung[side] & (y >= meniscus)
        else:  # Support Devices
            region = _segments_mask(f, x, y)
        out[name] = region
    return out


def masks(a: phantom.Anatomy, f: Findings, height: int, width: int) -> dict[str, np.ndarray]:
    """All ten pathologies' masks (bool, height x width); absent ones are empty."""
    x, y = phantom._grid(a, height, width)
    shapes = _shapes(a, f, x, y)
    return {p: shapes.get(p, np.zeros((height, width), dtype=bool)) for p in PATHOLOGIES}


def render_attenuation(a: phantom.Anatomy, f: Findings, height: int, width: int) -> np.ndarray:
    """Attenuation in [0, 1] at a working size: the chest (with its heart, mediastinum,
    nodules and opacities) plus the findings that are not anatomy."""
    att = phantom.render_attenuation(a, height, width)
    x, y = phantom._grid(a, height, width)
    shapes = _shapes(a, f, x, y)
    px = min(height * a.height, width * a.half_width)  # pixels per thorax unit
    rng = np.random.default_rng(a.texture_seed + 1)

    def soft(mask, sigma_units=0.006):
        return ndimage.gaussian_filter(mask.astype(np.float32), sigma_units * px)

    left, right = _lungs(a, x, y)
    lungs = soft(left | right)
    if "Edema" in shapes:
        amp, _ = f.edema
        haze = np.clip(0.7 + 0.4 * phantom._smooth_noise(rng, att.shape, 0.006 * px), 0.2, 1.3)
        att += amp * _edema_field(f, x, y) * haze * lungs
    if "Consolidation" in shapes:
        att += 0.4 * soft(shapes["Consolidation"], 0.01)
    if "Atelectasis" in shapes:
        att += 0.32 * soft(shapes["Atelectasis"], 0.004)
    if "Pleural Effusion" in shapes:
        # denser towards the base; the meniscus edge is soft, the costophrenic angle blunted
        _, level = f.effusion
        depth = np.clip((y - level + 0.15) / 0.3, 0.3, 1.0)
        att += 0.32 * soft(shapes["Pleural Effusion"], 0.012) * depth
    if "Pneumothorax" in shapes:
        side, depth = f.pneumothorax
        gap = shapes["Pneumothorax"]
        att -= 0.12 * soft(gap, 0.003)  # no vessels: darker than the lung beside it
        edge = ndimage.binary_dilation(gap) & phantom._lung_side(_collapsed(a, side, depth), side, x, y)
        att += 0.12 * soft(edge, 0.002)
    if "Support Devices" in shapes:
        att += 0.45 * soft(shapes["Support Devices"], 0.002)
    return np.clip(att, 0.0, 1.0).astype(np.float32)


def render(a: phantom.Anatomy, f: Findings, height: int, width: int, work_side: int = 512) -> np.ndarray:
    """Attenuation at full size: rendered at a working size, then upsampled (as `phantom.render`)."""
    scale = min(1.0, work_side / max(height, width))
    wh, ww = max(32, round(height * scale)), max(32, round(width * scale))
    return phantom.upsample(render_attenuation(a, f, wh, ww), height, width)
