"""Any timm model as a backbone: ``--backbone_type timm:<name>`` (Wightman, "PyTorch Image Models", 2019).

``timm:resnet50``, ``timm:convnext_tiny``, ``timm:vit_small_patch16_224``, ``timm:vit_small_patch16_224.dino``
... are built with ``timm.create_model(name, num_classes=0, global_pool="")``.

* CNNs (ResNet, ConvNeXt, EfficientNet, ...) hand their last feature map ``(B, C, H', W')`` to the heads.
* ViT-style models (anything with ``num_prefix_tokens``: ViT, DeiT, DINO, EVA) return tokens ``(B, N, C)``;
  ``token_pool`` turns them into what the heads read: ``cls`` (class token), ``mean`` (mean of the patch
  tokens) or ``gem`` (GeM over the patch tokens, fixed ``token_gem_p``) as a ``(B, C, 1, 1)`` map, so a head's
  pooling is the identity and its layer is the projection to ``feature_dim`` (the ``token`` head: linear or
  identity; ``baseline``: linear); ``map`` reshapes the patch tokens to their ``(B, C, h, w)`` grid for the
  map heads (CGD, GeM, R-MAC).
* ``input_spec`` (mean, std, interpolation, input size) comes from the model's timm ``pretrained_cfg``, so
  the normalisation is the one its weights were trained with.

Weights (``pretrained``): ``True``/``"imagenet"``/``"timm"`` loads timm's weights from the local Hugging Face
cache (``HF_HUB_CACHE``; downloaded only where the machine can); a path to a ``.pth``/``.safetensors`` file
(or a state dict) is filtered like timm filters its own files (classifier dropped, position embeddings
resampled to ``img_size``) and then loaded strictly, naming missing and unexpected keys.

ViT recipe knobs: ``drop_path_rate`` (stochastic depth), ``freeze_blocks`` (patch/position embedding and
the first N blocks fixed), ``layer_decay`` (layer-wise learning-rate decay through timm's
``param_groups_layer_decay``, used by the optimiser via :meth:`TimmBackbone.param_groups`), ``img_size``
(position embeddings resampled once, at build time), ``dynamic_img_size`` (resampled per input size;
default on where the model supports it) and ``depth`` (fewer blocks, for small CPU runs).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from metric_retrieval.models.backbones.base import FROZEN_BN, TAPS, Backbone, InputSpec
from metric_retrieval.models.backbones.pretrained import torch_hub_file
from metric_retrieval.models.checkpoint import load_model_state, read_state_dict, unwrap_state_dict
from metric_retrieval.models.errors import ModelConfigError
from metric_retrieval.models.pooling import gem
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.lazy import lazy_module
from metric_retrieval.utils.options import Option, declare

# imported when a timm trunk is built or looked up: `--help` needs neither (about 1 s)
timm = lazy_module("timm")
timm_optim = lazy_module("timm.optim")
hf_hub = lazy_module("huggingface_hub")

__all__ = ["TOKEN_POOLS", "TimmBackbone", "cached_timm_weight_file", "timm_backbone"]

TOKEN_POOLS = ("cls", "mean", "gem", "map")
# the constructor options of a timm backbone (set with --model_option KEY=VALUE or its YAML node)
OPTIONS = (
    Option("drop_path_rate", float, 0.0, "stochastic-depth rate (timm drop_path_rate)", low=0.0, high=1.0,
           high_ok=False, flag=False),
    Option("token_pool", str, "cls", "ViTs: the token pooling", choices=TOKEN_POOLS, flag=False),
    Option("token_gem_p", float, 3.0, "ViTs: the GeM exponent of token_pool=gem", low=0.0, low_ok=False, flag=False),
    Option("img_size", int, None, "ViTs: build for this input size (position embeddings resampled once)", low=1,
           flag=False),
    Option("dynamic_img_size", bool, None, "ViTs: resample position embeddings to each input's size (default: on "
                                           "where the model supports it)", flag=False),
    Option("freeze_blocks", int, 0, "ViTs: freeze the embeddings and the first N blocks", low=0, flag=False),
    Option("layer_decay", float, None, "layer-wise lr decay factor (None: one learning rate for the trunk)", low=0.0,
           low_ok=False, high=1.0, flag=False),
    Option("depth", int, None, "ViTs: build with this many blocks instead of the model's own", low=1, flag=False),
)
_OFF = (None, False, "", "none", "None", "false", "False")
_TIMM_WEIGHTS = (True, "imagenet", "timm", "true", "True")


class TimmBackbone(Backbone):
    """A timm model without its classifier, behind the :class:`Backbone` contract.

    Args:
        name: timm model name, optionally with a pretrained tag (``vit_small_patch16_224.dino``).
        pretrained: see the module docstring (default random initialisation).
        frozen_bn: keep BatchNorm statistics fixed in ``train()`` (CNNs; LayerNorm is unaffected).
        drop_path_rate: stochastic-depth rate (timm ``drop_path_rate``).
        token_pool: ViTs only: ``cls``, ``mean``, ``gem`` or ``map`` (see the module docstring).
        token_gem_p: the GeM exponent of ``token_pool="gem"``.
        img_size: ViTs only: build for this input size (position embeddings resampled once).
        dynamic_img_size: ViTs only: resample position embeddings to each input's size (default: on where
            the model supports it).
        freeze_blocks: ViTs only: ``requires_grad=False`` for the embeddings and the first N blocks.
        layer_decay: layer-wise lr decay factor (e.g. 0.65); ``None`` = one learning rate for the trunk.
        depth: ViTs only: build with this many blocks instead of the model's own (timm's ``depth``; width,
            heads and patch size unchanged), e.g. a 4-block ViT-S/16 for CPU tests. Pretrained weights then
            have the removed blocks' keys left over and are refused.
        taps: accepted for the heads' uniform interface; only the last map (``features``) exists.
    """

    def __init__(self, name: str, pretrained: Any = False, frozen_bn: bool = False, drop_path_rate: float = 0.0,
                 token_pool: str = "cls", token_gem_p: float = 3.0, img_size: int | None = None,
                 dynamic_img_size: bool | None = None, freeze_blocks: int = 0, layer_decay: float | None = None,
                 depth: int | None = None, taps: list[str] | str | None = None) -> None:
        super().__init__(frozen_bn=frozen_bn)
        if not timm.is_model(name):
            raise ModelConfigError(f"timm has no model {name!r} (backbone timm:{name}); list the names with "
                                   "python -c \"import timm; print(timm.list_models('*vit*'))\"")
        if token_pool not in TOKEN_POOLS:
            raise ModelConfigError(f"token_pool must be one of {', '.join(TOKEN_POOLS)}, got {token_pool!r}")
        if layer_decay is not None and not 0.0 < float(layer_decay) <= 1.0:
            raise ModelConfigError(f"layer_decay must lie in (0, 1], got {layer_decay!r}")
        self.name, self.token_pool, self.token_gem_p = name, token_pool, float(token_gem_p)
        self.layer_decay = None if layer_decay is None else float(layer_decay)
        use_timm_weights = pretrained in _TIMM_WEIGHTS
        if depth is not None and int(depth) < 1:
            raise ModelConfigError(f"depth must be a positive number of blocks, got {depth!r}")
        self.net = _create(name, use_timm_weights, float(drop_path_rate), img_size, dynamic_img_size, depth)
        self.is_vit = hasattr(self.net, "num_prefix_tokens")
        if not self.is_vit and (token_pool != "cls" or img_size is not None or dynamic_img_size or depth):
            raise ModelConfigError(f"token_pool, img_size, dynamic_img_size and depth apply to ViT-style timm "
                                   f"models; {name} returns a feature map")
        self.num_features = int(self.net.num_features)
        cfg = self.net.pretrained_cfg
        input_size = tuple(cfg["input_size"]) if self.is_vit and not self._dynamic else None
        if input_size is not None and img_size is not None:
            input_size = (3, int(img_size), int(img_size))
        self.input_spec = InputSpec(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), colour="RGB",
                                    interpolation=cfg.get("interpolation", "bilinear"), input_size=input_size)
        self.stage_info = [dict(num_chs=self.num_features, reduction=_reduction(self.net), module="features")]
        self._set_taps(taps, ("features",))
        self.pretrained_source = f"timm {name} ({cfg.get('hf_hub_id') or cfg.get('url')})" if use_timm_weights \
            else None
        if not use_timm_weights and pretrained not in _OFF:
            self.pretrained_source = self._load_weights(pretrained)
        self._freeze(int(freeze_blocks))

    @property
    def _dynamic(self) -> bool:
        return bool(getattr(self.net, "dynamic_img_size", False))

    def _load_weights(self, pretrained: Any) -> str:
        """Load a local file or state dict the way timm loads its own (classifier dropped, filter applied)."""
        if isinstance(pretrained, Mapping):
            state, source = unwrap_state_dict(pretrained), "an in-memory state dict"
        elif isinstance(pretrained, (str, Path)):
            state, source = read_state_dict(pretrained), str(pretrained)
        else:
            raise UserError(f"pretrained for timm:{self.name} must be true, a .pth/.safetensors path or a state "
                            f"dict; got {pretrained!r}")
        if any(k.startswith("net.") for k in state):  # this class's own state dict
            state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        classifier = self.net.pretrained_cfg.get("classifier") or ()
        classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{c}." for c in classifier))}
        timm_filter = getattr(sys.modules[type(self.net).__module__], "checkpoint_filter_fn", None)
        if timm_filter is not None:  # e.g. ViT: resample position embeddings, convert original layouts
            try:
                state = timm_filter(state, self.net)
            except (KeyError, RuntimeError, ValueError) as err:
                raise UserError(f"the weights from {source} do not fit timm:{self.name} ({err})") from None
        load_model_state(self.net, state, what=source)
        return source

    def _freeze(self, blocks: int) -> None:
        if blocks == 0:
            return
        depth = len(getattr(self.net, "blocks", ()))
        if not self.is_vit or depth == 0:
            raise ModelConfigError(f"freeze_blocks applies to ViT-style timm models with .blocks; "
                                   f"timm:{self.name} has none")
        if not 0 < blocks <= depth:
            raise ModelConfigError(f"freeze_blocks must lie in [0, {depth}] for timm:{self.name}, got {blocks}")
        frozen = [self.net.patch_embed, *self.net.blocks[:blocks]]
        for module in frozen:
            module.requires_grad_(False)
        for attr in ("cls_token", "reg_token", "pos_embed"):
            param = getattr(self.net, attr, None)
            if isinstance(param, torch.nn.Parameter):
                param.requires_grad_(False)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimiser groups of the trainable trunk parameters: one group, or timm's layer-decayed groups
        (``lr · layer_decay^(depth − layer)``, no weight decay on biases and norms) with ``layer_decay``."""
        if self.layer_decay is None:
            return [{"name": "backbone", "params": [p for p in self.parameters() if p.requires_grad],
                     "lr": lr, "weight_decay": weight_decay}]
        groups = timm_optim.param_groups_layer_decay(self.net, weight_decay=weight_decay, layer_decay=self.layer_decay)
        return [{"name": f"backbone.{i}", "params": g["params"], "lr": lr * g.get("lr_scale", 1.0),
                 "weight_decay": g["weight_decay"]} for i, g in enumerate(groups) if g["params"]]

    def _stages(self):
        yield "features", self.forward_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` → ``(B, C, H', W')`` (CNN map, ViT patch grid, or ``(B, C, 1, 1)`` pooled token)."""
        out = self.net.forward_features(x)
        if not self.is_vit:
            if out.dim() != 4:
                raise ModelConfigError(f"timm:{self.name} returns features of shape {tuple(out.shape)}, not a "
                                       "(B, C, H, W) map; it is not supported as a backbone")
            return out
        prefix = self.net.num_prefix_tokens
        patches = out[:, prefix:]
        if self.token_pool == "cls":
            pooled = out[:, 0]
        elif self.token_pool == "mean":
            pooled = patches.mean(dim=1)
        elif self.token_pool == "gem":
            pooled = gem(patches.transpose(1, 2).unsqueeze(-1), p=self.token_gem_p)
        else:
            h, w = self._grid(x)
            return patches.transpose(1, 2).reshape(out.shape[0], out.shape[2], h, w)
        return pooled[:, :, None, None]

    def _grid(self, x: torch.Tensor) -> tuple[int, int]:
        embed = self.net.patch_embed
        if self._dynamic:
            return tuple(embed.dynamic_feat_size(x.shape[-2:]))
        return tuple(embed.grid_size)


def cached_timm_weight_file(name: str) -> Path | None:
    """The local file that ``timm.create_model(name, pretrained=True)`` would load, if it is already cached.

    timm loads from the Hugging Face hub when the model's ``pretrained_cfg`` has an ``hf_hub_id`` (its
    ``hf_hub_filename``, else ``model.safetensors`` before ``pytorch_model.bin``), otherwise from its ``url``
    through the torch hub cache. Nothing is downloaded; ``None`` for an unknown name or tag.
    """
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown pretrained tag: building the model says so
        return None
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]:
            hit = hf_hub.try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(hit, str):
                return Path(hit)
        return None
    path = torch_hub_file(cfg.url) if cfg.url else None
    return path if path is not None and path.is_file() else None


def _create(name: str, pretrained: bool, drop_path_rate: float, img_size: int | None,
            dynamic_img_size: bool | None, depth: int | None = None) -> torch.nn.Module:
    """``timm.create_model`` without classifier; ViT size options tried first where not forced."""
    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": "", "drop_path_rate": drop_path_rate}
    vit_kwargs = {k: v for k, v in (("img_size", img_size), ("dynamic_img_size", dynamic_img_size),
                                    ("depth", None if depth is None else int(depth))) if v is not None}
    default = {"dynamic_img_size": True} if img_size is None and dynamic_img_size is None else {}
    try:
        try:
            return timm.create_model(name, pretrained=pretrained, **kwargs, **default, **vit_kwargs)
        except TypeError:
            if vit_kwargs:  # the user asked for ViT options on a model that has none
                raise ModelConfigError(f"timm:{name} does not accept {', '.join(vit_kwargs)}") from None
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as err:  # not in the HF cache and no network, or a corrupt cached file
        if not pretrained:
            raise
        raise UserError(f"could not load the timm weights of {name} from the local Hugging Face cache "
                        f"(HF_HUB_CACHE) or the hub: {err}; put them in the cache or pass pretrained=PATH to a "
                        ".pth/.safetensors file") from None


def _reduction(net: torch.nn.Module) -> int:
    info = getattr(net, "feature_info", None)
    if info:
        last = info[-1]
        return int(last["reduction"] if isinstance(last, dict) else getattr(last, "reduction", 32))
    patch = getattr(getattr(net, "patch_embed", None), "patch_size", (32,))
    return int(patch[0])


@declare(FROZEN_BN, *OPTIONS, TAPS)
def timm_backbone(name: str, pretrained: Any = False, frozen_bn: bool = False, drop_path_rate: float = 0.0,
                  token_pool: str = "cls", token_gem_p: float = 3.0, img_size: int | None = None,
                  dynamic_img_size: bool | None = None, freeze_blocks: int = 0, layer_decay: float | None = None,
                  depth: int | None = None, taps: list[str] | str | None = None) -> TimmBackbone:
    """``timm:<name>``; see :class:`TimmBackbone` for the options."""
    return TimmBackbone(name, pretrained=pretrained, frozen_bn=frozen_bn, drop_path_rate=drop_path_rate,
                        token_pool=token_pool, token_gem_p=token_gem_p, img_size=img_size,
                        dynamic_img_size=dynamic_img_size, freeze_blocks=freeze_blocks, layer_decay=layer_decay,
                        depth=depth, taps=taps)
