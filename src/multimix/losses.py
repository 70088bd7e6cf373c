"""Loss terms: MultiMix (paper Eqs. 1, 2 and 5), the segmentation losses of
seed 003 (Imran & Terzopoulos, MLMI 2019, Eqs. 1, 3 and 4) and CheXseg's (seed 004,
Gadgil et al. 2021: class-average Dice, distillation at a sigmoid temperature,
the multi-label classifier's BCE).

    L = CE(c_l, ĉ_l) + λ · L_u^c + α · Dice(s_l, ŝ_l) + β · L_u^s

L_u^c (FixMatch, Eq. 1): cross-entropy of the strongly augmented view
    against the weak view's arg-max pseudo-label, counted only where the weak
    view's confidence is at least t; averaged over the whole unlabelled batch
    (as in FixMatch), so a batch with no confident image contributes 0.

Dice: soft Dice on sigmoid probabilities, 1 - (2Σpg + ε)/(Σp + Σg + ε) per
    image, averaged over the batch.

L_u^s (segmentation consistency, Eq. 2): per-pixel Bernoulli KL divergence
    KL(p̄_l ‖ p_u,i), averaged over pixels and unlabelled images, where p̄_l is
    the pixel-wise mean of the labelled batch's predicted lung probabilities
    (detached: it is the target) and p_u,i the prediction for unlabelled image
    i. Chest radiographs are roughly aligned, so p̄_l is a soft shape prior
    from the labelled data; the term pulls unlabelled predictions towards it.
    It is non-zero whenever the predictions differ and carries gradient into
    the unlabelled branch. (The reference code applied a softmax over a
    single channel, which is identically 1, so its KL was always 0.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def soft_dice_loss(mask_logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(mask_logits.float()).flatten(1)
    g = target.float().flatten(1)
    dice = (2 * (p * g).sum(1) + smooth) / (p.sum(1) + g.sum(1) + smooth)
    return (1 - dice).mean()


def dice_scores(mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Hard Dice per image of the thresholded logits (> 0) against {0, 1} masks; 1 when both are
    empty. A validation score, not a loss (no gradient through the threshold)."""
    pred = (mask_logits > 0).float().flatten(1)
    ref = masks.float().flatten(1)
    denom = pred.sum(1) + ref.sum(1)
    return torch.where(denom > 0, 2 * (pred * ref).sum(1) / denom.clamp_min(1), torch.ones_like(denom))


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Element-wise KL(Bern(p) ‖ Bern(q))."""
    p = p.clamp(EPS, 1 - EPS)
    q = q.clamp(EPS, 1 - EPS)
    return p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())


def segmentation_consistency(labelled_logits: torch.Tensor, unlabelled_logits: torch.Tensor) -> torch.Tensor:
    target = torch.sigmoid(labelled_logits.float()).mean(0, keepdim=True).detach()
    return bernoulli_kl(target, torch.sigmoid(unlabelled_logits.float())).mean()


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float):
    """(loss, acceptance rate, pseudo-labels, mask) for one unlabelled batch."""
    probs = torch.softmax(weak_logits.detach().float(), dim=1)
    confidence, pseudo = probs.max(dim=1)
    accepted = (confidence >= threshold).float()
    per_image = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (per_image * accepted).mean(), accepted.mean(), pseudo, accepted


# ------------------------------------------------------------------ MixMatch (Enc-MM baseline)
def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    p = p ** (1 / temperature)
    return p / p.sum(dim=1, keepdim=True)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, gen: torch.Generator):
    """MixUp with λ' = max(λ, 1-λ) so each mixed item stays closest to its first source."""
    n = x.shape[0]
    lam = torch.distributions.Beta(alpha, alpha).sample((n,)).to(x.device) if alpha > 0 else torch.ones(n, device=x.device)
    lam = torch.maximum(lam, 1 - lam)
    perm = torch.randperm(n, generator=gen, device=gen.device).to(x.device)
    lx = lam.view(-1, 1, 1, 1)
    return lx * x + (1 - lx) * x[perm], lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[perm]


# ------------------------------------------------------------------ segmentation losses of seed 003
# Tversky (Eq. 4): 1 - (TP + e) / (TP + alpha FP + beta FN + e) per image on sigmoid
#   probabilities, alpha weighing false positives and beta false negatives (MONAI's
#   TverskyLoss, which computes exactly this per image and channel).
# KLTV (Eqs. 3-4): a |KL| + b Tversky, with the "absolute KL" term
#   |(y - p) log(y / p)| per pixel; y and p are clamped to [eps, 1 - eps] (eps = 1e-6) so
#   that empty and full pixels stay finite. The paper sums it over the m^2 pixels; we take
#   the mean, so that a keeps its meaning at any image size (a_sum = a_mean / m^2).
# XETV: binary cross-entropy + Tversky (AnatomyNet's pairing, the paper's XETV baseline).
# The paper gives no a, b, alpha or beta: `train.segmentation_loss` sets them (defaults
# a = b = 1, alpha = 0.3, beta = 0.7: false negatives weigh more, as the paper asks).
SEGMENTATION_LOSSES = ("dice", "tversky", "kltv", "xetv")


def tversky_loss(mask_logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                 smooth: float = 1e-5) -> torch.Tensor:
    # Imported here: `import monai` loads the whole package (5-10 s on two cores), and every
    # training and evaluation stage imports this module while only seed 003's losses need MONAI.
    from monai.losses import TverskyLoss

    loss = TverskyLoss(sigmoid=True, alpha=alpha, beta=beta, smooth_nr=smooth, smooth_dr=smooth)
    return loss(mask_logits.float(), target.float())


def absolute_kl_loss(mask_logits: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Mean over pixels and images of |(y - p) log(y / p)| (Eq. 4's KL term), y and p clamped to [eps, 1 - eps]."""
    p = torch.sigmoid(mask_logits.float()).clamp(eps, 1 - eps)
    y = target.float().clamp(eps, 1 - eps)
    return ((y - p) * (y.log() - p.log())).abs().mean()


def segmentation_loss(mask_logits: torch.Tensor, target: torch.Tensor, kind: str = "dice", *, alpha: float = 0.3,
                      beta: float = 0.7, kl_weight: float = 1.0, tversky_weight: float = 1.0,
                      eps: float = EPS) -> torch.Tensor:
    """One of SEGMENTATION_LOSSES on mask logits (B, 1, H, W) against binary masks."""
    if kind == "dice":
        return soft_dice_loss(mask_logits, target)
    tversky = tversky_loss(mask_logits, target, alpha, beta)
    if kind == "tversky":
        return tversky
    if kind == "kltv":
        return kl_weight * absolute_kl_loss(mask_logits, target, eps) + tversky_weight * tversky
    if kind == "xetv":
        return F.binary_cross_entropy_with_logits(mask_logits.float(), target.float()) + tversky
    raise ValueError(f"segmentation loss {kind!r} is not one of {', '.join(SEGMENTATION_LOSSES)}")


def deep_supervision_loss(side_logits: list[torch.Tensor], target: torch.Tensor, weights, **loss) -> torch.Tensor:
    """Eq. 1: sum_i w_i L(y_i, y^_i) over side outputs (finest first); each side output is
    compared with the reference mask resized to its grid (a pixel is ROI if at least half of
    it is, as the preprocessed masks are made)."""
    if len(weights) < len(side_logits):
        raise ValueError(f"{len(side_logits)} side outputs but {len(weights)} weights")
    total = torch.zeros((), device=target.device)
    for w, logits in zip(weights, side_logits):
        y = target if logits.shape[-2:] == target.shape[-2:] else \
            (F.adaptive_avg_pool2d(target.float(), logits.shape[-2:]) >= 0.5).float()
        total = total + w * segmentation_loss(logits, y, **loss)
    return total


# ------------------------------------------------------------------ seed 004 (CheXseg)
def class_average_dice_loss(mask_logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """CheXseg's segmentation loss: soft Dice per image and pathology (channel), averaged
    over both — every pathology weighs the same, however small its masks."""
    p = torch.sigmoid(mask_logits.float()).flatten(2)
    g = target.float().flatten(2)
    dice = (2 * (p * g).sum(2) + smooth) / (p.sum(2) + g.sum(2) + smooth)
    return (1 - dice).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """BCE of the student's sigmoid(s / tau) against the teacher's sigmoid(t / tau), per pixel
    and pathology (CheXseg B.4, tau = 10). No tau^2 factor: the paper states none, and Adam's
    updates do not depend on the loss scale."""
    target = torch.sigmoid(teacher_logits.float().detach() / temperature)
    return F.binary_cross_entropy_with_logits(student_logits.float() / temperature, target)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE over the labels that are known; NaN (an uncertain label under the
    `ignore` policy) is left out of the mean."""
    known = ~torch.isnan(labels)
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float()[known], labels[known].float())


def expert_slots(batch: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """CheXseg's mixing: each slot of a batch holds an expert-annotated image with
    probability p, else a pseudo-labelled one (p = 1 fully, p = 0 weakly supervised)."""
    return torch.rand(batch, generator=gen) < p
