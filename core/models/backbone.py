"""ResNet backbone with conv5 stride 1 and no avgpool/fc ("Backbone Network" paragraph of the paper).

A 256x128 frame gives 2048x16x8 maps with ResNet-50 (512x16x8 with ResNet-18/34). `resnet18_narrow` is ResNet-18's
layout (torchvision's BasicBlock, 2-2-2-2) at a quarter of its widths (16-32-64-128 channels, 0.7 M parameters): the
cpu profile's backbone, about 10x faster per frame than ResNet-18 with the same map size; it has no ImageNet weights
(the cpu profile pretrains it on synthetic identities instead, core.engine.pretrain).
ImageNet weights come from the torch hub cache or an explicit state-dict file; this module never downloads:
when the cached file is missing it raises WeightsUnavailableError saying which file to fetch and where to put it.
"""
from __future__ import annotations

import os
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

# name -> (constructor, ImageNet weights enum entry, output channels D)
BACKBONES = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, 2048),
}
# name -> (BasicBlock widths of conv1/layer1..layer4, blocks per layer): ResNets of torchvision's blocks, no ImageNet
# weights
NARROW = {"resnet18_narrow": ((16, 32, 64, 128), (2, 2, 2, 2))}
BACKBONE_NAMES = (*BACKBONES, *NARROW)


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither in the torch hub cache nor given as a readable, matching weights_path."""


def cached_weights_file(name: str) -> str:
    """Where torchvision keeps the ImageNet weights of `name`: <torch.hub.get_dir()>/checkpoints/<file>."""
    url = BACKBONES[name][1].url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def _read_state_dict(name: str, weights_path: str | None, path: str) -> dict[str, torch.Tensor]:
    if weights_path is not None and not os.path.isfile(weights_path):
        raise WeightsUnavailableError(f"model.weights_path '{weights_path}' does not exist (expected an ImageNet "
                                      f"{name} state-dict file such as {os.path.basename(cached_weights_file(name))})")
    if not os.path.isfile(path):  # checked instead of downloading: this module never touches the network
        raise WeightsUnavailableError(
            f"ImageNet weights for {name} are not in the torch hub cache (this suite never downloads them). Fetch "
            f"{BACKBONES[name][1].url} and save it as {path} (folder: {os.path.dirname(path)}, i.e. "
            f"torch.hub.get_dir()/checkpoints), or pass its location as model.weights_path, "
            f"or set model.pretrained=false")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailableError(f"weights file '{path}' cannot be read as a state dict: {e}") from e


def _load_imagenet(net: nn.Module, name: str, weights_path: str | None) -> None:
    source = weights_path or cached_weights_file(name)
    state = _read_state_dict(name, weights_path, source)
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"weights file '{source}' does not hold a state dict "
                                      f"(got {type(state).__name__})")
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise WeightsUnavailableError(f"weights file '{source}' does not match torchvision's {name}: {e}") from e
    missing = [k for k in missing if not k.startswith("fc.")]  # fc is removed anyway
    if missing or unexpected:
        raise WeightsUnavailableError(f"weights file '{source}' does not match torchvision's {name}: "
                                      f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def _narrow(widths: tuple[int, ...], blocks: tuple[int, ...]) -> nn.Sequential:
    """A ResNet of torchvision's BasicBlocks with the given widths, the stem and strides of ResNet-18 and conv5
    stride 1: (B, 3, H, W) -> (B, widths[-1], H/16, W/16); He initialisation, as torchvision's ResNet."""
    from torchvision.models.resnet import BasicBlock, conv1x1
    stem = [nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1)]
    layers, inplanes = [], widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        stride = 2 if i in (1, 2) else 1  # layer2 and layer3 halve the map; layer4 (conv5) keeps it: stride 1
        down = None if stride == 1 and inplanes == width else \
            nn.Sequential(conv1x1(inplanes, width, stride), nn.BatchNorm2d(width))
        layers.append(nn.Sequential(BasicBlock(inplanes, width, stride, down),
                                    *(BasicBlock(width, width) for _ in range(n - 1))))
        inplanes = width
    net = nn.Sequential(*stem, *layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def build_backbone(name: str, pretrained: bool, weights_path: str | None = None) -> tuple[nn.Module, int]:
    """ResNet `name`, conv5 stride 1, avgpool/fc removed: (B, 3, H, W) -> (B, D, H/16, W/16); returns (module, D).

    `pretrained` loads ImageNet weights (torchvision's ResNets only); a narrow ResNet is built untrained (its
    synthetic pretraining is loaded by the model, core.engine.pretrain)."""
    if name in NARROW:
        if pretrained:
            raise WeightsUnavailableError(f"backbone '{name}' has no ImageNet weights; set model.pretrained=false "
                                          f"(the cpu profile pretrains it on synthetic identities: model.init)")
        widths, blocks = NARROW[name]
        return _narrow(widths, blocks), widths[-1]
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; valid: {', '.join(BACKBONE_NAMES)}")
    make, _, channels = BACKBONES[name]
    net = make(weights=None)
    if pretrained:  # weights_path is where the ImageNet weights come from; pretrained=False ignores it
        _load_imagenet(net, name, weights_path)
    block = net.layer4[0]
    # conv5 stride 2 -> 1: the strided conv is conv2 (3x3) in a Bottleneck, conv1 in a BasicBlock, plus the shortcut
    strided = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    strided.stride = (1, 1)
    block.downsample[0].stride = (1, 1)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return body, channels
