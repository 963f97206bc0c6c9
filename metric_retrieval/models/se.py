"""Squeeze-and-excitation (Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv 1709.01507).

One module for every user: the SE-ResNet-50 / Caffe trunks (Cadene ``pretrainedmodels`` ``SEModule``, whose
key names ``fc1``/``fc2`` it keeps so the released weights load) and ABIR's attention blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    """Channel gating ``x ⊙ sigmoid(W2 ReLU(W1 GAP(x)))`` with 1x1 convolutions (both with bias).

    Args:
        channels: C of the ``(B, C, H, W)`` input.
        reduction: r; the hidden width is ``max(C // r, 1)`` (default 16, the paper's).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``."""
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(-2, -1), keepdim=True)))))
