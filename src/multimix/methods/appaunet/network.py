"""The segmentors of seed 003 (Imran & Terzopoulos, MLMI 2019): U-Net, Attention
U-Net and the pyramid progressive attention U-Net (PPAU-Net), as one network
with three switches, so that the three differ only where the paper says.

    pyramid     the input image, average-pooled to each encoder stage's scale,
                passes a conv-BN-ReLU and joins that stage's input (as M-Net):
                every stage sees the image itself, not only features of it.
    attention   additive attention gates on the skip connections (Oktay et
                al. 2018; the paper's Eq. 2): the decoder feature of the
                coarser level gates the encoder features it is joined with.
                MONAI's `AttentionBlock` (W_g g + W_x x -> ReLU -> psi ->
                sigmoid -> x * alpha).
    deep_supervision
                a 1x1 convolution (no batch norm: the paper keeps it off these
                convolutions) after each of the four decoder stages gives a side
                output at 1/8, 1/4, 1/2 and full resolution; each is added,
                upsampled, to the next ("progressively added"), and the last is
                the segmentation. Eq. 1's loss weighs all four (see
                `losses.deep_supervision_loss`).

U-Net = none of them, Attention U-Net = attention, PPAU-Net = all three.
Every other convolution is conv3x3 -> batch norm -> ReLU (MONAI `Convolution`),
twice per stage; max-pooling down, bilinear upsampling up. The paper gives no
widths: 16-32-64-128-256 channels, the MultiMix backbone's (about 2 M
parameters), so that seed 003's models and MultiMix cost alike.

The APPAU-Net discriminator (`Discriminator`) classifies an image-mask pair
into the n disease classes or n+1 = "the mask was predicted": strided
conv-BN-LeakyReLU blocks on the two channels, global average pooling,
dropout 0.4 (the paper's rate) and a linear layer to n+1 logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets.attentionunet import AttentionBlock
from torch import nn

CHANNELS = (16, 32, 64, 128, 256)
ARCHITECTURES = {
    "unet": dict(pyramid=False, attention=False, deep_supervision=False),
    "attention_unet": dict(pyramid=False, attention=True, deep_supervision=False),
    "ppaunet": dict(pyramid=True, attention=True, deep_supervision=True),
}


def conv_bn_relu(c_in: int, c_out: int) -> Convolution:
    return Convolution(2, c_in, c_out, kernel_size=3, act="RELU", norm="BATCH", adn_ordering="NA")


class Stage(nn.Sequential):
    """Two conv3x3-BN-ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out))


@dataclass
class SegmentorOutput:
    mask_logits: torch.Tensor  # (B, 1, H, W): the segmentation
    side_logits: list[torch.Tensor] = field(default_factory=list)  # finest first; empty without deep supervision


class PyramidAttentionUNet(nn.Module):
    def __init__(self, pyramid: bool = True, attention: bool = True, deep_supervision: bool = True,
                 in_channels: int = 1, channels: tuple[int, ...] = CHANNELS):
        super().__init__()
        self.pyramid, self.attention, self.deep_supervision = pyramid, attention, deep_supervision
        c = channels
        # encoder: stage k takes the pooled stage k-1 features (+ the image at its scale)
        self.image_convs = nn.ModuleList(
            [conv_bn_relu(in_channels, c[k - 1]) for k in range(1, len(c))] if pyramid else [])
        self.encoder = nn.ModuleList([Stage(in_channels, c[0])] + [
            Stage(c[k - 1] * (2 if pyramid else 1), c[k]) for k in range(1, len(c))])
        # decoder, coarse to fine: up(deeper) joins the (gated) skip of its level
        levels = list(range(len(c) - 2, -1, -1))  # 3, 2, 1, 0
        self.gates = nn.ModuleList(
            [AttentionBlock(2, f_int=max(c[k] // 2, 1), f_g=c[k + 1], f_l=c[k]) for k in levels] if attention else [])
        self.decoder = nn.ModuleList([Stage(c[k + 1] + c[k], c[k]) for k in levels])
        # side outputs: plain 1x1 convolutions, no batch norm (the paper keeps it off these)
        heads = levels if deep_supervision else levels[-1:]
        self.heads = nn.ModuleList([nn.Conv2d(c[k], 1, 1) for k in heads])

    def forward(self, x: torch.Tensor) -> SegmentorOutput:
        features, h = [], x
        for k, stage in enumerate(self.encoder):
            if k:
                h = F.max_pool2d(h, 2)
                if self.pyramid:
                    image = F.avg_pool2d(x, 2 ** k)
                    h = torch.cat([h, self.image_convs[k - 1](image)], dim=1)
            h = stage(h)
            features.append(h)
        d, side, sides = features[-1], None, []
        for i, stage in enumerate(self.decoder):
            skip = features[-2 - i]
            up = F.interpolate(d, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            if self.attention:
                skip = self.gates[i](g=up, x=skip)
            d = stage(torch.cat([up, skip], dim=1))
            if self.deep_supervision:
                out = self.heads[i](d)
                if side is not None:  # progressively added: each side output refines the coarser one
                    out = out + F.interpolate(side, size=out.shape[-2:], mode="bilinear", align_corners=False)
                side = out
                sides.append(out)
        if not self.deep_supervision:
            return SegmentorOutput(self.heads[0](d))
        return SegmentorOutput(sides[-1], side_logits=sides[::-1])


def build_segmentor(architecture: str, **kwargs) -> PyramidAttentionUNet:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    return PyramidAttentionUNet(**ARCHITECTURES[architecture], **kwargs)


class Discriminator(nn.Module):
    """(image, mask) -> n + 1 logits: the n disease classes, and 'predicted mask' (index n)."""

    def __init__(self, classes: int, channels: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.4):
        super().__init__()
        blocks, c_in = [], 2
        for c_out in channels:
            blocks.append(Convolution(2, c_in, c_out, strides=2, kernel_size=4, padding=1, act=("LEAKYRELU",
                                      {"negative_slope": 0.2}), norm="BATCH", adn_ordering="NA"))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, classes + 1)
        self.classes = classes

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.features(torch.cat([image, mask], dim=1))
        return self.classifier(self.dropout(F.adaptive_avg_pool2d(h, 1).flatten(1)))
