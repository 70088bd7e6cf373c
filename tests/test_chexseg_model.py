"""Seed 004's parts: DeepLabV3+ and its encoder init, Grad-CAM against a hand-computed map,
pseudo-label thresholds, the mixing sampler and the distillation loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from multimix import losses
from multimix.methods.chexseg import pseudolabels
from multimix.methods.chexseg.network import CAM_LAYER, DeepLabV3Plus, pathology_classifier


def test_deeplab_shapes_stride_and_encoder_init():
    torch.manual_seed(0)
    model = DeepLabV3Plus(classes=10)
    out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 10, 64, 64)
    # output stride 16: layer4 keeps layer3's resolution
    x = model.layer1(model.stem(torch.randn(1, 1, 64, 64)))
    assert x.shape[-1] == 16 and model.layer4(model.layer3(model.layer2(x))).shape[-1] == 4
    classifier = pathology_classifier("resnet18")
    copied = model.init_encoder_from(classifier.state_dict())
    assert copied == len(model.encoder_state())
    assert torch.equal(model.stem[0].weight, classifier.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="not a ResNet18 classifier"):
        model.init_encoder_from(pathology_classifier("densenet121").state_dict())


class TinyCAM(nn.Module):
    """conv 1x1 (2 channels) -> ReLU -> global mean -> linear: Grad-CAM has a closed form."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
            self.head.weight[:] = torch.tensor([[2.0, 1.0], [-1.0, 3.0], [0.0, 0.0]])

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean((2, 3)))


def test_grad_cam_matches_the_hand_computed_map():
    image = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]).view(1, 1, 2, 3)
    maps, probs = pseudolabels.cams(TinyCAM(), "act", image, classes=3)
    a = torch.stack([image[0, 0].clamp(min=0), (-image[0, 0]).clamp(min=0)])  # the activations A_k
    for c, w in enumerate(([2.0, 1.0], [-1.0, 3.0])):
        # d y_c / d A_k(i, j) = w_k / (H W): alpha_k = w_k / 6, map = ReLU(sum_k alpha_k A_k)
        hand = torch.relu(sum(w[k] / 6 * a[k] for k in range(2)))
        assert np.allclose(maps[0, c], (hand / hand.max()).numpy(), atol=1e-6)
    assert not maps[0, 2].any()  # no evidence at all: an all-zero map, not a divided-by-zero one
    assert probs.shape == (1, 3) and np.allclose(probs[0, 2], 0.5)


@pytest.mark.parametrize("arch", ["densenet121", "resnet18"])
def test_grad_cam_layers_of_the_classifiers(arch):
    torch.manual_seed(0)
    model = pathology_classifier(arch, classes=3)
    images = torch.randn(2, 1, 64, 64)
    maps, probs = pseudolabels.cams(model, CAM_LAYER[arch], images, classes=3)
    assert maps.shape == (2, 3, 64, 64) and probs.shape == (2, 3) and maps.min() >= 0
    peaks = maps.reshape(6, -1).max(1)
    assert np.all(np.isclose(peaks, 1.0) | (peaks == 0.0))  # each map scaled by its maximum (or empty)
    # evaluation batches images: each image's maps are those it gets on its own (eval mode)
    one, _ = pseudolabels.cams(model, CAM_LAYER[arch], images[1:], classes=3)
    assert np.allclose(maps[1:], one, atol=1e-5)


@pytest.mark.parametrize("arch", ["densenet121", "resnet18"])
def test_grad_cam_reads_the_last_activation_before_global_pooling(arch):
    """The layer is the one whose output, averaged over the image and passed through the final
    linear layer, gives the logits: the feature map Grad-CAM's weights are defined on."""
    torch.manual_seed(0)
    model = pathology_classifier(arch, classes=3).eval()
    seen = {}
    model.get_submodule(CAM_LAYER[arch]).register_forward_hook(lambda m, i, out: seen.update(a=out.detach().clone()))
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        logits = model(x)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert torch.allclose(head(seen["a"].mean((2, 3))), logits, atol=1e-5)


def test_otsu_maximises_the_between_class_variance():
    """Two overlapping modes (70 % around 0.3, 30 % around 0.75): Otsu's threshold is where the
    between-class variance peaks (about 0.51), above the map's mean (0.44), which splits worse."""
    rng = np.random.default_rng(0)
    m = np.concatenate([rng.normal(0.3, 0.12, 7000), rng.normal(0.75, 0.08, 3000)]).clip(0, 1).reshape(100, 100)

    def between(t):
        fg = m > t
        return fg.mean() * (1 - fg.mean()) * (m[fg].mean() - m[~fg].mean()) ** 2

    t = pseudolabels.otsu(m)
    assert between(t) >= max(between(c) for c in np.linspace(0.05, 0.95, 181)) * (1 - 1e-4)
    assert t > m.mean() + 0.05 and between(m.mean()) < between(t) * 0.98


def test_tuned_thresholds_maximise_iou_and_otsu_splits_two_levels():
    maps = np.zeros((2, 1, 10, 10), np.float32)
    maps[:, 0, 2:6, 2:6] = 0.8   # the lesion
    maps[:, 0, 6:8, 2:6] = 0.4   # a halo beside it
    masks = np.zeros_like(maps, dtype=bool)
    masks[:, 0, 2:6, 2:6] = True
    t = pseudolabels.tune_thresholds(maps, masks)
    assert 0.4 < t[0] <= 0.8  # above the halo, not above the lesion
    present = np.ones((2, 1), bool)
    tuned = pseudolabels.pseudo_masks(maps, present, "tuned", t)
    assert (tuned.astype(bool) == masks).all()
    assert 0.0 < pseudolabels.otsu(maps[0, 0]) < 0.8
    absent = pseudolabels.pseudo_masks(maps, np.zeros((2, 1), bool), "otsu")
    assert not absent.any()  # no mask where the image does not have the pathology
    with pytest.raises(ValueError, match="threshold method 'max'"):
        pseudolabels.pseudo_masks(maps, present, "max")


def test_gates_by_label_and_probability():
    labels = np.array([[1.0, 0.0, np.nan]])
    probs = np.array([[0.2, 0.9, 0.7]])
    assert pseudolabels.gate(labels, probs, "label", None).tolist() == [[True, False, False]]
    assert pseudolabels.gate(labels, probs, "label", 0.5).tolist() == [[False, False, False]]
    assert pseudolabels.gate(labels, probs, "probability", 0.6).tolist() == [[False, True, True]]


def test_expert_fraction_follows_p():
    gen = torch.Generator().manual_seed(0)
    for p in (0.0, 0.2, 0.85, 1.0):
        share = torch.cat([losses.expert_slots(8, p, gen) for _ in range(2000)]).float().mean().item()
        assert abs(share - p) < 0.02, (p, share)  # 16,000 draws: 3 sigma < 0.011


def test_distillation_loss_at_temperature_by_hand():
    s, t = torch.tensor([[2.0]]), torch.tensor([[-10.0]])
    tau = 10.0
    q = 1 / (1 + math.exp(1.0))            # sigmoid(-10 / 10)
    p = 1 / (1 + math.exp(-0.2))           # sigmoid(2 / 10)
    expected = -(q * math.log(p) + (1 - q) * math.log(1 - p))
    assert losses.distillation_loss(s, t, tau).item() == pytest.approx(expected, rel=1e-6)
    student = torch.zeros(1, 1, requires_grad=True)
    losses.distillation_loss(student, t.requires_grad_(), tau).backward()
    assert t.grad is None and student.grad is not None  # the teacher is a target


def test_class_average_dice_weighs_pathologies_equally_and_masked_bce_skips_unknown():
    target = torch.zeros(1, 2, 8, 8)
    target[0, 0] = 1.0                       # a large mask
    target[0, 1, 0, 0] = 1.0                 # a one-pixel mask
    perfect = torch.where(target > 0, 20.0, -20.0)
    assert losses.class_average_dice_loss(perfect, target).item() < 1e-3
    missed_small = perfect.clone()
    missed_small[0, 1, 0, 0] = -20.0
    # missing the one pixel costs half the loss, though it is 1/65 of the foreground
    assert losses.class_average_dice_loss(missed_small, target).item() == pytest.approx(0.25, abs=0.01)
    logits = torch.tensor([[0.0, 5.0]])
    assert losses.masked_bce(logits, torch.tensor([[1.0, float("nan")]])).item() == pytest.approx(math.log(2))
    assert losses.masked_bce(logits, torch.tensor([[float("nan"), float("nan")]])).item() == 0.0
