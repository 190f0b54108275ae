"""The convolution blocks of the encoder and decoder: conv-BN-ReLU, residual block, ASPP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ASPP", "BasicBlock", "conv_bn", "stage"]


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, relu=True):
    """Convolution (no bias, "same" padding), BatchNorm, optional ReLU."""
    layers = [
        nn.Conv2d(
            cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation, bias=False
        ),
        # BatchNorm: in eval mode it is a per-channel affine map, so it keeps every
        # output local (GroupNorm/InstanceNorm would couple all pixels of a block).
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(channels, channels), conv_bn(channels, channels, relu=False)
        )

    def forward(self, x):
        return F.relu(x + self.body(x))


def stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    """One encoder stage: a stride-2 convolution, then ``blocks`` residual blocks."""
    return nn.Sequential(conv_bn(cin, cout, stride=2), *[BasicBlock(cout) for _ in range(blocks)])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling without the image-pooling branch.

    The pooling branch is left out on purpose: a global average over the block would make
    every output depend on the whole block, so chunked and whole-image results would
    differ; long-range context comes from the cross-patch module instead.
    """

    def __init__(self, channels: int, width: int, dilations: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn(channels, width, k=1)]
            + [conv_bn(channels, width, dilation=d) for d in dilations]
        )
        self.project = conv_bn(width * len(self.branches), channels, k=1)

    def forward(self, x):
        return self.project(torch.cat([b(x) for b in self.branches], 1))
