"""``build_model(backbone, head, feature_dim, num_classes, **options)`` → :class:`RetrievalModel`.

A retrieval model is a backbone (``metric_retrieval.models.backbones.BACKBONES``) plus a head
(``metric_retrieval.models.heads.HEADS``); ``forward(images)`` returns ``(embedding (B, D), logits (B, M) or None)``.
Options are routed by name to the backbone builder or the head constructor (the names equal the ``train.py`` flags:
``pretrained``, ``stage3_stride``, ``frozen_bn``, ``taps``, ``gd_config``, ``pooling``, ``use_se``, ``levels``,
``attention_activation``, ``embedding_norm``, ...) plus ``freeze_backbone`` (all backbone parameters
``requires_grad=False`` and BatchNorm frozen). A ``None`` value means "the default" and is dropped, so a CLI
can pass every flag (timm ``create_model`` convention); an option neither part accepts is a ``TypeError``
naming it and the valid ones, and a value outside what the part declares for it (:mod:`metric_retrieval.utils.options`:
type, choices, range) a ``ModelConfigError`` (:func:`option_problems`). A head's ``backbone_defaults`` (CGD/CLF:
``stage3_stride=1, frozen_bn=True``; baseline and regional attention: ``frozen_bn=True``)
apply unless the caller sets those options.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from metric_retrieval.models.backbones import BACKBONES, Backbone, InputSpec
from metric_retrieval.models.errors import ModelConfigError
from metric_retrieval.models.heads import HEADS, Head
from metric_retrieval.utils.options import Option, merge_options, options_of

__all__ = ["MODEL_OPTIONS", "RetrievalModel", "build_model", "declared_options", "flag_options", "list_models",
           "option_names", "option_problems", "options_from_config"]

_STRUCTURAL = ("self", "in_channels", "feature_dim", "num_classes")
# options of the model itself, whatever its parts (None: the head's ``freeze_backbone_default``)
MODEL_OPTIONS = (Option("freeze_backbone", bool, None, "requires_grad=False and frozen BatchNorm for the whole "
                                                        "backbone (default: the head's recipe)", flag=False),)
_MODEL_OPTIONS = tuple(o.name for o in MODEL_OPTIONS)


class RetrievalModel(nn.Module):
    """Backbone + head: ``forward(images (B, 3, H, W))`` → ``(embedding (B, D), logits (B, M) or None)``.

    Attributes:
        backbone, head: the two parts (separate parameter groups for the optimiser).
        feature_dim: D. num_classes: M (0 without a classifier). input_spec: how images must be normalised:
            the backbone's declaration, unless the head's recipe declares its own (ABIR). Every input path
            (training, evaluation, landmarks, external queries) builds its ``Normalize`` from it.
        config: the ``build_model`` arguments that rebuild this model (``pretrained`` excluded).
    """

    def __init__(self, backbone: Backbone, head: Head, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = dict(config or {})

    @property
    def feature_dim(self) -> int:
        return self.head.feature_dim

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def input_spec(self) -> InputSpec:
        return self.head.input_spec or self.backbone.input_spec

    @property
    def embedding_metric(self) -> str:
        """How embeddings are compared in kNN search: ``"ip"`` (cosine) when the head L2-normalises them,
        else ``"l2"`` (Euclidean, as Revisiting-DML's faiss evaluation compares un-normalised features); an
        inner product of un-normalised vectors would rank the gallery by vector length."""
        return "ip" if getattr(self.head, "embedding_norm", True) else "l2"

    def forward_features(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """The backbone output the head consumes: the last map, or the tapped maps for multi-level heads."""
        if self.head.uses_intermediates:
            return self.backbone.forward_intermediates(images)
        return self.backbone.forward_features(images)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, 3, H, W)`` → ``(embedding (B, D), logits (B, M) or None)``."""
        if self.head.uses_image_size:
            return self.head(self.forward_features(images), image_size=(int(images.shape[-2]), int(images.shape[-1])))
        return self.head(self.forward_features(images))


def _keywords(fn: Any) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _STRUCTURAL]


def option_names(backbone: str, head: str) -> dict[str, list[str]]:
    """Accepted option names: ``{"backbone": [...], "head": [...], "model": ["freeze_backbone"]}``."""
    return {"backbone": _keywords(BACKBONES.get(backbone)), "head": _keywords(HEADS.get(head)),
            "model": list(_MODEL_OPTIONS)}


def flag_options() -> dict[str, tuple[Option, list[str]]]:
    """The model's command-line flags: every option a backbone or head declares (:mod:`metric_retrieval.utils.options`),
    merged, with the components declaring each."""
    return merge_options((f"{kind} {name}", option) for kind, registry in (("backbone", BACKBONES), ("head", HEADS))
                         for name, component in registry.items() for option in options_of(component) if option.flag)


def declared_options(backbone: str, head: str) -> dict[str, Option]:
    """``{builder keyword: option}`` for every option ``backbone`` + ``head`` (registered names) and the model
    declare that :func:`build_model` takes by keyword (``to_builder``)."""
    parts = (*options_of(BACKBONES.get(backbone)), *options_of(HEADS.get(head)), *MODEL_OPTIONS)
    return {o.kwarg: o for o in parts if o.to_builder}


def option_problems(backbone: str, head: str, options: Mapping[str, Any], where: str = "model option") -> list[str]:
    """Why ``options`` (builder keyword → value) do not fit ``backbone`` + ``head``: a keyword neither part nor the
    model declares (listing the valid ones), or a value outside its declaration. ``pretrained`` is always taken."""
    declared = declared_options(backbone, head)
    problems = [f"{where} {key}: backbone {backbone} with head {head} takes no option {key!r}; valid options: "
                f"{', '.join(sorted(declared))}" for key in options if key not in declared and key != "pretrained"]
    return problems + _value_problems(declared, options, where)


def _value_problems(declared: dict[str, Option], options: Mapping[str, Any], where: str) -> list[str]:
    return [p for key, value in options.items() if key in declared and (p := declared[key].problem(value,
                                                                                                   f"{where} {key}"))]


def options_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`build_model` options from the model flags in ``cfg`` (a resolved config or a parsed namespace).

    Every set flag is passed, whichever backbone or head declares it, so :func:`build_model` rejects one the
    chosen pair does not take (an error, not a silently ignored flag); the chosen head ``cfg["head"]`` then
    translates its own ``to_builder=False`` options (:meth:`metric_retrieval.models.heads.Head.options_from_config`).
    """
    opts = {option.kwarg: cfg[name] for name, (option, _) in flag_options().items()
            if option.to_builder and cfg.get(name) is not None}
    opts.update(HEADS.get(cfg["head"]).options_from_config(dict(cfg)))
    return opts


def build_model(backbone: str, head: str, feature_dim: int | None = None, num_classes: int | None = None,
                **options: Any) -> RetrievalModel:
    """Build ``backbone`` + ``head`` (see the module docstring for option routing and defaults).

    Args:
        backbone: a ``BACKBONES`` name (``resnet50``, ``seresnet50``, ``vgg16``, ...).
        head: a ``HEADS`` name (``baseline``, ``cgd``, ``clf``, ``abir``, ``rmac``, ``regional_attention``,
            ``gem``).
        feature_dim: embedding width D (``None``: the head's default).
        num_classes: classifier outputs M for heads with a classifier (``None``/0: none).

    Raises:
        UnknownOptionError: unknown backbone or head name (lists the names).
        TypeError: an option neither the backbone nor the head accepts (lists the valid ones).
        ModelConfigError: an invalid option value (a ``UserError``/``ValueError``).
    """
    backbone_name, head_name = BACKBONES.canonical(backbone), HEADS.canonical(head)
    accepted = option_names(backbone_name, head_name)
    options = {k: v for k, v in options.items() if v is not None}
    valid = set(accepted["backbone"]) | set(accepted["head"]) | set(accepted["model"])
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"unknown model option(s) {', '.join(unknown)} for backbone {backbone_name!r} with "
                        f"head {head_name!r}; valid options: {', '.join(sorted(valid))}")
    bad = _value_problems(declared_options(backbone_name, head_name), options, "model option")
    if bad:
        raise ModelConfigError("; ".join(bad))
    head_cls = HEADS.get(head_name)
    backbone_kwargs = {k: v for k, v in options.items() if k in accepted["backbone"]}
    for key, value in head_cls.backbone_defaults.items():
        if key in accepted["backbone"]:
            backbone_kwargs.setdefault(key, value)
    head_kwargs = {k: v for k, v in options.items() if k in accepted["head"]}

    trunk = BACKBONES.get(backbone_name)(**backbone_kwargs)
    in_channels = ([info["num_chs"] for info in trunk.feature_info] if head_cls.uses_intermediates
                   else trunk.num_features)
    head_module = head_cls(in_channels=in_channels, feature_dim=feature_dim, num_classes=num_classes,
                           **head_kwargs)
    if options.get("freeze_backbone", head_cls.freeze_backbone_default):
        trunk.requires_grad_(False)
        trunk.frozen_bn = True
    config = {"backbone": backbone_name, "head": head_name, "feature_dim": feature_dim,
              "num_classes": num_classes, "options": {k: v for k, v in options.items() if k != "pretrained"}}
    model = RetrievalModel(trunk, head_module, config)
    model.train()  # applies frozen BatchNorm where configured
    return model


def _describe(fn: Any) -> str:
    parts = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in _STRUCTURAL or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        parts.append(f"{p.name}={p.default!r}" if p.default is not p.empty else p.name)
    return ", ".join(parts)


def list_models(print_out: bool = True) -> dict[str, dict[str, str]]:
    """Print (and return) every backbone and head with its options and defaults."""
    table = {"backbones": {name: _describe(BACKBONES.get(name)) for name in BACKBONES.names()},
             "heads": {name: _describe(HEADS.get(name)) for name in HEADS.names()}}
    if print_out:
        print("backbones:")
        for name, opts in table["backbones"].items():
            print(f"  {name:<16} {opts}")
        print("heads:")
        for name, opts in table["heads"].items():
            defaults = HEADS.get(name).backbone_defaults
            suffix = f"  [backbone defaults: {defaults}]" if defaults else ""
            print(f"  {name:<18} {opts}{suffix}")
        print(f"model options: {', '.join(_MODEL_OPTIONS)}")
    return table
