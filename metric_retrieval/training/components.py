"""The registries ``train.py`` composes, and everything assembled from their components' declared options.

Each :class:`Kind` is one registry and the flag that selects a component from it. Every registered
component declares its own options (:mod:`metric_retrieval.utils.options`); from those declarations come the
``train.py`` flags (one argument group per kind; an option several components share is one flag whose help names them),
the range checks, each selected component's own ``check_config(cfg)`` problems, the keyword options it is
built with, and the ``train.py --list`` entries. A model part's constructor options (``flag=False``) are no flags:
``--model_option KEY=VALUE`` (or the part's YAML node) sets them, checked against the selected backbone's and
head's declarations (:func:`model_option_problems`). Nothing here names a component.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from metric_retrieval import data, evaluation, losses, models, optim, producers, samplers
from metric_retrieval.utils.options import Option, builder_kwargs, merge_options, options_of
from metric_retrieval.utils.parsing import parse_key_values
from metric_retrieval.utils.registry import Registry

__all__ = ["KINDS", "Kind", "add_component_args", "check_selected", "declared", "kind", "component_kwargs",
           "model_option_problems", "option_problems", "samples_whole_classes", "selected"]


@dataclass(frozen=True)
class Kind:
    """One registry as ``train.py`` sees it.

    ``key`` is the config key (flag) naming the selected component (``None``: every component is consulted,
    each with its own switch, as embedding producers are); ``flags`` says whether its declared options are
    flags of their own (loss and miner hyper-parameters are instead set per term, ``--loss_option
    LOSS.KEY=VALUE`` or the YAML term list, since one run may combine several losses); ``strict``: a
    non-default value of an option the selected component does not declare is an error. ``skip`` are the
    builder parameters the framework fills in (left out of the listing); ``set_by`` says how an option of a
    kind without flags, or of an option that is no flag (``flag=False``), is set (``{name}``, ``{option}``
    filled in).
    """

    title: str
    noun: str
    key: str | None
    registry: Registry
    skip: tuple[str, ...] = ()
    flags: bool = True
    strict: bool = False
    set_by: str = ""


KINDS: tuple[Kind, ...] = (
    Kind("datasets", "dataset", "data_name", data.DATASETS, ("root",), strict=True),
    Kind("augmentation presets", "preset", "transform", data.TRANSFORMS, ("train", "image_size")),
    Kind("backbones", "backbone", "backbone_type", models.BACKBONES, ("name", "pretrained"),  # name: of a family
         set_by="--model_option {option}=VALUE or backbone_type: {{name: {name}, {option}: VALUE}}"),  # member
    Kind("heads", "head", "head", models.HEADS, ("in_channels", "feature_dim", "num_classes"),
         set_by="--model_option {option}=VALUE or head: {{name: {name}, {option}: VALUE}}"),
    Kind("losses", "loss", "loss", losses.LOSSES, ("num_classes", "embedding_dim", "class_counts"), flags=False,
         set_by="--loss_option {name}.{option}=VALUE"),
    Kind("miners", "miner", "miner", losses.MINERS, ("generator",), flags=False,
         set_by="miner: {{name: {name}, {option}: VALUE}} (YAML, top level or in a loss term)"),
    Kind("batch samplers", "sampler", "sampler", samplers.SAMPLERS,
         ("labels", "batch_size", "seed", "rank", "world_size")),
    Kind("embedding producers", "producer", None, producers.PRODUCERS, ("num_classes", "embedding_dim")),
    Kind("optimisers", "optimizer", "optimizer", optim.OPTIMIZERS, ("groups", "lr")),
    Kind("learning-rate schedules", "scheduler", "scheduler", optim.SCHEDULERS,
         ("total_steps", "steps_per_epoch", "num_epochs", "warmup_steps")),
    Kind("kNN back-ends", "kNN back-end", "knn_backend", evaluation.KNN_BACKENDS),
)


def kind(key: str) -> Kind:
    """The kind selected by config key ``key``."""
    return next(k for k in KINDS if k.key == key)


def declared(k: Kind) -> dict[str, tuple[Option, list[str]]]:
    """``{option name: (option, [names of the components declaring it])}`` over every component of ``k`` (its
    options that are flags)."""
    return merge_options((name, option) for name, component in k.registry.items()
                         for option in options_of(component) if option.flag)


def add_component_args(parser: argparse.ArgumentParser) -> None:
    """One argument group per kind with the flags its components declare."""
    for k in KINDS:
        if not k.flags:
            continue
        options = declared(k)
        if options:
            group = parser.add_argument_group(f"{k.title}: their own options")
            for option, users in options.values():
                option.add_to(group, f"{k.noun} {', '.join(users)}")


def selected(k: Kind, cfg: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(name, component)`` the config selects from ``k`` (every component when ``k`` has no key; names that
    are not registered are left out: the name checks report them)."""
    if k.key is None:
        return k.registry.items()
    value = cfg.get(k.key)
    names = [value] if isinstance(value, str) else []
    return [(n, k.registry.get(n)) for n in names if n in k.registry]


def used_options(cfg: dict[str, Any]) -> set[str]:
    """Names of the declared options that the components ``cfg`` selects take."""
    return {o.name for k in KINDS if k.flags for _, component in selected(k, cfg) for o in options_of(component)}


def unused_options(cfg: dict[str, Any]) -> set[str]:
    """The declared option flags that no component ``cfg`` selects takes (their values change nothing)."""
    used = used_options(cfg)
    return {name for k in KINDS if k.flags for name in declared(k) if name not in used}


def option_problems(cfg: dict[str, Any], explicit: Iterable[str] = ()) -> list[str]:
    """Declared options whose value is out of range or not a choice; options that no selected component takes
    but that were given (``explicit``: the command line's flags and the YAML keys) or, for strict kinds, that
    hold a non-default value; ``--model_option`` problems (:func:`model_option_problems`)."""
    problems = model_option_problems(cfg)
    explicit = set(explicit)
    used = used_options(cfg)
    for k in KINDS:
        if not k.flags:
            continue
        options = declared(k)
        problems += [p for option, _ in options.values() if (p := option.problem(cfg.get(option.name)))]
        if k.key is not None and not selected(k, cfg):
            continue  # an unknown name: the name checks report it
        for name, (option, users) in options.items():
            given = name in explicit or (k.strict and cfg.get(name) not in (None, option.default))
            if given and name not in used:
                problems.append(f"--{name} {cfg[name]} works only for the {k.title} that take it "
                                f"({', '.join(users)}), not --{k.key} {cfg[k.key]}; drop it or choose one of those")
    return problems


def model_option_problems(cfg: dict[str, Any]) -> list[str]:
    """``--model_option KEY=VALUE`` entries that the selected backbone, head and the model do not declare, or
    whose value breaks the declaration (:func:`models.option_problems`); none while a name is unknown (the name
    checks report it)."""
    backbone, head = cfg.get("backbone_type"), cfg.get("head")
    if backbone not in models.BACKBONES or head not in models.HEADS:
        return []
    options = parse_key_values(cfg.get("model_option") or [], "--model_option")
    return models.option_problems(models.BACKBONES.canonical(backbone), models.HEADS.canonical(head), options,
                                  "--model_option")


def check_selected(cfg: dict[str, Any]) -> list[str]:
    """The selected components' own checks (``check_config(cfg) -> problems``; every producer's)."""
    return [p for k in KINDS if k.flags for _, component in selected(k, cfg)
            for p in getattr(component, "check_config", lambda _cfg: [])(cfg)]


def samples_whole_classes(cfg: dict[str, Any]) -> bool:
    """Whether the selected sampler draws whole classes (it takes ``--samples_per_class``)."""
    return any(o.name == "samples_per_class" for _, c in selected(kind("sampler"), cfg) for o in options_of(c))


def component_kwargs(key: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword options the component selected by ``key`` is built with, from its declared options."""
    return builder_kwargs(kind(key).registry.get(cfg[key]), cfg)
