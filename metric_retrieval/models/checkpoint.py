"""Loading weights into models with errors that say exactly what does not match.

* :func:`unwrap_state_dict` accepts a bare state dict or a checkpoint dict holding one under ``state_dict``
  or ``model`` and strips DataParallel/DDP ``module.`` prefixes.
* :func:`read_state_dict` reads such a file from disk (:func:`metric_retrieval.utils.io.load_verified`: raw-byte
  checksum when present, ``weights_only=True``; or ``safetensors`` for ``*.safetensors``).
* :func:`load_model_state` loads strictly; on any mismatch it raises :class:`metric_retrieval.utils.errors.UserError`
  listing the missing keys, the unexpected keys and every shape mismatch (name, checkpoint and model shapes).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import load_verified, torch_file_problem

__all__ = ["load_model_state", "read_state_dict", "state_dict_mismatches", "unwrap_state_dict"]

_WRAPPER_KEYS = ("state_dict", "model")
_MAX_LISTED = 40


def unwrap_state_dict(obj: Mapping) -> dict[str, torch.Tensor]:
    """The tensor mapping inside ``obj`` with ``module.`` prefixes removed.

    ``obj`` is a state dict, or a dict with the state dict under ``"state_dict"`` or ``"model"``
    (checked in that order, also nested: a trainer checkpoint ``{"model": {...}, "optimizer": ...}``).
    """
    if not isinstance(obj, Mapping):
        raise UserError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and not isinstance(inner, torch.Tensor):
            return unwrap_state_dict(inner)
    out: dict[str, torch.Tensor] = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"entry {name!r} of the state dict is a {type(value).__name__}, not a tensor; "
                            f"expected a state dict or a dict with one under {' or '.join(_WRAPPER_KEYS)!r}")
        while name.startswith("module."):
            name = name[len("module."):]
        out[name] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state-dict file (see :func:`unwrap_state_dict` for the accepted layouts) onto the CPU."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"weights file not found: {path} (expected a PyTorch state-dict file, e.g. *.pth, "
                        "or *.safetensors)")
    problem = None if path.suffix == ".safetensors" else torch_file_problem(path)
    if problem:
        raise UserError(f"weights file {path} {problem}; expected a state-dict file (e.g. *.pth)")
    try:
        if path.suffix == ".safetensors":
            obj = safetensors.torch.load_file(str(path), device="cpu")
        else:
            obj = load_verified(path, "weights file")
    except UserError:
        raise
    except Exception as err:  # corrupt file, pickle of arbitrary objects, not a torch file
        raise UserError(f"cannot read weights file {path}: {err}") from None
    return unwrap_state_dict(obj)


def state_dict_mismatches(model: nn.Module, state_dict: Mapping[str, torch.Tensor]
                          ) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """``(missing, unexpected, shape_mismatches)`` of ``state_dict`` against ``model.state_dict()``.

    BatchNorm ``num_batches_tracked`` buffers absent from old checkpoints (torchvision's and Cadene's
    ImageNet files predate them) are not reported as missing: :func:`load_model_state` fills them in.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(state_dict[k].shape), tuple(own[k].shape))
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, shapes


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f", ... ({len(items) - len(shown)} more)" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}): {', '.join(shown)}{more}"


def load_model_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                     what: str | None = None) -> None:
    """Load ``state_dict`` into ``model`` strictly (values copied exactly, dtype/device of the model kept).

    Raises:
        UserError: listing missing keys, unexpected keys and shape mismatches (``name: checkpoint (a, b)
            vs model (c, d)``); ``what`` names the source in the message (e.g. a file path).
    """
    state_dict = unwrap_state_dict(state_dict)
    missing, unexpected, shapes = state_dict_mismatches(model, state_dict)
    if missing or unexpected or shapes:
        lines = [f"the weights{f' from {what}' if what else ''} do not match {type(model).__name__}:"]
        if missing:
            lines.append(_listing("missing keys", missing))
        if unexpected:
            lines.append(_listing("unexpected keys", unexpected))
        if shapes:
            lines.append(_listing("shape mismatches",
                                  [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in shapes]))
        raise UserError("\n".join(lines))
    own = model.state_dict()
    filled = dict(state_dict)
    for key, value in own.items():
        if key not in filled:  # only num_batches_tracked can get here
            filled[key] = value.clone()
    model.load_state_dict(filled, strict=True)
