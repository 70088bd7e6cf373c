"""Loss terms of MultiMix (paper Eqs. 1, 2 and 5).

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
