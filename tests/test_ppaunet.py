"""Seed 003's segmentors (U-Net, Attention U-Net, PPAU-Net) and the APPAU-Net discriminator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multimix.methods.multimix.network import parameter_count
from multimix.methods.appaunet.network import ARCHITECTURES, Discriminator, build_segmentor


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_shapes(architecture):
    model = build_segmentor(architecture).eval()
    out = model(torch.rand(2, 1, 128, 128))
    assert out.mask_logits.shape == (2, 1, 128, 128)
    if architecture == "ppaunet":
        assert [s.shape[-1] for s in out.side_logits] == [128, 64, 32, 16]  # finest first
        assert out.side_logits[0] is out.mask_logits
    else:
        assert out.side_logits == []


def test_parameter_counts_and_what_each_switch_adds():
    counts = {a: parameter_count(build_segmentor(a)) for a in ARCHITECTURES}
    print(counts)
    assert 1_800_000 < counts["unet"] < 2_100_000  # the MultiMix backbone's size
    assert counts["unet"] < counts["attention_unet"] < counts["ppaunet"]
    gates = build_segmentor("attention_unet").gates
    assert len(gates) == 4 and counts["attention_unet"] - counts["unet"] == sum(parameter_count(g) for g in gates)


def test_batch_norm_everywhere_but_the_side_output_convolutions():
    model = build_segmentor("ppaunet")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    heads = set(map(id, model.heads))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(model.heads) == 4 and all(h.kernel_size == (1, 1) for h in model.heads)
    # every other convolution (stages, pyramid image convs, attention gates' W_x, W_g, psi) has a norm
    assert len(norms) == len(convs) - len(heads)


def test_pyramid_feeds_the_image_to_every_stage():
    model = build_segmentor("ppaunet").eval()
    assert len(model.image_convs) == 4
    x = torch.rand(1, 1, 64, 64, requires_grad=True)
    feats = []
    hook = model.encoder[4].register_forward_hook(lambda m, i, o: feats.append(i[0]))
    model(x)
    hook.remove()
    assert feats[0].shape[1] == 2 * 128  # pooled stage-4 features + the image's own 128 channels


def test_attention_gates_scale_the_skips_by_coefficients_in_0_1():
    model = build_segmentor("attention_unet").eval()
    coefficients = []
    hooks = [g.psi.register_forward_hook(lambda m, i, o: coefficients.append(o)) for g in model.gates]
    model(torch.rand(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert len(coefficients) == 4 and all(((c >= 0) & (c <= 1)).all() for c in coefficients)


def test_each_decoder_stage_joins_the_gated_skip_not_the_raw_one():
    """The gate's output (the skip times its coefficients) is what the decoder stage reads beside the
    upsampled features."""
    model = build_segmentor("attention_unet").eval()
    skips, gated, joined = [], [], []
    def record(module, args, kwargs, out):  # returns None: the output is kept
        skips.append(kwargs["x"])
        gated.append(out)

    hooks = [g.register_forward_hook(record, with_kwargs=True) for g in model.gates]
    hooks += [s.register_forward_hook(lambda m, i, o: joined.append(i[0])) for s in model.decoder]
    with torch.no_grad():
        model(torch.rand(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert len(gated) == len(joined) == 4
    for skip, g, j in zip(skips, gated, joined):
        assert torch.equal(j[:, -g.shape[1]:], g)
        assert not torch.allclose(g, skip)  # the gate does scale the skip


def test_side_outputs_are_progressively_added_coarse_to_fine():
    """Side output k is its own 1x1 head plus the upsampled side output k+1 (the coarser one); the
    coarsest is its head alone."""
    model = build_segmentor("ppaunet").eval()
    raw = []
    hooks = [h.register_forward_hook(lambda m, i, o: raw.append(o)) for h in model.heads]
    with torch.no_grad():
        out = model(torch.rand(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    sides = out.side_logits[::-1]                  # coarsest first, as the heads ran
    assert torch.equal(sides[0], raw[0])
    for k in range(1, 4):
        coarser = nn.functional.interpolate(sides[k - 1], size=raw[k].shape[-2:], mode="bilinear", align_corners=False)
        assert torch.allclose(sides[k], raw[k] + coarser, atol=1e-6)
        assert not torch.allclose(sides[k], raw[k], atol=1e-3)


def test_discriminator():
    d = Discriminator(classes=3).eval()
    logits = d(torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128))
    assert logits.shape == (2, 4)  # 3 disease classes + "predicted mask"
    assert d.dropout.p == 0.4
    print("discriminator parameters", parameter_count(d))
