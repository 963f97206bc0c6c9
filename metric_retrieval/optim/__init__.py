"""Optimisers (``OPTIMIZERS``) and learning-rate schedules (``SCHEDULERS``), found by name like timm.optim /
timm.scheduler; each declares its own options (:mod:`metric_retrieval.utils.options`)."""
from __future__ import annotations

from metric_retrieval.optim.optimizers import OPTIMIZERS, WEIGHT_DECAY
from metric_retrieval.optim.schedulers import SCHEDULERS, WARMUP_EPOCHS, lr_lambda

__all__ = ["OPTIMIZERS", "SCHEDULERS", "WARMUP_EPOCHS", "WEIGHT_DECAY", "lr_lambda"]
