"""Weak and strong augmentation as batched tensor operations.

Everything runs on the training device on whole batches (B, 1, H, W) in
[0, 1]; every random choice is drawn per image from a `torch.Generator`, so
a seed reproduces the exact augmented batch.

weak (WAug, section 3.2): horizontal flip (p = 0.5) and a random crop with
  32-pixel reflect padding, i.e. an integer shift in [-32, 32] per axis. Both
  are one affine warp per image; masks, when given, follow the same warp.

strong (GAug): per image, a random number (1..max_ops) of distinct ops drawn
  from the paper's pool — flip, crop, autocontrast, brightness, contrast,
  equalize, identity, posterize, rotate (±30°), sharpness, shearX/Y (±0.3),
  solarize, translateX/Y (±30%) — each with a magnitude drawn uniformly per
  image. Geometric ops are composed into one affine warp; intensity ops are
  computed for the whole batch and applied where selected.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

POOL = (
    "flip", "crop", "autocontrast", "brightness", "contrast", "equalize", "identity", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)
GEOMETRIC = {"flip", "crop", "rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
CROP_PAD = 32


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=gen.device).to(device)


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=False)


def _identity_theta(n: int, device) -> torch.Tensor:
    return torch.eye(2, 3, device=device).repeat(n, 1, 1)


def _flip_shift_theta(gen, n, h, w, device, flip_on: torch.Tensor | None = None,
                      shift_on: torch.Tensor | None = None) -> torch.Tensor:
    """Affine matrices (normalised coordinates) for a random flip and an
    integer crop shift; `flip_on` / `shift_on` restrict them to some images."""
    theta = _identity_theta(n, device)
    flip = torch.rand(n, generator=gen, device=gen.device).to(device) < 0.5
    shift = torch.randint(-CROP_PAD, CROP_PAD + 1, (n, 2), generator=gen, device=gen.device).to(device).float()
    if flip_on is not None:
        flip &= flip_on
    if shift_on is not None:
        shift = shift * shift_on[:, None]
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    theta[:, 0, 2] = 2 * shift[:, 0] / w  # a shift of k pixels is 2k/W in normalised units
    theta[:, 1, 2] = 2 * shift[:, 1] / h
    return theta


def weak(x: torch.Tensor, gen: torch.Generator, mask: torch.Tensor | None = None):
    """Flip + reflect-padded random crop; returns x (and the mask warped alike)."""
    n, _, h, w = x.shape
    theta = _flip_shift_theta(gen, n, h, w, x.device)
    out = _warp(x, theta)
    if mask is None:
        return out
    return out, (_warp(mask, theta, mode="nearest") > 0.5).to(mask.dtype)


# ------------------------------------------------------------------ intensity ops (batched)
def autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)


def equalize(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per-image histogram equalisation, all images in one bincount."""
    n = x.shape[0]
    q = (x.clamp(0, 1) * (bins - 1)).round().long().flatten(1)
    offsets = torch.arange(n, device=x.device)[:, None] * bins
    hist = torch.bincount((q + offsets).flatten(), minlength=n * bins).view(n, bins).float()
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    total = cdf[:, -1:]
    lut = ((cdf - cdf_min) / (total - cdf_min).clamp_min(1)).clamp(0, 1)
    return torch.gather(lut, 1, q).view_as(x).to(x.dtype)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    levels = (2.0 ** bits).view(-1, 1, 1, 1)
    return torch.floor(x * (levels - 1) + 0.5) / (levels - 1)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.view(1, 1, 3, 3))
    return (smooth + factor.view(-1, 1, 1, 1) * (x - smooth)).clamp(0, 1)


def strong(x: torch.Tensor, gen: torch.Generator, max_ops: int = 3) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    # Choose 1..max_ops distinct ops per image: rank random scores, keep the top k.
    k = torch.randint(1, max_ops + 1, (n,), generator=gen, device=gen.device).to(dev)
    scores = torch.rand(n, len(POOL), generator=gen, device=gen.device).to(dev)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    chosen = {op: ranks[:, i] < k for i, op in enumerate(POOL)}

    # Geometric ops: one composed affine warp per image.
    theta = _flip_shift_theta(gen, n, h, w, dev, flip_on=chosen["flip"], shift_on=chosen["crop"])
    angle = _uniform(gen, n, -30.0, 30.0, dev) * math.pi / 180 * chosen["rotate"]
    shear_x = _uniform(gen, n, -0.3, 0.3, dev) * chosen["shear_x"]
    shear_y = _uniform(gen, n, -0.3, 0.3, dev) * chosen["shear_y"]
    tx = _uniform(gen, n, -0.6, 0.6, dev) * chosen["translate_x"]  # ±30% of the width = ±0.6 normalised
    ty = _uniform(gen, n, -0.6, 0.6, dev) * chosen["translate_y"]
    cos, sin = torch.cos(angle), torch.sin(angle)
    extra = torch.zeros(n, 3, 3, device=dev)
    extra[:, 0, 0], extra[:, 0, 1], extra[:, 0, 2] = cos - sin * shear_y, -sin + cos * shear_x, tx
    extra[:, 1, 0], extra[:, 1, 1], extra[:, 1, 2] = sin + cos * shear_y, cos + sin * shear_x, ty
    extra[:, 2, 2] = 1
    full = torch.cat([theta, torch.tensor([0, 0, 1.0], device=dev).expand(n, 1, 3)], dim=1)
    geometric = torch.stack([chosen[op] for op in GEOMETRIC], 1).any(1)
    out = x
    if geometric.any():
        warped = _warp(x, (full @ extra)[:, :2])
        out = torch.where(geometric.view(-1, 1, 1, 1), warped, x)

    def blend(op: str, value: torch.Tensor) -> torch.Tensor:
        return torch.where(chosen[op].view(-1, 1, 1, 1), value, out)

    # Intensity ops, in a fixed order, each where drawn.
    if chosen["autocontrast"].any():
        out = blend("autocontrast", autocontrast(out))
    if chosen["equalize"].any():
        out = blend("equalize", equalize(out))
    if chosen["brightness"].any():
        out = blend("brightness", (out * _uniform(gen, n, 0.5, 1.5, dev).view(-1, 1, 1, 1)).clamp(0, 1))
    if chosen["contrast"].any():
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        f = _uniform(gen, n, 0.5, 1.5, dev).view(-1, 1, 1, 1)
        out = blend("contrast", (mean + f * (out - mean)).clamp(0, 1))
    if chosen["sharpness"].any():
        out = blend("sharpness", sharpness(out, _uniform(gen, n, 0.5, 1.5, dev)))
    if chosen["posterize"].any():
        out = blend("posterize", posterize(out, torch.randint(4, 9, (n,), generator=gen, device=gen.device).to(dev).float()))
    if chosen["solarize"].any():
        threshold = _uniform(gen, n, 0.5, 1.0, dev).view(-1, 1, 1, 1)
        out = blend("solarize", torch.where(out >= threshold, 1 - out, out))
    return out  # "identity" changes nothing by definition
