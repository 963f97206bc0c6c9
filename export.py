"""Export a trained model to ONNX or TorchScript, with its preprocessing JSON and a parity check.

Examples::

    python export.py --checkpoint runs/x/model_best.pth --format onnx --out model.onnx
    python export.py --checkpoint runs/x/model_best.pth --format torchscript --out model.ts --logits
    python test.py --eval --checkpoint model.onnx --data_name cub --data_path /data/cub   # evaluate the file

After writing ``--out`` (and ``model.onnx.json`` beside it) the exported file is run on ``--parity_images`` real
images of the run's dataset (``--data_path``/``--data_name`` override it; without either the run's built-in
synthetic dataset is used) and compared with the PyTorch model: the largest absolute embedding difference
and the top-10 retrieval agreement are printed, and the export fails (exit 2, files removed) when the
difference exceeds ``--atol`` or the agreement falls below ``--min_agreement``.
"""
from __future__ import annotations

from metric_retrieval.utils import thread_policy  # noqa: F401 - before torch loads

# isort: split
import argparse
import sys

import torch

from metric_retrieval import data
from metric_retrieval.models.export import (
    FORMATS,
    export_model,
    load_exported,
    parity,
    preprocessing_path,
    write_preprocessing,
)
from metric_retrieval.training.checkpoint import load_model
from metric_retrieval.training.evaluate import device_input
from metric_retrieval.training.trainer import default_data
from metric_retrieval.utils.errors import UserError


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a retrieval model",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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


def parity_images(model: torch.nn.Module, cfg: dict, data_path: str | None, data_name: str | None,
                  count: int) -> torch.Tensor:
    """The first ``count`` images of the dataset's first evaluation split, preprocessed as the run evaluated."""
    run = {"data_path": data_path or cfg.get("data_path"),
           "data_name": data_name or (cfg.get("data_name", "folder") if data_path or cfg.get("data_path")
                                      else "folder")}
    root = default_data(run)
    info = data.get_benchmark(run["data_name"], root)
    transform = data.build_transform(cfg.get("transform", "cgd"), train=False, image_size=cfg.get("image_size", 224),
                                     normalize=False)
    dataset = data.build_dataset(info.name, root, info.eval_splits[0], transform=transform)
    count = min(count, len(dataset))
    if count < 2:
        raise UserError(f"--parity_images: the parity check needs at least 2 images, {root} gave {count}")
    images = torch.stack([dataset[i][0] for i in range(count)])
    return device_input(model, cfg, torch.device("cpu"))(images)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if args.parity_images < 2:
            raise UserError(f"--parity_images must be at least 2, got {args.parity_images}")
        model, ckpt = load_model(args.checkpoint, "cpu")
        cfg = ckpt.get("config", {})
        size = int(cfg.get("image_size", 224))
        out = export_model(model, args.format, args.out, size, logits=args.logits)
        pipeline = str(data.build_transform(cfg.get("transform", "cgd"), train=False, image_size=size,
                                            normalize=False))
        normalize = device_input(model, cfg, torch.device("cpu")).normalize
        spec = write_preprocessing(out, args.format, model, cfg, normalize, pipeline, args.logits)
        exported, _ = load_exported(out)
        images = parity_images(model, cfg, args.data_path, args.data_name, args.parity_images)
        result = parity(model, exported, images)
        print(f"wrote {out} and {spec}")
        print(f"parity on {len(images)} images: max |diff| {result['max_abs_diff']:.2e}, "
              f"min cosine {result['min_cosine']:.6f}, top-10 agreement {result['top10_agreement']:.4f}")
        if result["max_abs_diff"] > args.atol or result["top10_agreement"] < args.min_agreement:
            out.unlink(missing_ok=True)
            preprocessing_path(out).unlink(missing_ok=True)
            raise UserError(f"the exported model differs from PyTorch beyond the tolerance (max |diff| "
                            f"{result['max_abs_diff']:.2e} vs --atol {args.atol:g}, top-10 agreement "
                            f"{result['top10_agreement']:.4f} vs --min_agreement {args.min_agreement:g}); "
                            f"{out} was removed")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
