"""Export a :class:`models.RetrievalModel` to ONNX or TorchScript, load it back, and check its parity.

The exported graph is :class:`ExportGraph`: normalised images ``(B, 3, H, W)`` float32 → the embedding ``(B, D)``
exactly as the model gives it (L2-normalised when its recipe says so) and, with ``logits=True``, the classifier
logits ``(B, M)``. The batch dimension is dynamic; the spatial size is fixed at export time (R-MAC and regional
attention compute their region grids from it in Python, and one rule for every model keeps the file simple to
use). The JSON beside the file holds the model's inference recipe
(:class:`~metric_retrieval.models.recipe.InferenceRecipe`: size, resize/crop, normalisation, metric), which is
what this project reads back, and the same preprocessing spelled out for users without this project.

ONNX goes through ``torch.onnx.export(dynamo=True)`` and runs with onnxruntime; TorchScript through
``torch.jit.trace`` and runs with ``torch.jit.load``. :func:`parity` compares an exported model with the
PyTorch one on the same images: the largest absolute difference of the embeddings and the agreement of the
top-10 retrieval lists by the recipe's metric (mean overlap of each image's 10 nearest neighbours among the
images).

:func:`export_with_parity` is what ``export.py`` runs: the model and its JSON are written under temporary names,
the parity check runs on those files, and only a file that passed is renamed to its final name (the model first,
then its JSON). The JSON stores the SHA-256 of the model's bytes (``model_sha256``) and of its own contents
(``sha256``); :func:`load_exported` checks both, so an edited model file or edited preprocessing is refused, and
a model renamed without its JSON (a kill between the two renames) does not match the older JSON beside it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metric_retrieval.models.backbones.base import InputSpec
from metric_retrieval.models.heads.base import l2n
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import file_sha256

__all__ = ["EXPORTED_SUFFIXES", "FORMATS", "ExportGraph", "ExportedModel", "export_model", "export_with_parity",
           "load_exported", "parity", "preprocessing_path", "spec_digest", "write_preprocessing"]

FORMATS = ("onnx", "torchscript")
EXPORTED_SUFFIXES = {".onnx": "onnx", ".ts": "torchscript", ".torchscript": "torchscript"}


class ExportGraph(nn.Module):
    """The exported computation: ``images → embedding`` (``, logits`` with ``logits=True``)."""

    def __init__(self, model: nn.Module, logits: bool = False) -> None:
        super().__init__()
        if logits and not getattr(model, "num_classes", 0):
            raise UserError("--logits: this model has no classifier (num_classes 0); export the embedding only")
        self.model, self.logits = model, bool(logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        embedding, logits = self.model(images)
        embedding = embedding.float()
        return (embedding, logits.float()) if self.logits else embedding


def export_model(model: nn.Module, fmt: str, out: str | Path, image_size: int, logits: bool = False) -> Path:
    """Write ``model`` (eval mode, CPU) as ``fmt`` to ``out`` atomically; returns the path.

    Raises:
        UserError: unknown format, or the model cannot be exported in that format (the message names the
            backbone and head and the exporter's reason).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportGraph(model.cpu().eval(), logits).eval()
    example = torch.randn(2, 3, image_size, image_size)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    names = ["embedding", "logits"] if logits else ["embedding"]
    config = getattr(model, "config", {})
    what = f"backbone {config.get('backbone', '?')} with head {config.get('head', '?')}"
    try:
        if fmt == "onnx":
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(wrapper, (example,), str(tmp), input_names=["images"], output_names=names,
                              dynamic_shapes={"images": {0: batch}}, dynamo=True, external_data=False,
                              verbose=False)
        else:
            with torch.no_grad(), warnings.catch_warnings():
                # the spatial size is fixed by design (region grids read it as ints): not a user's concern
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(wrapper, example, check_trace=False)
            traced.save(str(tmp))
    except UserError:
        raise
    except Exception as err:  # the exporters raise many types; the reason is in the first line
        tmp.unlink(missing_ok=True)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        other = "torchscript" if fmt == "onnx" else "onnx"
        raise UserError(f"{what} cannot be exported to {fmt} at {image_size}x{image_size}: {reason} "
                        f"(try --format {other})") from None
    os.replace(tmp, out)
    return out


def preprocessing_path(model_path: str | Path) -> Path:
    """Where the preprocessing JSON of an exported model lives: ``model.onnx`` → ``model.onnx.json``."""
    path = Path(model_path)
    return path.with_name(f"{path.name}.json")


def write_preprocessing(model_path: str | Path, fmt: str, model: nn.Module, recipe: InferenceRecipe,
                        logits: bool, name: str | None = None) -> Path:
    """Write the JSON beside an exported file: its ``recipe`` (what this project reads back) and the same
    preprocessing spelled out for a user without this project (``preprocess``: the normalisation of the recipe's
    ``input_spec`` as ``(x / 255 − mean) / std`` per channel in ``channel_order``, and the evaluation resize/crop
    as text); ``name`` is the model file's final name (default: ``model_path``'s).
    """
    size, normalize = recipe.image_size, recipe.normalize()
    outputs = {"embedding": {"shape": ["batch", recipe.embedding_dim], "l2_normalised": recipe.normalized,
                             "metric": recipe.metric}}
    if logits:
        outputs["logits"] = {"shape": ["batch", model.num_classes]}
    spec = {
        "format": fmt, "file": name or Path(model_path).name,
        "input": {"name": "images", "shape": ["batch", 3, size, size], "dtype": "float32", "layout": "NCHW",
                  "fixed_spatial_size": True},
        "outputs": outputs,
        "preprocess": {"transform": recipe.transform, "image_size": size, "pipeline": str(recipe.eval_transform()),
                       "channel_order": "BGR" if normalize.bgr else "RGB",
                       "formula": "(pixel / 255 - mean) / std per channel, pixels uint8 in channel_order",
                       "mean": list(normalize.mean), "std": list(normalize.std)},
        "recipe": recipe.to_dict(),
        "model": getattr(model, "config", {}),
        "model_sha256": file_sha256(model_path),
    }
    spec = json.loads(json.dumps(spec, default=list))
    spec["sha256"] = spec_digest(spec)
    path = preprocessing_path(model_path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(spec, indent=2))
    os.replace(tmp, path)
    return path


def spec_digest(spec: dict[str, Any]) -> str:
    """SHA-256 of a preprocessing JSON's contents without its own ``sha256`` (keys sorted)."""
    return hashlib.sha256(json.dumps({k: v for k, v in spec.items() if k != "sha256"}, sort_keys=True).encode()
                          ).hexdigest()


class ExportedModel(nn.Module):
    """An exported file behind the :class:`RetrievalModel` call contract: ``images → (embedding, logits)``.

    ``logits`` is ``None`` when the file has no logits output. Runs on the CPU (onnxruntime's CPU provider
    or TorchScript); inputs on another device are moved to the CPU and the outputs moved back.
    ``input_spec``, ``feature_dim`` and ``embedding_metric`` are those of ``recipe`` (from the JSON beside it).
    """

    def __init__(self, path: str | Path, recipe: InferenceRecipe) -> None:
        super().__init__()
        self.recipe: InferenceRecipe = recipe
        self.input_spec: InputSpec = recipe.input_spec
        self.feature_dim, self.embedding_metric = recipe.embedding_dim, recipe.metric
        path = Path(path)
        if not path.is_file():
            raise UserError(f"exported model not found: {path}")
        fmt = EXPORTED_SUFFIXES.get(path.suffix)
        if fmt is None:
            raise UserError(f"{path}: unknown exported-model suffix; expected one of {', '.join(EXPORTED_SUFFIXES)}")
        self.path, self.format = path, fmt
        try:
            if fmt == "onnx":
                import onnxruntime

                self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                self.outputs = [o.name for o in self.session.get_outputs()]
            else:
                self.module = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # corrupt or foreign file
            raise UserError(f"cannot load exported model {path}: {str(err).strip().splitlines()[0]}") from None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = images.device
        x = images.detach().float().cpu().contiguous()
        if self.format == "onnx":
            outs = [torch.from_numpy(o) for o in self.session.run(None, {"images": x.numpy()})]
        else:
            with torch.no_grad():
                result = self.module(x)
            outs = list(result) if isinstance(result, (tuple, list)) else [result]
        return outs[0].to(device), (outs[1].to(device) if len(outs) > 1 else None)


def load_exported(path: str | Path) -> tuple[ExportedModel, dict[str, Any]]:
    """The exported model and a checkpoint-like dict ``{"config": {}, "recipe": InferenceRecipe, "export": JSON}``
    (the recipe read from the JSON beside the model, which must exist; a JSON written before recipes existed is
    refused: export the model again)."""
    spec_path = preprocessing_path(path)
    if not Path(path).is_file():
        raise UserError(f"exported model not found: {path}")
    if not spec_path.is_file():
        raise UserError(f"{path} has no preprocessing file {spec_path} (export.py writes it beside the model)")
    try:
        spec = json.loads(spec_path.read_text())
        if spec.get("sha256") != spec_digest(spec):
            raise UserError(f"{spec_path} does not match its checksum (edited or damaged): export the model again")
        if spec.get("model_sha256") != file_sha256(path):
            raise UserError(f"{path} does not match the checksum its preprocessing file {spec_path.name} records "
                            "(the model file was edited, damaged, or belongs to another export): export it again")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{spec_path} is not an export.py preprocessing file ({err})") from None
    if not isinstance(spec, dict) or "recipe" not in spec:
        raise UserError(f"{spec_path} predates inference recipes (it names no metric, and its model always "
                        "L2-normalised): export the model again")
    recipe = InferenceRecipe.from_dict(spec["recipe"], spec_path)
    return ExportedModel(path, recipe).eval(), {"config": {}, "recipe": recipe, "export": spec}


def parity(reference: nn.Module, exported: nn.Module, images: torch.Tensor, k: int = 10, metric: str = "ip"
           ) -> dict[str, float]:
    """``{"max_abs_diff", "min_cosine", "top10_agreement"}`` of two models' embeddings on ``images``.

    ``max_abs_diff`` and ``min_cosine`` compare the L2-normalised embeddings (their directions);
    ``top10_agreement`` is the mean over images of |top-k(reference) ∩ top-k(exported)| / k, where top-k are
    the k nearest other images of the embeddings as output, by ``metric`` (``ip``: largest inner product;
    ``l2``: smallest Euclidean distance; k is capped at N − 1).
    """
    with torch.no_grad():
        raw = [model(images)[0].float() for model in (reference, exported)]
    ref, exp = (l2n(e) for e in raw)
    k = min(k, len(images) - 1)
    agreement = 1.0
    if k > 0:
        eye = torch.eye(len(images), dtype=torch.bool)
        near = [(e @ e.t()) if metric == "ip" else -torch.cdist(e, e) for e in raw]
        top = [s.masked_fill(eye, -float("inf")).topk(k, dim=1).indices for s in near]
        agreement = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(*top)) / (k * len(images))
    return {"max_abs_diff": float((ref - exp).abs().max()), "min_cosine": float((ref * exp).sum(1).min()),
            "top10_agreement": float(agreement)}


def _remove_stale_exports(out: Path) -> None:
    """Delete the temporary files of an export of ``out`` killed earlier (their process is gone)."""
    for path in out.parent.glob(f".{out.stem}.tmp*"):
        found = re.match(rf"\.{re.escape(out.stem)}\.tmp(\d+)", path.name)
        if found and not _alive(int(found.group(1))):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def export_with_parity(model: nn.Module, fmt: str, out: str | Path, recipe: InferenceRecipe, logits: bool,
                       images: Callable[[], torch.Tensor], atol: float, min_agreement: float
                       ) -> tuple[Path, Path, dict[str, float]]:
    """Export ``model`` at its ``recipe``'s image size to ``out`` and its JSON (with the recipe) beside it,
    renamed into place only after :func:`parity` on ``images()`` passed (``max_abs_diff <= atol`` and
    ``top10_agreement >= min_agreement``).

    Returns ``(model path, JSON path, parity result with its image count under "images")``. A failed check, a
    folder given as ``out`` or a folder that cannot be written is a :class:`UserError`; no file is left under a
    final or temporary name.
    """
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; expected a file name such as {out / 'model.onnx'}")
    if out.suffix not in EXPORTED_SUFFIXES:
        raise UserError(f"--out {out}: expected a file name ending in {', '.join(EXPORTED_SUFFIXES)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.with_name(f".{out.stem}.tmp{os.getpid()}.probe")
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserError(f"--out {out}: cannot write in {out.parent} ({err.strerror or err})") from None
    _remove_stale_exports(out)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
    try:
        export_model(model, fmt, tmp, recipe.image_size, logits=logits)
        spec = write_preprocessing(tmp, fmt, model, recipe, logits, name=out.name)
        exported, _ = load_exported(tmp)
        batch = images()
        result = {**parity(model, exported, batch, metric=recipe.metric), "images": len(batch)}
        if result["max_abs_diff"] > atol or result["top10_agreement"] < min_agreement:
            raise UserError(f"the exported model differs from PyTorch beyond the tolerance (max |diff| "
                            f"{result['max_abs_diff']:.2e} vs --atol {atol:g}, top-10 agreement "
                            f"{result['top10_agreement']:.4f} vs --min_agreement {min_agreement:g}); nothing was "
                            f"written to {out}")
        final_spec = preprocessing_path(out)
        os.replace(tmp, out)
        os.replace(spec, final_spec)
    finally:
        for path in (tmp, preprocessing_path(tmp)):
            path.unlink(missing_ok=True)
    return out, final_spec, result
