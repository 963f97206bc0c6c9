"""Atomic, checksummed checkpoints, RNG state capture, and rebuilding a model from a saved run.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over the
target (``os.replace`` is atomic on POSIX), so a run killed at any moment leaves either the previous
complete file or the new complete file, never a torn one. Every file carries a checksum of its payload
(``metric_retrieval.utils.io``), verified on load: a corrupt file is an error naming it, never loaded silently.

Files in a run folder:
- ``checkpoint_latest.pth``: everything needed to resume exactly (model, optimiser, scheduler, grad
  scaler, criterion incl. the embedding producer's state, progress (epoch and step, which also place the sampler), every
  rank's RNG states, best metric, config);
- ``checkpoint_prev.pth``: the checkpoint it replaced, the fallback of ``--resume latest`` when the
  latest one is corrupt;
- ``model_best.pth``: the selected model's weights with its config and inference recipe (what ``test.py`` loads);
- ``database_best.pth``: the feature database of that model (see ``metric_retrieval.retrieval.database``).
"""
from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import (
    CorruptFileError,
    atomic_save,
    load_verified,
    payload_digest,
    torch_file_problem,
)

__all__ = ["BEST_DATABASE", "BEST_MODEL", "LATEST", "PREVIOUS", "atomic_save", "load_file", "load_model",
           "load_resume", "model_config", "rng_state", "set_rng_state", "weights_digest"]

log = logging.getLogger("metric_retrieval")
LATEST = "checkpoint_latest.pth"
PREVIOUS = "checkpoint_prev.pth"
BEST_MODEL = "model_best.pth"
BEST_DATABASE = "database_best.pth"


def load_file(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint-like file onto the CPU with a clear error for a missing or corrupt file, or one that
    holds anything but tensors and plain data (:func:`metric_retrieval.utils.io.load_verified`: nothing in it
    runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    problem = torch_file_problem(path)
    if problem:
        raise UserError(f"checkpoint {path} {problem}; expected model_best.pth or checkpoint_latest.pth of a run")
    try:
        return load_verified(path, "checkpoint")
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes in name order: the identity of a model's weights."""
    return payload_digest({name: state_dict[name] for name in sorted(state_dict)})


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors, ints and tuples only (what ``torch.load(weights_only=True)`` reads):
    numpy's ``("MT19937", keys (624,) uint32, pos, has_gauss, cached_gaussian)`` keeps its keys as an int64
    tensor."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                      cached), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` (also an older checkpoint's, whose numpy keys are a numpy array)."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_resume(resume: str | None, output_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``--resume`` names, loaded and verified: ``None`` → no resume; ``latest`` → the run
    folder's latest checkpoint, or (with a warning) ``checkpoint_prev.pth`` when that one is missing or corrupt;
    else a path (a corrupt one is an error that offers the previous checkpoint next to it)."""
    if not resume:
        return None
    path = Path(output_dir) / LATEST if resume == "latest" else Path(resume)
    previous = path.parent / PREVIOUS
    if not path.is_file() and not (resume == "latest" and previous.is_file()):
        raise UserError(f"--resume {resume}: no checkpoint at {path}")
    try:
        return path, load_file(path)
    except CorruptFileError as err:
        if path == previous or not previous.is_file():
            raise
        if resume != "latest":
            raise UserError(f"{err}; the previous checkpoint {previous} may be intact: --resume {previous}") from None
        corrupt = path.with_name(path.name + ".corrupt")
        with contextlib.suppress(FileNotFoundError):  # another rank of the run moved it already
            path.replace(corrupt)  # kept for inspection; the next save must not rotate it over the good previous one
        reason = f"{err}; moved it to {corrupt.name}"
    except UserError as err:  # latest missing (killed between the two renames of a save)
        reason = err
    log.warning("%s; resuming from the previous checkpoint %s instead", reason, previous)
    return previous, load_file(previous)


def model_config(cfg: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """The subset of the run config that rebuilds the model (stored next to its weights)."""
    from metric_retrieval.training.builders import model_options  # local import: builders imports heavy packages

    return {"backbone": cfg["backbone_type"], "head": cfg["head"], "feature_dim": cfg["feature_dim"],
            "num_classes": num_classes, "options": model_options(cfg, for_inference=True)}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model saved by the trainer (``model_best.pth`` or a full checkpoint) in eval mode; an
    exported file (``.onnx``, ``.ts``: see ``export.py``) is loaded as it is, with its preprocessing settings.

    In the returned file dict, ``"recipe"`` is the model's validated
    :class:`~metric_retrieval.models.recipe.InferenceRecipe` (derived by
    :func:`~metric_retrieval.models.recipe.read_recipe` for a checkpoint written before recipes existed)."""
    from metric_retrieval import models
    from metric_retrieval.models.export import EXPORTED_SUFFIXES, load_exported
    from metric_retrieval.models.recipe import read_recipe

    if Path(path).suffix in EXPORTED_SUFFIXES:
        return load_exported(path)
    ckpt = load_file(path)
    if "model" not in ckpt or "model_config" not in ckpt:
        raise UserError(f"{path} is not a metric-retrieval checkpoint (expected keys 'model' and 'model_config')")
    mc = ckpt["model_config"]
    missing = [key for key in ("backbone", "head", "feature_dim", "num_classes", "options")
               if not isinstance(mc, dict) or key not in mc]
    if missing:
        raise UserError(f"{path}: its model_config lacks {', '.join(missing)}; it was not written by this project's "
                        "trainer (expected model_best.pth or checkpoint_latest.pth of a run)")
    model = models.build_model(mc["backbone"], mc["head"], mc["feature_dim"], mc["num_classes"], **mc["options"])
    models.load_model_state(model, ckpt["model"])
    ckpt["recipe"] = read_recipe(ckpt, path, model)
    return model.to(device).eval(), ckpt
