"""``metric-retrieval export`` (``python export.py``): export a trained model to ONNX or TorchScript, with its
preprocessing JSON and a parity check.

Examples::

    metric-retrieval export --checkpoint runs/x/model_best.pth --format onnx --out model.onnx
    metric-retrieval export --checkpoint runs/x/model_best.pth --format torchscript --out model.ts --logits
    metric-retrieval eval --checkpoint model.onnx --data_name cub --data_path /data/cub   # evaluate the file

The exported file (and ``model.onnx.json``) is written under temporary names and run on ``--parity_images`` real
images of the run's dataset (``--data_path``/``--data_name`` override it; without either the run's built-in
synthetic dataset is used) and compared with the PyTorch model: the largest absolute embedding difference
and the top-10 retrieval agreement are printed, and the export fails (exit 2, nothing written to ``--out``) when
the difference exceeds ``--atol`` or the agreement falls below ``--min_agreement``
(:func:`metric_retrieval.models.export.export_with_parity`).
"""
from __future__ import annotations

import argparse

import torch

from metric_retrieval.cli.common import new_parser, reports_errors
from metric_retrieval.data.batch import DeviceInput
from metric_retrieval.models.export import FORMATS, export_with_parity
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.utils.errors import UserError


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = new_parser(prog, "Export a retrieval model")
    p.add_argument("--checkpoint", required=True, help="model_best.pth or checkpoint_latest.pth of a run")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output file (model.onnx, model.ts); model.onnx.json goes beside it")
    p.add_argument("--logits", action="store_true", help="also output the classifier logits")
    p.add_argument("--data_path", default=None, help="images for the parity check (default: the run's dataset)")
    p.add_argument("--data_name", default=None)
    p.add_argument("--parity_images", type=int, default=32, help="number of images for the parity check")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed absolute embedding difference")
    p.add_argument("--min_agreement", type=float, default=0.9, help="smallest allowed top-10 agreement")
    return p


def parity_images(recipe: InferenceRecipe, cfg: dict, data_path: str | None, data_name: str | None,
                  count: int) -> torch.Tensor:
    """The first ``count`` images of the dataset's first evaluation split (the run's, ``cfg``, unless
    ``data_path``/``data_name`` say otherwise), preprocessed by the ``recipe``."""
    from metric_retrieval import data
    from metric_retrieval.training.trainer import default_data
    from metric_retrieval.utils.options import builder_kwargs

    run = {"data_path": data_path or cfg.get("data_path"),
           "data_name": data_name or (cfg.get("data_name", "folder") if data_path or cfg.get("data_path")
                                      else "folder")}
    root = default_data(run)
    info = data.get_benchmark(run["data_name"], root)
    dataset = data.build_dataset(info.name, root, info.eval_splits[0], transform=recipe.eval_transform(),
                                 reader_options=builder_kwargs(data.DATASETS.get(info.name), cfg))
    count = min(count, len(dataset))
    if count < 2:
        raise UserError(f"--parity_images: the parity check needs at least 2 images, {root} gave {count}")
    images = torch.stack([dataset[i][0] for i in range(count)])
    return DeviceInput(torch.device("cpu"), recipe.normalize(), False)(images)


@reports_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = get_args_parser(prog).parse_args(argv)
    from metric_retrieval.training.checkpoint import load_model

    if args.parity_images < 2:
        raise UserError(f"--parity_images must be at least 2, got {args.parity_images}")
    model, ckpt = load_model(args.checkpoint, "cpu")
    recipe = ckpt["recipe"]
    out, spec, result = export_with_parity(
        model, args.format, args.out, recipe, args.logits,
        lambda: parity_images(recipe, ckpt.get("config", {}), args.data_path, args.data_name, args.parity_images),
        args.atol, args.min_agreement)
    print(f"wrote {out} and {spec}")
    print(f"parity on {result['images']} images: max |diff| {result['max_abs_diff']:.2e}, "
          f"min cosine {result['min_cosine']:.6f}, top-10 agreement {result['top10_agreement']:.4f}")
    return 0
