"""CheXseg's networks (seed 004), assembled from MONAI parts.

- `pathology_classifier(arch)`: the image-level classifier of the ten pathologies,
  DenseNet121 (the paper's CAM source) or ResNet18 (whose trunk initialises the
  segmentation encoder: the paper's "CheXpert encoder weights"), one logit each.
- `DeepLabV3Plus`: DeepLabV3+ (Chen et al. 2018) on a ResNet18 trunk: output stride 16
  (layer4 dilated instead of strided, as DeepLabV3+ does), ASPP with rates 6/12/18 and
  an image-pooling branch, a decoder that fuses the ASPP output with stride-4 features,
  one sigmoid logit per pathology at the input size.
ImageNet and MoCo-CXR weights cannot be fetched on a machine without a network; the
encoder starts random or from a trained pathology classifier (`init_encoder_from`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import SimpleASPP
from monai.networks.nets import DenseNet121, resnet18
from torch import nn

ARCHITECTURES = ("densenet121", "resnet18")


def _resnet18(in_channels: int, classes: int) -> nn.Module:
    # The ImageNet layout: 7x7 stride-2 stem, max-pool, 1x1 projection shortcuts.
    return resnet18(spatial_dims=2, n_input_channels=in_channels, num_classes=classes, conv1_t_size=7,
                    conv1_t_stride=2, shortcut_type="B")


def pathology_classifier(arch: str, classes: int = 10, in_channels: int = 1) -> nn.Module:
    if arch == "densenet121":
        return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=classes)
    if arch == "resnet18":
        return _resnet18(in_channels, classes)
    raise ValueError(f"classifier architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


# Grad-CAM's layer per architecture: the last activation before global pooling.
CAM_LAYER = {"densenet121": "class_layers.relu", "resnet18": "layer4"}


class DeepLabV3Plus(nn.Module):
    def __init__(self, classes: int = 10, in_channels: int = 1, aspp_channels: int = 64):
        super().__init__()
        trunk = _resnet18(in_channels, 1)
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.act, trunk.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        _dilate(self.layer4, 2)  # output stride 16
        self.aspp = SimpleASPP(2, 512, aspp_channels, kernel_sizes=(1, 3, 3, 3), dilations=(1, 6, 12, 18),
                               acti_type="RELU")
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(512, aspp_channels, 1, bias=False),
                                        nn.BatchNorm2d(aspp_channels), nn.ReLU(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(5 * aspp_channels, 256, 1, bias=False), nn.BatchNorm2d(256),
                                     nn.ReLU(inplace=True), nn.Dropout(0.1))
        self.low = nn.Sequential(nn.Conv2d(64, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.decode = nn.Sequential(
            nn.Conv2d(256 + 48, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, classes, 1),
        )

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The trunk's weights under ResNet18's own names (conv1, bn1, layer1..4)."""
        names = {"stem.0": "conv1", "stem.1": "bn1"}
        out = {}
        for key, value in self.state_dict().items():
            head = key.split(".")[0]
            if head == "stem":
                prefix = ".".join(key.split(".")[:2])
                out[names[prefix] + key[len(prefix):]] = value
            elif head.startswith("layer"):
                out[key] = value
        return out

    def init_encoder_from(self, classifier_state: dict[str, torch.Tensor]) -> int:
        """Load a ResNet18 pathology classifier's trunk; returns the tensors copied."""
        mine = self.encoder_state()
        missing = [k for k in mine if k not in classifier_state]
        if missing:
            raise ValueError(f"not a ResNet18 classifier state: no {missing[0]!r}")
        reverse = {"conv1": "stem.0", "bn1": "stem.1"}
        state = {}
        for key in mine:
            head = key.split(".")[0]
            target = reverse[head] + key[len(head):] if head in reverse else key
            state[target] = classifier_state[key]
        self.load_state_dict(state, strict=False)
        return len(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        low = self.layer1(self.stem(x))                       # stride 4, 64 channels
        deep = self.layer4(self.layer3(self.layer2(low)))    # stride 16, 512 channels
        pooled = self.image_pool(deep).expand(-1, -1, *deep.shape[-2:])
        context = self.project(torch.cat([self.aspp(deep), pooled], 1))
        context = F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.decode(torch.cat([context, self.low(low)], 1))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _dilate(layer: nn.Sequential, rate: int) -> None:
    """Stride 1 instead of 2 in the layer's first block, and dilated 3x3 convolutions."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride == (2, 2):
                module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (rate, rate), (rate, rate)
