"""A phantom patient (`phantom.Anatomy`) as a radiograph: line integrals, then the acquisition.

Rendering happens in the line-integral domain, as an X-ray does (`shared/notes/phantom-realism.md`):

  L(x, y) = soft tissue (body, habitus, power-law background, breasts, arms)
            - lung air (a thickness that tapers to zero at the lung's outline, reduced but not
              zero behind the heart, the mediastinum and in the recesses below the dome)
            + fluid replacing that air (pneumonia, confounders, seed 004's findings), vessels
            + bone (posterior ribs with a bright cortex, fainter anterior ribs, clavicles,
              scapulae, spine) + devices and lead markers
  primary = exp(-L) with a heel-effect gradient; + scatter (a wide blur of the primary times a
  scatter-to-primary ratio); Poisson quanta (Gaussian approximation) at a rate chosen so that
  the noise survives the area downsampling to the training size; detector blur, which
  correlates it. The result is the log signal v = -ln(detected) ("density": high = dense),
  which each source's transfer (`acquisition.py`: windowing, processing, a display or film
  curve) turns into stored pixels.

Everything is drawn at a working size (at most 512 pixels on the long side: finer detail at 4k
pixels adds nothing the training size keeps, and costs time); the image is upsampled after.
Amplitudes follow `difficulty.ImageRealism`; at level 0 the picture is the old, easy look (air
exactly inside the mask, faint ribs, no noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import fft, ndimage

from multimix.data import phantom
from multimix.data.difficulty import ImageRealism, image_realism
from multimix.data.phantom import Anatomy, Frame

WORK_SIDE = 512
SOFT_ADULT, SOFT_CHILD = 4.0, 2.8  # soft-tissue line integral through the chest's middle
AIR_SHARE = 0.55                   # share of it a full lung's air removes
NODULE_SCALE = 2.0                 # line integral at a nodule's centre per unit amplitude
MARKER = 3.0                       # a lead letter
DEVICE = 1.6                       # a wire or a tube's radio-opaque stripe


@dataclass(frozen=True)
class Acquisition:
    """How one image was taken: drawn per image by the source (`synth.py`), never from its label."""

    scatter: float = 0.0          # scatter-to-primary scale (x realism.scatter)
    photons: float = 1.0          # quanta scale (x realism.photons)
    heel: float = 0.0             # exposure gradient from top to bottom (share)
    tilt_gradient: float = 0.0    # and from side to side (tube and grid alignment)
    nonuniformity: float = 0.0    # low-frequency exposure field (scatter, processing), log units
    field_seed: int = 0
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # top, bottom, left, right insets
    marker: tuple[str, int, float] = ("", 0, 0.0)  # letter, corner (0 top-left, 1 top-right), height share
    # devices in the thorax frame: polylines [(x, y), ...] with a radius (thorax y units) and a
    # kind (0 wire, 1 tube), and electrodes (x, y, radius)
    lines: tuple[tuple[tuple[tuple[float, float], ...], float, int], ...] = ()
    electrodes: tuple[tuple[float, float, float], ...] = ()


@dataclass
class Chest:
    """A patient's line integrals on a working grid, with what later layers need."""

    frame: Frame
    x: np.ndarray
    y: np.ndarray
    L: np.ndarray            # line integral so far
    air_depth: np.ndarray    # the line integral the lungs' air removed (>= 0)
    extras: dict = field(default_factory=dict)

    def fill(self, share: np.ndarray) -> None:
        """Fluid replacing a share (0..1) of the lungs' air."""
        self.L += self.air_depth * np.clip(share, 0.0, 1.0)


# ------------------------------------------------------------------ blurring
FFT_MIN_RADIUS = 40  # kernels at least this wide (pixels each side) are applied by FFT


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """`ndimage.gaussian_filter(image, sigma)` (mode "reflect", truncated at 4 sigma), applied by
    FFT where the kernel is wide and the image float32.

    The wide blurs of a source's processing (sigma = 12 % of the image) cost a direct filter a
    thousand multiply-adds per pixel and axis. This applies the same truncated kernel to the
    same mirrored lines, axis by axis, in float64 (as ndimage accumulates), rounding to float32
    after each axis (as ndimage stores it): the sums differ from ndimage's in the last bits of a
    double, far below a float32's last bit, so the stored values are ndimage's: only a sum within
    a double's last bits of a float32 rounding tie could round the other way, and none did in the
    tests or in the default's phantoms, whose files are byte for byte those of the direct filter
    (tests/test_phantoms.py compares; `bench/phantoms.py` times both). A float64 image would keep
    those last bits: it goes to ndimage."""
    radius = int(4.0 * float(sigma) + 0.5)  # ndimage's truncation
    if image.dtype != np.float32 or radius < FFT_MIN_RADIUS or radius >= min(image.shape):
        return ndimage.gaussian_filter(image, sigma)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / (float(sigma) * float(sigma)) * offsets ** 2)
    kernel /= kernel.sum()
    out = image
    for axis in range(image.ndim):
        lines = np.moveaxis(out, axis, -1).astype(np.float64)
        n = lines.shape[-1]
        # "reflect" in ndimage's sense (d c b a | a b c d | d c b a) is numpy's "symmetric"
        padded = np.pad(lines, [(0, 0)] * (lines.ndim - 1) + [(radius, radius)], mode="symmetric")
        size = fft.next_fast_len(padded.shape[-1] + 2 * radius, real=True)
        full = fft.irfft(fft.rfft(padded, size, axis=-1) * fft.rfft(kernel, size), size, axis=-1)
        out = np.moveaxis(full[..., 2 * radius:2 * radius + n], -1, axis).astype(image.dtype)
    return out


# ------------------------------------------------------------------ small drawing helpers
def _ramp(distance, width):
    """0 outside, 1 inside, linear over `width` around a signed distance (positive inside)."""
    return np.clip(0.5 + distance / np.maximum(width, 1e-6), 0.0, 1.0)


def power_law(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with power spectrum P(f) ~ f^-beta (anatomical background:
    beta 1.5-3.5, Burgess et al. 2007)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0 / max(h, w)
    spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) * f ** (-beta / 2)
    spectrum[0, 0] = 0.0
    out = np.fft.irfft2(spectrum, s=shape)
    return (out / (out.std() + 1e-12)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    out = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return out / (out.std() + 1e-6)


def draw_tubes(shape: tuple[int, int], groups, hollow: float = 0.0) -> np.ndarray:
    """Projected thickness (pixels) of tubes: each group is a list of segments
    ((row, col, radius), (row, col, radius)); a cylinder of radius R projects 2 sqrt(R^2 - d^2),
    and `hollow` (0..1) removes a core of radius hollow * R, so a cortex shows as two bright
    edges. Within a group (a polyline, a vessel tree) segments take the maximum, so joints are
    not counted twice; groups add."""
    h, w = shape
    total = np.zeros(shape, dtype=np.float32)
    for segments in groups:
        group = np.zeros(shape, dtype=np.float32)
        touched = False
        for (r0, c0, R0), (r1, c1, R1) in segments:
            R = max(R0, R1) + 1.0
            top, bottom = int(max(0, np.floor(min(r0, r1) - R))), int(min(h, np.ceil(max(r0, r1) + R) + 1))
            left, right = int(max(0, np.floor(min(c0, c1) - R))), int(min(w, np.ceil(max(c0, c1) + R) + 1))
            if top >= bottom or left >= right:
                continue
            rr = np.arange(top, bottom, dtype=np.float32)[:, None]
            cc = np.arange(left, right, dtype=np.float32)[None, :]
            dr, dc = r1 - r0, c1 - c0
            t = np.clip(((rr - r0) * dr + (cc - c0) * dc) / max(dr * dr + dc * dc, 1e-9), 0.0, 1.0)
            d2 = (rr - r0 - t * dr) ** 2 + (cc - c0 - t * dc) ** 2
            radius = np.maximum(R0 + t * (R1 - R0), 0.35)  # at least a third of a pixel: still seen
            thick = 2.0 * np.sqrt(np.maximum(radius ** 2 - d2, 0.0))
            if hollow > 0:
                thick -= 2.0 * np.sqrt(np.maximum((hollow * radius) ** 2 - d2, 0.0))
            np.maximum(group[top:bottom, left:right], thick, out=group[top:bottom, left:right])
            touched = True
        if touched:
            total += group
    return total


def polyline(points) -> list:
    """Consecutive points (x, y, radius) as one group of segments."""
    return list(zip(points[:-1], points[1:]))


# ------------------------------------------------------------------ anatomy layers
def _body(a: Anatomy, x, y) -> np.ndarray:
    """Soft-tissue thickness share (0..1): an elliptic body, narrowing to the neck above the
    shoulders; arms beside the body or raised (wide paediatric fields)."""
    shoulder = np.clip((y + 0.45) / 0.3, 0.0, 1.0)
    shoulder = shoulder * shoulder * (3 - 2 * shoulder)
    width = 0.34 + (a.body_width * 1.03 - 0.34) * shoulder
    # a rounded box rather than an ellipse: the chest wall beside the lungs is thick
    body = np.sqrt(np.clip(1.0 - (x / width) ** 4, 0.0, 1.0)) * (0.55 + 0.45 * shoulder)
    if a.arms:
        for s in (-1.0, 1.0):
            if a.arms == 1:  # beside the body, from the shoulder down
                cx = s * (a.body_width + 0.22)
                d = (x - cx) / 0.24
                reach = np.clip((y + 0.2) / 0.1, 0.0, 1.0)
            else:  # raised beside the head, leaning out
                cx = s * (a.body_width * 0.8 + 0.25 * np.clip(-y - 0.2, 0.0, None))
                d = (x - cx) / 0.2
                reach = np.clip((-y - 0.15) / 0.1, 0.0, 1.0)
            body = np.maximum(body, 0.6 * np.sqrt(np.clip(1.0 - d ** 2, 0.0, 1.0)) * reach)
    return body


def _lung_air(a: Anatomy, frame: Frame, x, y, realism: ImageRealism) -> np.ndarray:
    """Air thickness share (0..1) of both lungs: a profile (1 - q^2)^edge_power that reaches zero
    at the outline; inside the SCR mask it is full, behind the heart, the mediastinum and below
    the dome it keeps the realism's shares."""
    edge = 1.5 / frame.px_per_unit  # a pixel and a half, in thorax units
    air = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    for side in (0, 1):
        radius, bound = phantom._lung_polar(a, side, x, y)
        q = radius / bound
        outline = _ramp((1.0 - q) * a.lung_rx[side], edge)
        profile = outline * np.clip(1.0 - q * q, 1e-6, 1.0) ** (realism.edge_power * a.lung_profile)
        sx = (-1.0 if side == 0 else 1.0) * x
        below = y - phantom.dome_line(a, side, sx)
        above = _ramp(-below, edge)
        recess = above + (1.0 - above) * realism.recess_air * np.exp(-np.maximum(below, 0.0)
                                                                     / max(realism.recess_depth, 1e-3))
        medial = sx - phantom.mediastinal_half_width(a, y)
        lateral = _ramp(medial, edge)
        depth = 1.0 if side == 0 else 0.92  # the heart takes room from the left lung
        air += depth * profile * recess * lateral
    # What stands in front of or between the lungs keeps only a share of their air: the
    # mediastinum (and aortic knob), and the heart, its border blurred by motion. The smaller share
    # wins where they overlap, so the heart draws no edge inside the mediastinum.
    hx, hy, hrx, hry = a.heart
    heart = _ramp((1.0 - phantom.heart_radius(a, x, y)) * hrx, max(edge, realism.heart_motion))
    kx, ky, kr = a.aortic_knob
    knob = _ramp(kr - np.sqrt((x - kx) ** 2 + ((y - ky) / 1.2) ** 2), edge) * (x > 0)
    medial = np.maximum(_ramp(phantom.mediastinal_half_width(a, y) - np.abs(x), edge), knob)
    keep = np.minimum(1.0 - (1.0 - realism.retrocardiac_air) * heart, 1.0 - (1.0 - realism.mediastinal_air) * medial)
    return air * keep


def _vessel_tree(rng: np.random.Generator, a: Anatomy, side: int, scale: float) -> list:
    """A branching vessel tree from one hilum, as one group of thorax-frame segments: dichotomous
    branches, each 0.7-0.85 as long and 0.7-0.85 as thick as its parent, until they thin out or
    leave the lung's outline (behind the heart and below the dome included)."""
    s = -1.0 if side == 0 else 1.0
    ratio = a.half_width / a.height  # y units per x unit (for an image about as wide as high)
    hy = 0.42 + rng.uniform(-0.04, 0.04)
    hx = s * (phantom.mediastinal_half_width(a, hy) + 0.04)
    segments = []
    stack = [(hx, hy, float(angle), rng.uniform(0.1, 0.14), 0.018 * scale, 0)
             for angle in np.radians(np.linspace(-100, 110, 6) + rng.uniform(-10, 10, 6))]
    while stack:
        x0, y0, angle, length, radius, depth = stack.pop()
        # angle 0 = lateral; positive = downwards
        x1 = x0 + s * np.cos(angle) * length / ratio
        y1 = y0 + np.sin(angle) * length
        r1 = radius * 0.85
        segments.append(((x0, y0, radius), (x1, y1, r1)))
        rad, bound = phantom._lung_polar(a, side, np.float32(x1), np.float32(y1))
        if depth >= 6 or radius < 0.003 or rad > bound * 1.02:
            continue
        for turn in (-1.0, 1.0):
            stack.append((x1, y1, angle + turn * np.radians(rng.uniform(15, 35)), length * rng.uniform(0.7, 0.85),
                          r1 * rng.uniform(0.72, 0.85), depth + 1))
    return [segments]


def _tubes_from_frame(frame: Frame, groups, hollow: float = 0.0) -> np.ndarray:
    """Thickness (in thorax y units) of groups of segments given in thorax-frame (x, y, radius_y)."""
    px_per_y = frame.height * frame.a.height

    def pixel(point):
        x, y, r = point
        return (*frame.to_pixels(x, y), r * px_per_y)

    pix = [[(pixel(p), pixel(q)) for p, q in group] for group in groups]
    return draw_tubes((frame.height, frame.width), pix, hollow) / px_per_y


def _ribs(a: Anatomy, frame: Frame, realism: ImageRealism, rng) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ribs (near the detector: sharp, with a cortex) and anterior ribs (fainter,
    blurred), as bone thickness normalised to 1 at a solid rib's centre."""
    posterior, anterior = [], []
    spine = a.midline_shift
    for side in (-1.0, 1.0):
        for k in range(12):
            jitter = rng.uniform(-0.01, 0.01)
            radius = 0.017 + 0.0018 * k
            y0 = -0.07 + k * a.rib_spacing + jitter
            # the lowest ribs are shorter (the floating ribs 11 and 12)
            sxs = np.linspace(0.06, 1.1 * (1.0 if k < 9 else (0.75, 0.5, 0.3)[k - 9]), 14)
            ys = y0 + a.rib_slope * (sxs - 0.1) ** 2 - 0.04 * sxs
            posterior.append(polyline([(spine + side * sx, yy, radius) for sx, yy in zip(sxs, ys)]))
            if k < 9:
                y_lat = ys[-2] - 0.02
                drop = rng.uniform(0.26, 0.38)
                sxa = np.linspace(1.05, 0.28, 10)
                ya = y_lat + drop * np.clip(1.0 - sxa, 0.0, None) ** 1.15
                anterior.append(polyline([(side * sx, yy, radius * 1.15) for sx, yy in zip(sxa, ya)]))
    post = _tubes_from_frame(frame, posterior, hollow=0.45 * realism.rib_cortex)
    ant = _tubes_from_frame(frame, anterior, hollow=0.3 * realism.rib_cortex)
    ant = ndimage.gaussian_filter(ant, 1.5)
    # normalise: a solid rib of radius R projects 2R at its centre
    return post / 0.036, ant / 0.04


def _clavicles(a: Anatomy, frame: Frame, realism: ImageRealism, rng) -> np.ndarray:
    lines = []
    for s in (-1.0, 1.0):
        t = np.linspace(0.0, 1.0, 12)
        y0, y1 = rng.uniform(-0.07, -0.02), rng.uniform(-0.2, -0.12)
        sx = 0.1 + 0.78 * t
        yy = y0 + (y1 - y0) * t + 0.025 * np.sin(2 * np.pi * t)
        radius = rng.uniform(0.02, 0.028)
        lines.append(polyline([(a.midline_shift + s * x, y, radius) for x, y in zip(sx, yy)]))
    return _tubes_from_frame(frame, lines, hollow=0.45 * realism.rib_cortex) / 0.05


def _scapulae(x, y, rng) -> np.ndarray:
    """Thin triangular plates over the lateral upper lungs, with a thicker lateral border."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    for side in (0, 1):
        sx = (-1.0 if side == 0 else 1.0) * x
        shift = rng.uniform(0.0, 0.18)
        p = np.array([[0.7 + shift, -0.14], [0.84 + shift, 0.5], [1.1 + shift, -0.06]])  # superior, inferior, glenoid
        inside, rim = np.ones_like(out), 0.0
        for i in range(3):
            (x0, y0), (x1, y1) = p[i], p[(i + 1) % 3]
            cx, cy = p[(i + 2) % 3]
            nx, ny = y1 - y0, -(x1 - x0)
            norm = np.hypot(nx, ny)
            sign = np.sign(nx * (cx - x0) + ny * (cy - y0))
            dist = sign * (nx * (sx - x0) + ny * (y - y0)) / norm
            inside *= _ramp(dist, 0.01)
            if i == 1:  # the lateral border (inferior angle -> glenoid) is thick
                rim = np.exp(-((dist - 0.02) / 0.018) ** 2)
        out += inside * (0.45 + 0.9 * rim)
    return out


def _spine(a: Anatomy, x, y) -> np.ndarray:
    """Vertebral bodies with endplates and pedicles down the midline."""
    yy = np.clip(y, -0.5, 1.4)
    height = 0.075 + 0.02 * np.clip(yy, 0.0, 1.3)
    half = 0.065 + 0.03 * np.clip(yy, 0.0, 1.3)
    phase = (yy + 0.5) / height
    frac = phase - np.floor(phase)
    body = np.clip(np.minimum(frac, 0.86 - frac) / 0.05, 0.0, 1.0)  # disc spaces between bodies
    endplates = np.exp(-((frac - 0.03) / 0.04) ** 2) + np.exp(-((frac - 0.83) / 0.04) ** 2)
    dx = (x - a.midline_shift) / half
    column = np.sqrt(np.clip(1.0 - dx ** 2, 0.0, 1.0))
    pedicles = np.exp(-(((np.abs(dx) - 0.72) / 0.18) ** 2) - ((frac - 0.3) / 0.17) ** 2)
    return (column * (0.6 * body + 0.4 * endplates) + 0.5 * pedicles) * (y > -0.6)


def _mediastinal_detail(a: Anatomy, frame: Frame, x, y, rng) -> np.ndarray:
    """Air outside the lungs (negative): the trachea and main bronchi, the gastric bubble."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    carina = 0.28 + rng.uniform(-0.03, 0.03)
    tx = 0.5 * a.midline_shift
    trachea = np.sqrt(np.clip(1.0 - ((x - tx) / 0.055) ** 2, 0.0, 1.0)) * _ramp(carina - y, 0.01)
    out -= 0.8 * trachea
    lines = []
    for s in (-1.0, 1.0):
        angle = np.radians(rng.uniform(30, 45))
        lines.append(polyline([(tx, carina, 0.018), (tx + s * np.sin(angle) * 0.2, carina + np.cos(angle) * 0.12, 0.013)]))
    out -= 0.6 * _tubes_from_frame(frame, lines) / 0.036
    sx0, dy, rx, ry = a.gastric_bubble
    by = phantom.dome_line(a, 1, sx0) + dy
    bubble = np.clip(1.0 - ((x - sx0) / rx) ** 2 - ((y - by) / ry) ** 2, 0.0, 1.0) ** 0.5
    out -= 0.7 * bubble * (y < by + 0.3 * ry)  # the fluid level below
    return out


def _breasts(a: Anatomy, x, y) -> np.ndarray:
    amp, cy, radius = a.breasts
    if amp <= 0:
        return np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    out = 0.0
    for s in (-1.0, 1.0):
        rho2 = ((x - s * 0.55) / radius) ** 2 + ((y - cy) / (0.75 * radius)) ** 2
        fade = np.clip((y - (cy - 0.75 * radius)) / (0.75 * radius), 0.0, 1.0)  # into the chest wall above
        out = out + np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0)) * fade
    return amp * out


# ------------------------------------------------------------------ disease and confounders
def _fill_share(chest: Chest, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Share of the lungs' air replaced by fluid: pneumonia's patterns and confounder bands."""
    x, y, frame = chest.x, chest.y, chest.frame
    shape = chest.L.shape
    px = frame.px_per_unit
    fill = np.zeros(shape, dtype=np.float32)
    if a.opacities:
        texture = np.clip(0.75 + 0.45 * _smooth_noise(rng, shape, 0.012 * px), 0.15, 1.4)
        patch = np.zeros(shape, dtype=np.float32)
        for ox, oy, sigma, amount in a.opacities:
            patch += amount * np.exp(-(((x - ox) ** 2 + (y - oy) ** 2) / (2 * sigma ** 2)))
        fill += np.clip(patch, 0.0, 0.95) * texture
    if a.consolidations:
        for (side, sx0, y0, rx, ry, angle, amount), (_, radius, dv) in zip(
                a.consolidations, phantom._consolidation_envelope(a, x, y)):
            width = np.where(dv < 0, 0.04, 0.22)  # a fissure bounds its upper side sharply
            region = _ramp(1.0 - radius, width)
            bronchi = _tubes_from_frame(frame, _bronchogram(rng, a, side, sx0, y0, rx, ry))
            air_bronchogram = np.clip(bronchi / 0.01, 0.0, 1.0)
            texture = np.clip(0.9 + 0.15 * _smooth_noise(rng, shape, 0.01 * px), 0.6, 1.1)
            fill += amount * region * texture * (1.0 - 0.75 * air_bronchogram)
    if a.haze[0] > 0:
        reticular = np.clip(0.55 + 0.6 * _smooth_noise(rng, shape, 0.004 * px), 0.0, 1.5)
        fill += a.haze[0] * phantom.haze_field(a, x, y) * reticular
    for kind, *values in a.confounders:
        if kind == "band":  # plate atelectasis: a thin linear density in a lower zone
            side, y0, slope, half, sx0, amount = values
            sx = (-1.0 if side == 0 else 1.0) * x
            d = np.abs(y - (y0 + slope * (sx - sx0)))
            fill += amount * _ramp(half - d, 0.006) * _ramp(0.22 - np.abs(sx - sx0), 0.05)
    return np.clip(fill, 0.0, 0.97)


def _bronchogram(rng, a: Anatomy, side: int, sx0, y0, rx, ry):
    """A few air-filled bronchi inside a consolidation (a short branching tree)."""
    s = -1.0 if side == 0 else 1.0
    lines, stack = [], [(s * (sx0 - 0.5 * rx), y0 - 0.2 * ry, rng.uniform(-0.5, 0.5), 0.6 * rx, 0.006, 0)]
    while stack:
        x0, y0_, angle, length, radius, depth = stack.pop()
        x1, y1 = x0 + s * np.cos(angle) * length, y0_ + np.sin(angle) * length * 0.6
        lines.append(((x0, y0_, radius), (x1, y1, radius * 0.8)))
        if depth < 2:
            for turn in (-1.0, 1.0):
                stack.append((x1, y1, angle + turn * rng.uniform(0.3, 0.6), length * 0.6, radius * 0.8, depth + 1))
    return [lines]


def _confounder_density(a: Anatomy, x, y) -> tuple[np.ndarray, np.ndarray]:
    """(added line integral, air share taken) of the confounders that are not air fills."""
    add = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    take = np.zeros_like(add)
    for kind, *values in a.confounders:
        if kind == "thymus":  # the sail: soft tissue beside the upper mediastinum
            side, size, amount = values
            sx = (-1.0 if side == 0 else 1.0) * x
            med = phantom.mediastinal_half_width(a, y)
            reach = size * np.clip((0.5 - y) / 0.4, 0.0, 1.0) * (y > 0.02)
            take = np.maximum(take, amount * _ramp(med + reach - sx, 0.02) * (sx > 0))
        elif kind == "nipples":
            sx0, y0, radius, amount = values
            for s in (-1.0, 1.0):
                add += amount * np.sqrt(np.clip(1.0 - ((x - s * sx0) ** 2 + (y - y0) ** 2) / radius ** 2, 0.0, 1.0))
        elif kind == "skinfold":  # an edge (not a line) across a lateral lung
            side, sx0, y0, length = values
            sx = (-1.0 if side == 0 else 1.0) * x
            curve = sx0 - 0.15 * ((y - y0 - 0.5 * length) / length) ** 2
            add += 0.12 * _ramp(curve - sx, 0.004) * _ramp(0.5 * length - np.abs(y - y0 - 0.5 * length), 0.03)
    return add, take


def _nodules(a: Anatomy, x, y) -> np.ndarray:
    """Spheres of soft tissue (2 sqrt(r^2 - d^2) / r, so 2 at the centre); a cavity: a wall
    ring around an air-filled centre (negative)."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    for nx, ny, r, amp, cavity in a.nodules:
        d2 = (x - nx) ** 2 + (y - ny) ** 2
        sphere = np.sqrt(np.maximum(1.0 - d2 / r ** 2, 0.0))
        if cavity:
            inner = np.sqrt(np.maximum(1.0 - d2 / (0.55 * r) ** 2, 0.0))
            sphere = sphere - 1.6 * inner
        out += NODULE_SCALE * amp * sphere
    return out


# ------------------------------------------------------------------ the chest and the exposure
def chest(a: Anatomy, height: int, width: int, realism: ImageRealism | None = None,
          devices: Acquisition | None = None) -> Chest:
    """A patient's line integrals on a height x width (working) grid."""
    r = realism or image_realism(0.0)
    rng = np.random.default_rng(a.texture_seed)
    frame = Frame(a, height, width)
    x, y = frame.coords()
    shape = (height, width)
    soft = (SOFT_CHILD if a.pediatric else SOFT_ADULT) * a.body_density
    body = _body(a, x, y)
    background = power_law(rng, shape, 3.0)
    L = soft * body * (1.0 + r.background * background)
    L = L + soft * 0.25 * _ramp(y - np.maximum(phantom.dome_line(a, 0, np.abs(x)), 0.0), 0.05) * body  # abdomen
    L = L + a.fat * np.sqrt(np.clip(body, 0.0, 1.0))  # subcutaneous fat: over everything, no air to offset it
    L = L + a.shoulders * np.exp(-((y + 0.06) / 0.12) ** 2) * np.clip((np.abs(x) - 0.15) / 0.4, 0.0, 1.0) * body
    air = _lung_air(a, frame, x, y, r)
    add, take = _confounder_density(a, x, y)
    air = air * (1.0 - take)
    texture = power_law(rng, shape, 2.6)
    air_depth = soft * AIR_SHARE * air * np.clip(1.0 + r.lung_texture * texture, 0.5, 1.5)
    L = L - air_depth + add
    out = Chest(frame, x, y, L.astype(np.float32), air_depth.astype(np.float32))
    # vessels replace air along the trees from the hila (prominent hila: thicker roots)
    hila = next((v[0] for k, *v in a.confounders if k == "hila"), 1.0)
    trees = _vessel_tree(rng, a, 0, hila) + _vessel_tree(rng, a, 1, hila)
    vessels = _tubes_from_frame(frame, trees)
    presence = np.clip(air / 0.3, 0.0, 1.0)
    out.extras["vessels"] = r.vessels / 0.032 * vessels * presence * soft / SOFT_ADULT
    out.L += out.extras["vessels"]
    post, ant = _ribs(a, frame, r, rng)
    bone = r.posterior_ribs * post + r.anterior_ribs * ant
    bone += r.clavicles * _clavicles(a, frame, r, rng)
    bone += r.scapulae * _scapulae(x, y, rng)
    bone += r.spine * _spine(a, x, y)
    out.L += bone * (soft / SOFT_ADULT)
    out.L += r.mediastinal_detail * _mediastinal_detail(a, frame, x, y, rng)
    out.L += _breasts(a, x, y)
    # disease: fluid replacing air, nodules and cavities
    out.fill(_fill_share(out, a, rng))
    out.L += _nodules(a, x, y)
    if devices is not None:
        out.L += DEVICE * device_thickness(frame, devices)
    np.maximum(out.L, 0.0, out=out.L)
    return out


def device_thickness(frame: Frame, acq: Acquisition) -> np.ndarray:
    """Wires, tubes (a radio-opaque stripe) and ECG electrodes (a ring with a bright snap), in
    pixels of the grid, normalised to about 1 at a wire's centre."""
    px_per_y = frame.height * frame.a.height
    groups = [polyline([(*frame.to_pixels(x, y), max(radius * px_per_y, 0.5)) for x, y in points])
              for points, radius, _ in acq.lines]
    out = draw_tubes((frame.height, frame.width), groups) / 2.0
    for ex, ey, er in acq.electrodes:
        r0, c0 = frame.to_pixels(ex, ey)
        rr = np.arange(frame.height)[:, None] - r0
        cc = np.arange(frame.width)[None, :] - c0
        d = np.sqrt(rr ** 2 + cc ** 2) / max(er * px_per_y, 1.0)
        out += 0.35 * (d <= 1.0) + 1.2 * (d <= 0.3)
    return out


def _marker(shape: tuple[int, int], letter: str, corner: int, size: float) -> np.ndarray:
    """A lead letter (L or R) near a top corner, as a 5 x 7 block glyph."""
    glyphs = {
        "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
        "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    }
    h, w = shape
    out = np.zeros(shape, dtype=np.float32)
    if not letter:
        return out
    cell = max(1, int(round(size * h / 7)))
    bitmap = np.array([[c == "1" for c in row] for row in glyphs[letter]], dtype=np.float32)
    glyph = np.kron(bitmap, np.ones((cell, cell), dtype=np.float32))
    gh, gw = glyph.shape
    top = int(0.04 * h)
    left = int(0.05 * w) if corner == 0 else w - int(0.05 * w) - gw
    if top + gh <= h and 0 <= left and left + gw <= w:
        out[top:top + gh, left:left + gw] = glyph
    return ndimage.gaussian_filter(out, 0.6)


def collimated(shape: tuple[int, int], acq: Acquisition) -> np.ndarray:
    """Pixels outside the collimator's field."""
    h, w = shape
    top, bottom, left, right = acq.collimation
    r = np.arange(h)[:, None] / h
    c = np.arange(w)[None, :] / w
    return (r < top) | (r > 1 - bottom) | (c < left) | (c > 1 - right)


def expose(L: np.ndarray, acq: Acquisition, realism: ImageRealism, rng: np.random.Generator) -> np.ndarray:
    """Line integrals -> log detected signal v = -ln(primary + scatter + noise), after blur."""
    h, w = L.shape
    L = L.copy()
    L += MARKER * _marker(L.shape, *acq.marker)
    if any(acq.collimation):  # outside the collimator nothing reaches the detector but scatter
        L = np.where(collimated((h, w), acq), L + 5.0, L)
    rows = np.arange(h, dtype=np.float32)[:, None] / h - 0.5
    cols = np.arange(w, dtype=np.float32)[None, :] / w - 0.5
    primary = np.exp(-L) * (1.0 + acq.heel * rows) * (1.0 + acq.tilt_gradient * cols)
    if acq.nonuniformity > 0:  # a smooth multiplicative field, P(f) ~ f^-4
        primary = primary * np.exp(acq.nonuniformity * power_law(np.random.default_rng(acq.field_seed), (h, w), 4.0))
    signal = primary
    spr = acq.scatter * realism.scatter
    if spr > 0:  # scatter: a wide blur of the primary (about a tenth of the field)
        small = ndimage.zoom(primary, 0.125, order=1)
        wide = ndimage.gaussian_filter(small, 0.12 * max(small.shape), mode="nearest")
        signal = primary + spr * np.asarray(Image.fromarray(wide.astype(np.float32)).resize((w, h), Image.BILINEAR))
    photons = realism.photons * acq.photons * (WORK_SIDE / max(h, w)) ** 2
    if np.isfinite(photons):
        signal = signal + np.sqrt(np.maximum(signal, 1e-6) / photons) * rng.standard_normal((h, w), dtype=np.float32)
    signal = ndimage.gaussian_filter(np.maximum(signal, 1e-4), realism.detector_blur)
    return (-np.log(signal)).astype(np.float32)


def work_size(height: int, width: int, side: int = WORK_SIDE) -> tuple[int, int]:
    scale = min(1.0, side / max(height, width))
    return max(32, round(height * scale)), max(32, round(width * scale))


def upsample(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float image (PIL 'F' mode keeps full precision)."""
    if image.shape == (height, width):
        return image
    return np.asarray(Image.fromarray(image.astype(np.float32)).resize((width, height), Image.BILINEAR))
