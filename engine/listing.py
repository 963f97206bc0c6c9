"""``python train.py --list``: every registered component and its options, read from the registries.

Options are each builder's keyword parameters with their annotation and default (the constructor is the
component's declaration); components that add their own flags (embedding producers, heads) list those too.
"""
from __future__ import annotations

import argparse
import inspect
from typing import Any

import data
import evaluation
import losses
import models
import producers
import samplers
from utils.registry import Registry

# (title, registry, parameters filled in by the framework rather than chosen by the user)
SECTIONS: tuple[tuple[str, Registry, tuple[str, ...]], ...] = (
    ("datasets (--data_name)", data.DATASETS, ("root",)),
    ("augmentation presets (--transform)", data.TRANSFORMS, ("train", "image_size")),
    ("backbones (--backbone_type)", models.BACKBONES, ()),
    ("heads (--head)", models.HEADS, ("in_channels", "feature_dim", "num_classes")),
    ("losses (--loss)", losses.LOSSES, ("num_classes", "embedding_dim", "class_counts")),
    ("miners (--miner)", losses.MINERS, ()),
    ("batch samplers (--sampler)", samplers.SAMPLERS, ("labels", "batch_size", "seed", "rank", "world_size")),
    ("embedding producers", producers.PRODUCERS, ("num_classes", "embedding_dim")),
    ("kNN back-ends (--knn_backend)", evaluation.KNN_BACKENDS, ()),
)


def _options(builder: Any, skip: tuple[str, ...]) -> list[str]:
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return []
    out = []
    for p in params:
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = f": {p.annotation}" if p.annotation is not p.empty else ""
        default = f" = {p.default!r}" if p.default is not p.empty else ""
        out.append(f"{p.name}{kind}{default}")
    return out


def _flags(builder: Any) -> list[str]:
    add_args = getattr(builder, "add_args", None)
    if add_args is None:
        return []
    group = argparse.ArgumentParser(add_help=False).add_argument_group()
    add_args(group)
    return [f"{'/'.join(a.option_strings)} (default {a.default!r})" for a in group._group_actions]


def describe_components() -> str:
    """The listing printed by ``train.py --list``."""
    lines = []
    for title, registry, skip in SECTIONS:
        lines.append(f"{title}:")
        for name in registry.names():
            builder = registry.get(name)
            lines.append(f"  {name}({', '.join(_options(builder, skip))})")
            lines += [f"      flag {flag}" for flag in _flags(builder)]
    return "\n".join(lines)


__all__ = ["SECTIONS", "describe_components"]
