"""``python train.py --list``: the generic flags (:mod:`metric_retrieval.training.flags`), then every registered
component of every kind (:data:`metric_retrieval.training.components.KINDS`) with its options.

Each entry prints the builder's keyword parameters with the builder's defaults as ``name(keyword: type = default,
...)`` (a keyword whose declared option states the same default is left to that option's line), then one line
per option it declares (:mod:`metric_retrieval.utils.options`): how it is set (its flag, ``--model_option``,
``--loss_option`` or a YAML node), type, default (a flag's ``None``: the builder's), range and help.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

from metric_retrieval.training.components import KINDS, Kind
from metric_retrieval.training.flags import train_flag_groups
from metric_retrieval.utils.options import Option, options_of


def _keywords(builder: Any, skip: tuple[str, ...]) -> list[str]:
    stated = {o.kwarg: o.default for o in options_of(builder)}
    if isinstance(builder, functools.partial):
        builder = builder.func
    try:
        params = list(inspect.signature(builder).parameters.values())
    except (TypeError, ValueError):
        return []
    out = []
    for p in params:
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or \
                (p.name in stated and stated[p.name] == p.default):
            continue
        kind = f": {p.annotation}" if p.annotation is not p.empty else ""
        default = f" = {p.default!r}" if p.default is not p.empty else ""
        out.append(f"{p.name}{kind}{default}")
    return out


def _option_line(k: Kind, name: str, option: Option) -> str:
    is_flag = k.flags and option.flag
    how = "/".join(option.spellings) if is_flag else k.set_by.format(name=name, option=option.name)
    text = f"      option {how}: {option.describe(with_default=k.flags)}"
    return f"{text}  ({option.help})" if option.help else text


def _flag_line(option: Option) -> str:
    text = f"      option {'/'.join(option.spellings)}: {option.describe()}"
    return f"{text}  ({option.help})" if option.help else text


def describe_components() -> str:
    """The listing printed by ``train.py --list``: the generic flags by group, then every component."""
    lines = ["generic flags (train.py --help):"]
    for title, options in train_flag_groups():
        lines.append(f"  {title}:")
        lines += [_flag_line(option) for option in options]
    for k in KINDS:
        lines.append(f"{k.title} ({'--' + k.key if k.key else 'each with its own switch'}):")
        for name, builder in k.registry.items():
            lines.append(f"  {name}({', '.join(_keywords(builder, k.skip))})")
            lines += [_option_line(k, name, option) for option in options_of(builder)]
    return "\n".join(lines)


__all__ = ["describe_components"]
