"""Where and in what precision a run computes: ``--device`` and ``--amp`` resolution.

Kept apart from the training loop so evaluation, ``test.py`` and query embedding use the same rules
without importing the trainer.
"""
from __future__ import annotations

import torch

from metric_retrieval.utils.errors import UserError

__all__ = ["AMP_DTYPES", "resolve_amp", "resolve_device"]

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unavailable or malformed ``--device`` is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` where bf16 matmuls/convolutions are native (2.7x fp32 on an AVX512-BF16 CPU,
    benchmarks/bench_train.py), else ``off``."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "off"
    try:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "off"
