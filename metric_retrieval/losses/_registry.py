"""The loss and miner registries (kept apart from ``losses/__init__.py`` so loss modules can import them)."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from metric_retrieval.utils.registry import Registry

LOSSES = Registry("loss")
MINERS = Registry("miner")



def accepted_kwargs(fn: Any) -> tuple[set[str], bool]:
    """Keyword names a constructor accepts and whether it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_kwargs(kind: str, name: str, fn: Any, kwargs: Mapping[str, Any]) -> None:
    """``TypeError`` naming ``kind`` ``name`` and what it accepts if ``kwargs`` holds an unknown key."""
    names, var_kw = accepted_kwargs(fn)
    unknown = sorted(set(kwargs) - names)
    if unknown and not var_kw:
        raise TypeError(
            f"{kind} {name!r} got unknown hyper-parameter(s) {unknown}; it accepts: {', '.join(sorted(names))}"
        )


def build_loss(name: str, runtime: Mapping[str, Any] | None = None, **hparams: Any) -> nn.Module:
    """Build registered loss ``name`` from user ``hparams``.

    ``runtime`` kwargs (``num_classes``, ``embedding_dim``, ``class_counts``: what the trainer knows) are passed
    only where the constructor declares them and never override the user's. An unknown name lists the known
    ones; an unknown hparam is a ``TypeError`` naming the loss and what it accepts.
    """
    cls = LOSSES.get(name)
    check_kwargs("loss", name, cls, hparams)
    names, _ = accepted_kwargs(cls)
    kwargs = {k: v for k, v in (runtime or {}).items() if k in names and v is not None and k not in hparams}
    return cls(**kwargs, **hparams)


__all__ = ["LOSSES", "MINERS", "accepted_kwargs", "build_loss", "check_kwargs"]
