"""The learning-rate schedule registry: ``SCHEDULERS.get(name)(total_steps=, steps_per_epoch=, num_epochs=,
warmup_steps=, **declared options)`` → ``factor(step)``, the multiplier of every group's lr at optimiser step
``step``. :func:`lr_lambda` puts the shared linear warm-up (``--warmup_epochs``, declared by every schedule)
in front of it; the trainer wraps it in ``torch.optim.lr_scheduler.LambdaLR`` and steps it once per step.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from metric_retrieval.utils.options import Option, declare
from metric_retrieval.utils.parsing import parse_number_list
from metric_retrieval.utils.registry import Registry

__all__ = ["SCHEDULERS", "WARMUP_EPOCHS", "lr_lambda"]

SCHEDULERS = Registry("scheduler")
WARMUP_EPOCHS = Option("warmup_epochs", float, 0.0, "linear warm-up length in epochs", low=0.0, to_builder=False)
Factor = Callable[[int], float]


def _warmup_problems(cfg: dict[str, Any]) -> list[str]:
    """The warm-up must end within the run."""
    if cfg["warmup_epochs"] > cfg["num_epochs"]:
        return [f"--warmup_epochs {cfg['warmup_epochs']:g} exceeds --num_epochs {cfg['num_epochs']}"]
    return []


def _milestone_problems(cfg: dict[str, Any]) -> list[str]:
    """Milestones must be positive and fall before the end of the run (and the warm-up too)."""
    problems = _warmup_problems(cfg)
    for m in parse_number_list(cfg["milestones"], "--milestones", float):
        if not math.isfinite(m) or m <= 0:
            problems.append(f"--milestones must list positive numbers, got {cfg['milestones']}")
        elif m >= 1 and m >= cfg["num_epochs"]:
            problems.append(f"--milestones {cfg['milestones']}: epoch {m:g} is not before the end of "
                            f"--num_epochs {cfg['num_epochs']}, so the learning rate would never drop there "
                            "(values < 1 are fractions of --num_epochs)")
    return problems


@SCHEDULERS.register("multistep")
@declare(WARMUP_EPOCHS,
         Option("milestones", str, "0.6,0.8", "multistep epochs; values < 1 are fractions of --num_epochs "
                                              "(e.g. 12,16 of 20)"),
         Option("gamma", float, 0.1, "multistep decay factor", low=0.0, low_ok=False),
         check=_milestone_problems)
def multistep(total_steps: int, steps_per_epoch: int, num_epochs: int, warmup_steps: int,
              milestones: str | list = "0.6,0.8", gamma: float = 0.1) -> Factor:
    """``gamma ** (number of milestones passed)``; milestones are epochs, rounded, applied at step granularity."""
    marks = [m * num_epochs if m < 1 else m for m in parse_number_list(milestones, "--milestones", float)]
    steps = sorted(int(round(m)) * steps_per_epoch for m in marks)

    def factor(step: int) -> float:
        return gamma ** sum(step >= m for m in steps)

    return factor


@SCHEDULERS.register("cosine")
@declare(WARMUP_EPOCHS, check=_warmup_problems)
def cosine(total_steps: int, steps_per_epoch: int, num_epochs: int, warmup_steps: int) -> Factor:
    """Half-cosine from 1 to 0 over the steps after warm-up (Loshchilov & Hutter, SGDR, ICLR 2017, no restarts)."""
    def factor(step: int) -> float:
        progress = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@SCHEDULERS.register("constant")
@declare(WARMUP_EPOCHS, check=_warmup_problems)
def constant(total_steps: int, steps_per_epoch: int, num_epochs: int, warmup_steps: int) -> Factor:
    """The base learning rate throughout (after warm-up)."""
    def factor(step: int) -> float:
        return 1.0

    return factor


def lr_lambda(schedule: Factor, warmup_steps: int) -> Factor:
    """``schedule`` with a linear warm-up: ``(step + 1) / warmup_steps`` times the factor for the first steps."""
    def with_warmup(step: int) -> float:
        scale = (step + 1) / warmup_steps if step < warmup_steps else 1.0
        return scale * schedule(step)

    return with_warmup
