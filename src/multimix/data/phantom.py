"""Phantom chest radiographs with exact lung masks.

A phantom is drawn from a handful of random anatomical parameters (`Anatomy`)
and rendered as an attenuation map: bright = dense (bone, soft tissue),
dark = air (lungs, outside the body). Lung masks are evaluated analytically
from the *same* shape functions at the mask's own resolution, so they are
exact at every size, and they exclude the heart and mediastinum as the SCR and
Montgomery reference masks do.

Abnormal (pneumonia-like) cases get patchy opacities: textured blobs placed
at points sampled *inside* the lungs and clipped to them, so that both a
classifier's saliency and a segmenter have something real to learn.

Two more findings serve seed 003's classes (`finding`):
  nodule  JSRT's JPCLN cases: one round, well-defined opacity (a disc with a
          soft rim, 0.02-0.06 thorax heights across in radius, of varying
          contrast, as JSRT's subtlety grades), centred inside a lung;
  tb      Montgomery's and Shenzhen's _1 cases: upper-zone predominant
          patchy consolidation (blobs sampled in the upper half of the lungs)
          and, in some cases, a cavity (a dense ring around a lucent centre).
`lesion_mask` gives their exact extent at any size, from the same
parameters (the lesion lies inside the lung fields, whose masks include it,
as the reference masks do).

All geometry lives in a thorax frame: x in [-1, 1] from image-left to
image-right across the thorax, y = 0 at the lung apices and y = 1 at the
costophrenic angles. Image-left is the patient's right (radiographic
convention), so the heart bulges to the image-right (side +1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage


@dataclass(frozen=True)
class Anatomy:
    # placement of the thorax frame in normalised image coordinates [0, 1]
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
    opacities: tuple[tuple[float, float, float, float], ...]  # (x, y, sigma, amplitude)
    texture_seed: int
    # round lesions: nodules and TB cavities, (x, y, radius, amplitude, cavity 0/1)
    nodules: tuple[tuple[float, float, float, float, int], ...] = ()


FINDINGS = ("nodule", "tb")


def sample_anatomy(rng: np.random.Generator, *, pediatric: bool, abnormal: bool, aspect: float = 1.0,
                   opacity_scale: float = 1.0, finding: str | None = None) -> Anatomy:
    """Draw one patient. `aspect` = image width / height, to keep the thorax
    roughly anatomical on non-square images. `opacity_scale` multiplies the
    density of pneumonia opacities (below 1: fainter, a harder classification).
    `abnormal` adds pneumonia-like opacities; `finding` a nodule or TB (drawn
    after everything else, so a patient without one is the same patient)."""
    u = rng.uniform
    if pediatric:
        height, half_width, top = u(0.48, 0.6), u(0.3, 0.38), u(0.16, 0.26)
        rx, ry, power = u(0.34, 0.4), u(0.52, 0.6), u(1.9, 2.3)
        heart = (u(0.06, 0.14), u(0.66, 0.74), u(0.3, 0.38), u(0.22, 0.28))
        rib_slope = u(0.1, 0.25)
    else:
        height, half_width, top = u(0.52, 0.66), u(0.33, 0.42), u(0.08, 0.18)
        rx, ry, power = u(0.3, 0.37), u(0.56, 0.64), u(2.2, 3.0)
        heart = (u(0.08, 0.16), u(0.7, 0.8), u(0.26, 0.34), u(0.18, 0.24))
        rib_slope = u(0.25, 0.45)
    half_width = half_width / max(aspect, 0.5) ** 0.5
    asym = u(-0.03, 0.03)
    anat = dict(
        cx=0.5 + u(-0.03, 0.03),
        top=top,
        height=height,
        half_width=half_width,
        lung_cx=(0.5 + asym, 0.52 - asym),
        lung_rx=(rx * u(0.95, 1.05), rx * u(0.88, 0.98)),
        lung_ry=(ry * u(0.95, 1.05), ry * u(0.97, 1.07)),
        lung_cy=(u(0.48, 0.54), u(0.5, 0.56)),
        lung_power=power,
        wobble=(u(0.0, 0.05), float(rng.integers(2, 5)), u(0, 2 * np.pi)),
        dome=(u(0.9, 0.97), u(0.95, 1.02)),  # the right hemidiaphragm sits higher
        dome_height=u(0.06, 0.14),
        mediastinum=(u(0.08, 0.12), u(0.14, 0.2)),
        heart=heart,
        rib_spacing=u(0.085, 0.11),
        rib_slope=rib_slope,
        pediatric=pediatric,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )
    opacities: list[tuple[float, float, float, float]] = []
    if abnormal:
        partial = Anatomy(opacities=(), **anat)
        # Rejection-sample blob centres inside the lungs on a coarse grid.
        ys, xs = np.nonzero(lung_mask(partial, 96, 96))
        count = int(rng.integers(2, 7))
        for i in rng.choice(len(ys), size=count, replace=False):
            px, py = (xs[i] + 0.5) / 96, (ys[i] + 0.5) / 96
            x, y = _to_thorax(partial, px, py)
            opacities.append((float(x), float(y), u(0.06, 0.16), u(0.18, 0.4) * opacity_scale))
    nodules: list[tuple[float, float, float, float, int]] = []
    if finding is not None:
        if finding not in FINDINGS:
            raise ValueError(f"unknown finding {finding!r}; expected one of {', '.join(FINDINGS)}")
        partial = Anatomy(opacities=(), **anat)
        ys, xs = np.nonzero(lung_mask(partial, 96, 96))
        points = [_to_thorax(partial, (xs[i] + 0.5) / 96, (ys[i] + 0.5) / 96) for i in range(len(ys))]
        if finding == "nodule":
            # away from the lung edge, so that the disc lies inside the lung field
            core = np.nonzero(ndimage.binary_erosion(lung_mask(partial, 96, 96), iterations=4)[ys, xs])[0]
            x, y = points[int(rng.choice(core if len(core) else np.arange(len(points))))]
            nodules.append((float(x), float(y), u(0.02, 0.06), u(0.1, 0.25), 0))
        else:
            upper = [i for i, (_, y) in enumerate(points) if y < 0.45] or list(range(len(points)))
            for i in rng.choice(upper, size=min(len(upper), int(rng.integers(2, 6))), replace=False):
                x, y = points[int(i)]
                opacities.append((float(x), float(y), u(0.04, 0.1), u(0.2, 0.4)))
            if rng.random() < 0.4:
                x, y = points[int(rng.choice(upper))]
                nodules.append((float(x), float(y), u(0.03, 0.05), u(0.15, 0.25), 1))
    return Anatomy(opacities=tuple(opacities), nodules=tuple(nodules), **anat)


def _to_thorax(a: Anatomy, px, py):
    """Normalised image coordinates -> thorax frame."""
    return (px - a.cx) / a.half_width, (py - a.top) / a.height


def _grid(a: Anatomy, height: int, width: int):
    px = (np.arange(width, dtype=np.float32) + 0.5) / width
    py = (np.arange(height, dtype=np.float32) + 0.5) / height
    x, y = _to_thorax(a, px[None, :], py[:, None])
    return x.astype(np.float32), y.astype(np.float32)


def _lung_side(a: Anatomy, side: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean field of one lung (side 0 = image-left, 1 = image-right).

    On a grid (x a row, y a column, as `_grid` makes them) the shape function is evaluated
    only inside the lung's bounding box: at Montgomery's 4892 x 4020 a lung covers a
    fifth of the image, and the arctangent, sine and power below were most of the
    synthetic acquire's time. Outside the box no point can be inside (see `_lung_box`)."""
    if x.ndim == 2 and y.ndim == 2 and x.shape[0] == 1 and y.shape[1] == 1:
        rows, cols = _lung_box(a, side, x[0], y[:, 0])
        inside = np.zeros((y.shape[0], x.shape[1]), dtype=bool)
        if rows.stop > rows.start and cols.stop > cols.start:
            inside[rows, cols] = _lung_field(a, side, x[:, cols], y[rows])
        return inside
    return _lung_field(a, side, x, y)


def _lung_box(a: Anatomy, side: int, x: np.ndarray, y: np.ndarray) -> tuple[slice, slice]:
    """Rows of `y` and columns of `x` (both monotonic) that can hold the lung: inside needs
    a p-norm radius (p >= 1, so at least |dx| and |dy|) of at most 1 + wobble amplitude,
    and the taper only narrows the lung (|dx| >= |sx - cx| / rx). A 1 % margin keeps
    rounding at the box's edge from mattering."""
    reach = (1.0 + abs(a.wobble[0])) * 1.01
    s = -1.0 if side == 0 else 1.0

    def span(keep: np.ndarray) -> slice:
        hits = np.flatnonzero(keep)
        return slice(int(hits[0]), int(hits[-1]) + 1) if len(hits) else slice(0, 0)

    rows = span(np.abs(y - a.lung_cy[side]) <= reach * a.lung_ry[side])
    cols = span(np.abs(s * x - a.lung_cx[side]) <= reach * a.lung_rx[side])
    return rows, cols


def _lung_field(a: Anatomy, side: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The lung's shape function on any broadcastable x, y (no bounding box)."""
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
    inside = radius <= 1.0 + amp * np.sin(freq * theta + phase + side)
    # Diaphragm dome: highest near mid-lung, deepest at the costophrenic angle.
    dome = a.dome[side] - a.dome_height * np.exp(-(((sx - 0.45) / 0.28) ** 2))
    inside &= y <= dome
    # Mediastinum: widening from apex to base.
    med = a.mediastinum[0] + (a.mediastinum[1] - a.mediastinum[0]) * np.clip(y, 0.0, 1.0)
    inside &= sx >= med
    inside &= ~_heart(a, x, y)
    return inside


def _heart(a: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    hx, hy, rx, ry = a.heart
    return ((x - hx) / rx) ** 2 + ((y - hy) / ry) ** 2 <= 1.0


def lung_masks(a: Anatomy, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(image-left lung, image-right lung) masks at the given size.

    In the patient's frame image-left is the *right* lung: callers writing
    SCR/Montgomery files name them accordingly.
    """
    x, y = _grid(a, height, width)
    return _lung_side(a, 0, x, y), _lung_side(a, 1, x, y)


def lung_mask(a: Anatomy, height: int, width: int) -> np.ndarray:
    left, right = lung_masks(a, height, width)
    return left | right


def _nodule_field(a: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Density of the round lesions: a plateau with a soft rim (1 inside, 0 beyond 1.15 r); a
    cavity keeps only a ring of 0.6-1 r, with a lucent (negative) centre."""
    field = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    for nx, ny, r, amp, cavity in a.nodules:
        d = np.sqrt((x - nx) ** 2 + (y - ny) ** 2) / r
        disc = np.clip((1.15 - d) / 0.3, 0.0, 1.0)
        if cavity:
            disc = disc * np.clip((d - 0.5) / 0.15, 0.0, 1.0) - 0.5 * (d < 0.5)
        field += amp * disc
    return field


def lesion_mask(a: Anatomy, height: int, width: int) -> np.ndarray:
    """Exact extent of the findings inside the lungs: nodule and cavity discs (d <= r) and the
    opacities' cores (within one sigma of a centre)."""
    x, y = _grid(a, height, width)
    inside = np.zeros((height, width), dtype=bool)
    for nx, ny, r, _, _ in a.nodules:
        inside |= (x - nx) ** 2 + (y - ny) ** 2 <= r ** 2
    for ox, oy, sigma, _ in a.opacities:
        inside |= (x - ox) ** 2 + (y - oy) ** 2 <= sigma ** 2
    return inside & lung_mask(a, height, width)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def render_attenuation(a: Anatomy, height: int, width: int) -> np.ndarray:
    """Attenuation map in [0, 1] (bright = dense) at the given (working) size."""
    rng = np.random.default_rng(a.texture_seed)
    x, y = _grid(a, height, width)
    shape = (height, width)
    px_per_unit = min(height * a.height, width * a.half_width)

    def soften(mask: np.ndarray, sigma_units: float) -> np.ndarray:
        return ndimage.gaussian_filter(mask.astype(np.float32), sigma_units * px_per_unit)

    # Body: an elliptical cylinder, thickest in the middle; arms for children.
    body_w = 1.35 + (0.25 if a.pediatric else 0.0)
    thickness = np.sqrt(np.clip(1.0 - (x / body_w) ** 2, 0.0, 1.0))
    shoulders = np.clip((y + 0.35) / 0.25, 0.0, 1.0)  # body narrows above the apices
    body = thickness * (0.35 + 0.65 * shoulders)
    att = 0.5 * body

    # Abdomen below the diaphragm is dense.
    # Hemidiaphragm bases blend smoothly across the midline (no seam).
    base = a.dome[0] + (a.dome[1] - a.dome[0]) / (1.0 + np.exp(-x / 0.08))
    dome_y = base - a.dome_height * np.exp(-(((np.abs(x) - 0.45) / 0.28) ** 2))
    att += 0.18 * np.clip((y - dome_y) / 0.05 + 0.5, 0.0, 1.0) * thickness

    # Spine with vertebral bodies, and the mediastinum.
    spine = np.exp(-((x / 0.09) ** 2))
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * y / 0.075) ** 8
    att += 0.14 * spine * vertebrae * (y > -0.3)
    med = a.mediastinum[0] + (a.mediastinum[1] - a.mediastinum[0]) * np.clip(y, 0.0, 1.0)
    att += 0.08 * soften(np.abs(x) < med, 0.02)
    att += 0.12 * soften(_heart(a, x, y), 0.015)

    # Lungs: air removes most of the soft-tissue signal; faint vessels remain.
    left, right = _lung_side(a, 0, x, y), _lung_side(a, 1, x, y)
    lungs = soften(left | right, 0.008)
    vessels = 0.035 * np.clip(_smooth_noise(rng, shape, 0.01 * px_per_unit), -2, 2) * (1.0 - np.abs(x) / 1.2)
    att -= lungs * (0.34 - vessels)

    # Ribs: posterior arcs, sloping down laterally, visible across the thorax.
    rib_field = np.zeros(shape, dtype=np.float32)
    for k in range(11):
        centre = -0.05 + k * a.rib_spacing + a.rib_slope * (np.abs(x) - 0.1) ** 2
        rib_field += np.exp(-(((y - centre) / (0.018 + 0.002 * k)) ** 2))
    # Ribs fade out smoothly at the chest wall, the spine and the abdomen.
    lateral = np.clip((1.08 - np.abs(x)) / 0.12, 0.0, 1.0) * np.clip((np.abs(x) - 0.05) / 0.05, 0.0, 1.0)
    caudal = np.clip((1.1 - y) / 0.12, 0.0, 1.0)
    att += 0.09 * np.clip(rib_field, 0, 1.2) * lateral * caudal

    # Clavicles: slanted bars across the apices.
    for s in (-1.0, 1.0):
        t = np.clip((s * x - 0.1) / 0.7, 0.0, 1.0)
        centre = -0.02 - 0.08 * t
        clav = np.exp(-(((y - centre) / 0.025) ** 2)) * (s * x > 0.1) * (s * x < 0.85)
        att += 0.12 * clav

    # Pneumonia-like patchy opacities, confined to the lungs.
    if a.opacities:
        patch = np.zeros(shape, dtype=np.float32)
        texture = np.clip(0.6 + 0.5 * _smooth_noise(rng, shape, 0.015 * px_per_unit), 0, 1.5)
        for ox, oy, sigma, amp in a.opacities:
            patch += amp * np.exp(-(((x - ox) ** 2 + (y - oy) ** 2) / (2 * sigma**2)))
        att += np.clip(patch, 0, 0.45) * texture * lungs

    # Nodules and cavities: well-defined, untextured, confined to the lungs.
    if a.nodules:
        att += _nodule_field(a, x, y) * lungs

    att = ndimage.gaussian_filter(att, 0.0015 * px_per_unit)
    return np.clip(att, 0.0, 1.0).astype(np.float32)


def upsample(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float image (PIL 'F' mode keeps full precision)."""
    if image.shape == (height, width):
        return image
    return np.asarray(Image.fromarray(image.astype(np.float32)).resize((width, height), Image.BILINEAR))


def render(a: Anatomy, height: int, width: int, work_side: int = 512) -> np.ndarray:
    """Attenuation at full size: rendered at a working size, then upsampled
    (fine detail at 4k pixels adds nothing but time; noise is added later)."""
    scale = min(1.0, work_side / max(height, width))
    wh, ww = max(32, round(height * scale)), max(32, round(width * scale))
    return upsample(render_attenuation(a, wh, ww), height, width)
