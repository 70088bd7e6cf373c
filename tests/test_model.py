"""The network, the saliency bridge, the loss terms and augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multimix import augment, losses
from multimix.methods.multimix.network import MultiMixNet, instance_norm, parameter_count


def test_architecture_shapes_and_parameter_count():
    model = MultiMixNet()
    n = parameter_count(model)
    print(f"MultiMix parameters: {n:,}")
    assert 1_950_000 < n < 1_990_000  # ≈ 1.97 M as in the paper
    assert model.decoder[0][0].in_channels == 386  # 256 up + 128 skip + 2 bridge
    assert MultiMixNet(bridge=False).decoder[0][0].in_channels == 384
    out = model(torch.rand(2, 1, 256, 256))
    assert out.logits.shape == (2, 2)
    assert out.mask_logits.shape == (2, 1, 256, 256)
    assert out.saliency.shape == (2, 1, 256, 256) and not out.saliency.requires_grad
    only_cls = model(torch.rand(2, 1, 256, 256), with_decoder=False)
    assert only_cls.mask_logits is None and only_cls.saliency is None


def test_normalisation_is_instance_norm_per_image_and_channel():
    """The blocks' GroupNorm (one group per channel) is instance normalisation: each image's
    channel has mean 0 and variance 1, equal to torch's InstanceNorm2d, and without parameters."""
    torch.manual_seed(0)
    x = torch.randn(3, 8, 20, 24) * torch.rand(3, 8, 1, 1) * 5 + torch.randn(3, 8, 1, 1)
    norm = instance_norm(8)
    y = norm(x)
    assert not list(norm.parameters()) and not list(norm.buffers())
    assert torch.allclose(y.mean((2, 3)), torch.zeros(3, 8), atol=1e-5)
    assert torch.allclose(y.var((2, 3), unbiased=False), torch.ones(3, 8), atol=1e-3)
    assert torch.allclose(y, torch.nn.InstanceNorm2d(8)(x), atol=1e-5)
    # images are independent: normalising one alone gives the same result
    assert torch.allclose(norm(x[1:2]), y[1:2], atol=1e-6)


def test_saliency_is_the_input_gradient():
    """Finite differences of the predicted-class logit match the saliency map."""
    torch.manual_seed(0)
    model = MultiMixNet(dropout=0.0, saliency_norm="none").double()
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    saliency = model.saliency(x)
    model.eval()
    with torch.no_grad():
        cls = model(x, with_decoder=False).logits.argmax(1).item()
        eps = 1e-6
        for (r, c) in [(3, 4), (16, 16), (30, 1), (10, 22)]:
            e = torch.zeros_like(x)
            e[0, 0, r, c] = eps
            up = model(x + e, with_decoder=False).logits[0, cls]
            down = model(x - e, with_decoder=False).logits[0, cls]
            numeric = abs((up - down).item() / (2 * eps))
            assert abs(numeric - saliency[0, 0, r, c].item()) < 1e-5 * max(1.0, numeric)


def test_saliency_restores_the_mode_and_is_dropout_free():
    torch.manual_seed(0)
    model = MultiMixNet()
    x = torch.rand(2, 1, 64, 64)
    model.train()
    a, b = model.saliency(x), model.saliency(x)
    assert torch.equal(a, b)  # no dropout inside the saliency pass
    assert model.training
    model.eval()
    model.saliency(x)
    assert not model.training  # eval stays eval (the reference flipped it back to train)
    assert all(not m.training for m in model.modules())


def test_no_dropout_in_eval_mode():
    torch.manual_seed(0)
    model = MultiMixNet().eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x).mask_logits, model(x).mask_logits)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x).mask_logits, model(x).mask_logits)


def test_segmentation_consistency_is_nonzero_and_carries_gradient():
    torch.manual_seed(0)
    labelled = torch.randn(3, 1, 16, 16, requires_grad=True)
    unlabelled = torch.randn(4, 1, 16, 16, requires_grad=True)
    kl = losses.segmentation_consistency(labelled, unlabelled)
    assert kl.item() > 1e-3
    kl.backward()
    assert unlabelled.grad.abs().sum() > 0
    assert labelled.grad is None or labelled.grad.abs().sum() == 0  # the labelled side is the target
    same = torch.zeros(2, 1, 8, 8)
    assert losses.segmentation_consistency(same, same).item() < 1e-6


def test_bernoulli_kl_by_hand():
    p, q = torch.tensor([0.5]), torch.tensor([0.25])
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.25)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))
    assert torch.allclose(losses.bernoulli_kl(p, q), expected)


def test_pseudo_label_threshold_masks():
    # softmax confidences: 0.8 (kept), 0.6 (dropped), 0.95 (kept)
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.05, 0.95]])
    weak = probs.log()
    strong = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.5, 0.5]])
    loss, rate, pseudo, accepted = losses.fixmatch_loss(weak, strong, threshold=0.7)
    assert pseudo.tolist() == [0, 1, 1]
    assert accepted.tolist() == [1.0, 0.0, 1.0]
    assert abs(rate.item() - 2 / 3) < 1e-6
    per_image = F.cross_entropy(strong, pseudo, reduction="none")
    assert torch.allclose(loss, (per_image[0] + per_image[2]) / 3)
    none, rate0, _, _ = losses.fixmatch_loss(weak, strong, threshold=0.99)
    assert none.item() == 0 and rate0.item() == 0


def test_soft_dice():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50  # logits ±50
    assert losses.soft_dice_loss(perfect, target).item() < 1e-3
    assert losses.soft_dice_loss(-perfect, target).item() > 0.9


def test_augmentations_are_seeded_and_per_image():
    x = torch.rand(6, 1, 64, 64)
    mask = (torch.rand(6, 1, 64, 64) > 0.5).float()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(augment.strong(x, g1), augment.strong(x, g2))
    w1, m1 = augment.weak(x, torch.Generator().manual_seed(1), mask)
    w2 = augment.weak(x, torch.Generator().manual_seed(1))
    assert torch.equal(w1, w2) and set(m1.unique().tolist()) <= {0.0, 1.0}
    same = x[:1].expand(6, -1, -1, -1).contiguous()
    views = augment.strong(same, torch.Generator().manual_seed(0))
    assert len({v.sum().item() for v in views}) > 1  # drawn per image, not per batch
    assert views.min() >= 0 and views.max() <= 1


def test_weak_shift_moves_the_mask_with_the_image():
    x = torch.zeros(8, 1, 64, 64)
    x[..., 20:30, 20:34] = 1  # not symmetric: a flip moves it too
    moved, mask = augment.weak(x, torch.Generator().manual_seed(3), x.clone())
    assert torch.equal(moved > 0.5, mask > 0.5)
    changed = [not torch.equal(moved[i] > 0.5, x[i] > 0.5) for i in range(8)]
    assert sum(changed) >= 6, changed  # the warp really moves images (a no-op would pass the line above)
    shifts = {tuple(torch.nonzero(moved[i, 0] > 0.5).min(0).values.tolist()) for i in range(8)}
    assert len(shifts) > 4  # drawn per image


def test_equalize_matches_a_flat_histogram():
    # Seeded: drawn from the global generator, the image depended on the tests that ran before it
    # on the same worker. Squared, not cubed: a cube puts 13 % of the pixels on grey level 0,
    # which equalisation maps to 0 by definition, so the first quarter holds about 1.6x the
    # others for a correct equalize (3,165 of 4,000 seeded images failed; squared: none, at most 1.29).
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) ** 2
    before = torch.histc(x[0], bins=4, min=0, max=1)
    assert before.max() / before.min() > 3  # skewed
    eq = augment.equalize(x)
    hist = torch.histc(eq[0], bins=4, min=0, max=1)
    assert hist.max() / hist.min() < 1.5


# ------------------------------------------------------------------ saliency scaling and the bridge diagnostic
def test_normalised_saliency_is_on_the_image_scale():
    from multimix.methods.multimix.network import normalise_saliency

    torch.manual_seed(0)
    x = torch.rand(3, 1, 64, 64)
    raw = MultiMixNet(dropout=0.0, saliency_norm="none").saliency(x)
    assert raw.mean() < 0.1 * x.mean()  # raw input gradients are far below the image's [0, 1]
    by_max = normalise_saliency(raw, "max")
    assert torch.allclose(by_max, raw / raw.flatten(1).amax(1).view(-1, 1, 1, 1))
    assert torch.allclose(by_max.flatten(1).amax(1), torch.ones(3))
    p99 = normalise_saliency(raw, "p99")
    assert p99.min() >= 0 and p99.max() <= 1
    assert torch.allclose(torch.quantile(p99.flatten(1), 0.99, dim=1), torch.ones(3), atol=1e-3)
    assert (p99.flatten(1).mean(1) > by_max.flatten(1).mean(1)).all()  # the top 1% no longer sets the scale
    assert torch.equal(normalise_saliency(torch.zeros(1, 1, 8, 8), "max"), torch.zeros(1, 1, 8, 8))  # no 0/0


class SquareToy(torch.utils.data.Dataset):
    """64x64 noise; class 1 images hold a bright 16x16 square, which is also their mask.
    A classifier's saliency highlights the square: the bridge has something to carry."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            image = 0.3 * torch.rand(1, 64, 64, generator=g)
            mask = torch.zeros(1, 64, 64)
            label = i % 2
            if label:
                r, c = torch.randint(0, 48, (2,), generator=g).tolist()
                image[:, r:r + 16, c:c + 16] += 0.6
                mask[:, r:r + 16, c:c + 16] = 1
            self.items.append({"image": image, "mask": mask, "label": label})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, k):
        return self.items[k]


def _trained_on_squares(bridge: bool, saliency_norm: str, steps: int = 40) -> MultiMixNet:
    torch.manual_seed(0)
    model = MultiMixNet(bridge=bridge, dropout=0.0, saliency_norm=saliency_norm)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = SquareToy(20, seed=1)
    x = torch.stack([it["image"] for it in data.items])
    m = torch.stack([it["mask"] for it in data.items])
    y = torch.tensor([it["label"] for it in data.items])
    for _ in range(steps):
        out = model(x)
        loss = F.cross_entropy(out.logits, y) + 5 * losses.soft_dice_loss(out.mask_logits, m)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def _sensitivity(model) -> dict:
    import contextlib
    from types import SimpleNamespace

    from multimix.methods.multimix.training import validate

    streams = SimpleNamespace(val={"seg": SquareToy(8, seed=2)})
    return validate(model, streams, torch.device("cpu"), contextlib.nullcontext, batch_size=4)


def test_bridge_sensitivity_is_zero_without_a_bridge_and_positive_with_one():
    """The diagnostic of validation: exactly 0 where there is no saliency channel; above 0
    for a bridge model trained a few steps where the saliency is informative (a bridge
    disconnected from the decoder, or an ablation that zeroes nothing, would give 0)."""
    # Three steps are enough: the change is ~1e-4 after 3 steps as after 20 (measured), and
    # 20 steps of three models cost a minute of CI.
    without = _sensitivity(_trained_on_squares(bridge=False, saliency_norm="max", steps=3))
    assert without["val_bridge_logit_change"] == 0.0 and without["val_bridge_dice_change"] == 0.0
    for norm in ("max", "none"):
        trained = _sensitivity(_trained_on_squares(bridge=True, saliency_norm=norm, steps=3))
        assert trained["val_bridge_logit_change"] > 1e-6, norm


# ------------------------------------------------------------------ seed 003's segmentation losses
def _logits(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def test_tversky_by_hand():
    """Eq. 4 on a 2x2 case: alpha weighs false positives, beta false negatives. FP and FN differ
    here (0.3 and 0.8), so a loss with the two weights swapped gives other numbers."""
    y = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    p = torch.tensor([[[[0.8, 0.4], [0.1, 0.2]]]])
    tp, fp, fn = 0.8 + 0.4, 0.1 + 0.2, 0.2 + 0.6
    for alpha, beta in ((0.5, 0.5), (0.3, 0.7), (0.9, 0.1)):
        expected = 1 - tp / (tp + alpha * fp + beta * fn)
        assert losses.tversky_loss(_logits(p), y, alpha, beta, smooth=0.0).item() == pytest.approx(expected, rel=1e-5)
    # pinned: (0.3, 0.7) -> 1 - 1.2 / (1.2 + 0.09 + 0.56); the swapped weights would give 1 - 1.2 / 1.65
    assert losses.tversky_loss(_logits(p), y, 0.3, 0.7, smooth=0.0).item() == pytest.approx(0.65 / 1.85, rel=1e-5)
    # alpha = beta = 0.5 is the Dice loss
    assert losses.tversky_loss(_logits(p), y, 0.5, 0.5, smooth=0).item() == pytest.approx(1 - 2 * tp / (2 * tp + fp + fn))
    # more weight on false negatives punishes missing ROI more than spilling over it
    miss = torch.tensor([[[[0.9, 0.1], [0.1, 0.1]]]])
    spill = torch.tensor([[[[0.9, 0.9], [0.9, 0.1]]]])
    assert losses.tversky_loss(_logits(miss), y, 0.3, 0.7) > losses.tversky_loss(_logits(spill), y, 0.3, 0.7)


def test_absolute_kl_by_hand_and_clamping():
    y = torch.tensor([[[[1.0, 0.0]]]])
    p = torch.tensor([[[[0.8, 0.3]]]])
    eps = 1e-6
    yc = y.clamp(eps, 1 - eps)
    expected = ((yc - p) * torch.log(yc / p)).abs().mean()
    assert losses.absolute_kl_loss(_logits(p), y, eps).item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.isfinite(losses.absolute_kl_loss(torch.tensor([[[[60.0, -60.0]]]]), y))  # saturated logits


def test_kltv_is_tversky_when_a_is_zero_and_zero_for_a_perfect_prediction():
    torch.manual_seed(0)
    y = (torch.rand(2, 1, 16, 16) > 0.5).float()
    x = torch.randn(2, 1, 16, 16)
    tv = losses.segmentation_loss(x, y, "tversky", alpha=0.3, beta=0.7)
    kltv0 = losses.segmentation_loss(x, y, "kltv", alpha=0.3, beta=0.7, kl_weight=0.0)
    assert kltv0.item() == pytest.approx(tv.item())
    perfect = (y * 2 - 1) * 30  # logits ±30: probabilities within 1e-13 of the mask
    assert losses.segmentation_loss(perfect, y, "kltv").item() < 1e-4
    assert losses.segmentation_loss(x, y, "kltv").item() > tv.item()  # the KL term adds where wrong
    xetv = losses.segmentation_loss(x, y, "xetv")
    assert xetv.item() == pytest.approx((F.binary_cross_entropy_with_logits(x, y) + tv).item(), rel=1e-5)
    assert losses.segmentation_loss(x, y, "dice").item() == pytest.approx(losses.soft_dice_loss(x, y).item())


def test_deep_supervision_weights_side_outputs():
    torch.manual_seed(0)
    y = torch.zeros(1, 1, 16, 16)
    y[..., 4:12, 4:12] = 1
    sides = [torch.randn(1, 1, 16, 16), torch.randn(1, 1, 8, 8), torch.randn(1, 1, 4, 4)]
    w = [1.0, 0.5, 0.25]
    total = losses.deep_supervision_loss(sides, y, w, kind="tversky")
    coarse = [y, (F.avg_pool2d(y, 2) >= 0.5).float(), (F.avg_pool2d(y, 4) >= 0.5).float()]
    expected = sum(wi * losses.tversky_loss(s, t).item() for wi, s, t in zip(w, sides, coarse))
    assert total.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        losses.deep_supervision_loss(sides, y, [1.0])
