"""The optimiser registry: ``OPTIMIZERS.get(name)(param_groups, lr=..., **declared options)`` → a torch optimiser.

The parameter groups (backbone, head, loss-owned parameters, each with its lr and weight decay) are built by
the trainer; ``--weight_decay`` is declared here, as the option of every optimiser, and applied per group.
"""
from __future__ import annotations

from typing import Any

import torch

from metric_retrieval.utils.options import Option, declare
from metric_retrieval.utils.registry import Registry

__all__ = ["OPTIMIZERS", "WEIGHT_DECAY"]

OPTIMIZERS = Registry("optimizer")
# L2 decay of the backbone and head groups (0 for the head parameters with their own lr multiplier)
WEIGHT_DECAY = Option("weight_decay", float, 0.0, "weight decay of the backbone and head parameter groups", low=0.0,
                      to_builder=False)


@OPTIMIZERS.register("adam")
@declare(WEIGHT_DECAY)
def adam(groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba, ICLR 2015), torch defaults (betas 0.9/0.999, eps 1e-8); decay as L2 per group."""
    return torch.optim.Adam(groups, lr=lr)


@OPTIMIZERS.register("adamw")
@declare(WEIGHT_DECAY)
def adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, ICLR 2019): decoupled weight decay per group."""
    return torch.optim.AdamW(groups, lr=lr)


@OPTIMIZERS.register("sgd")
@declare(WEIGHT_DECAY, Option("momentum", float, 0.9, "SGD momentum", low=0.0, high=1.0, high_ok=False))
def sgd(groups: list[dict[str, Any]], lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD with (heavy-ball) momentum."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)
