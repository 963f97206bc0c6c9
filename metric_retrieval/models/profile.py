"""Parameter and MAC counts, and the CLF-README-style table (``python -m metric_retrieval.models.profile``).

``profile(model, image_size=224) -> (params, macs)``: ``params`` is the exact number of parameters
(``sum(p.numel())``, trainable or not); ``macs`` is what thop counts for one ``1×3×H×W`` forward in eval mode,
which the CGD/CLF READMEs print as "FLOPs" (multiply-accumulates). The model is
deep-copied first because thop attaches buffers and hooks.

Example (the CLF README table)::

    python -m metric_retrieval.models.profile --backbone_type resnet18,resnet50,seresnet50 --head clf --feature_dim 1536

prints ``| Backbone | CARS196 | CUB200 | SOP | In-shop |`` with ``Params \\| FLOPs`` cells such as
``12.12M \\| 4.29G`` (the pipe is escaped so that each cell stays one Markdown cell). ``--data_name`` adds a
line with the exact counts for that dataset.

``metric_retrieval.models.profile`` is both this module and the function: the module is callable
(``metric_retrieval.models.profile(model)``).
"""
from __future__ import annotations

import argparse
import copy
import sys
import types
import warnings

import torch
from torch import nn

from metric_retrieval import data
from metric_retrieval.models.retrieval_model import flag_options, options_from_config

__all__ = ["TABLE_DATASETS", "dataset_columns", "main", "profile", "profile_table"]

# the CLF README's columns, in its order; titles and class counts are the readers' (metric_retrieval.data.registry)
TABLE_DATASETS = ("cars", "cub", "sop", "inshop")


def dataset_columns() -> dict[str, tuple[str, int]]:
    """``{dataset: (table column, number of training classes M)}`` for :data:`TABLE_DATASETS`."""
    infos = {name: data.get_benchmark(name) for name in TABLE_DATASETS}
    return {name: (info.title, info.num_train_classes) for name, info in infos.items()}


def profile(model: nn.Module, image_size: int | tuple[int, int] = 224) -> tuple[int, float]:
    """``(params, macs)`` of ``model`` for one ``1×3×image_size`` input (see the module docstring)."""
    params = sum(p.numel() for p in model.parameters())
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    probe = copy.deepcopy(model).eval()
    device = next(iter(probe.parameters()), torch.empty(0)).device
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # thop's import and hooks warn about distutils and unknown modules
        import thop  # imported lazily: only profiling needs it

        macs, _ = thop.profile(probe, inputs=(torch.zeros(1, 3, h, w, device=device),), verbose=False)
    return int(params), float(macs)


def _dataset(name: str) -> str:
    from metric_retrieval.utils.errors import UnknownOptionError

    name = name if name in data.DATASETS else name.lower()
    key = data.DATASETS.canonical(name) if name in data.DATASETS else None
    if key not in TABLE_DATASETS:
        raise UnknownOptionError(f"--data_name {name!r} is not a column of the table; choose one of: "
                                 f"{', '.join(TABLE_DATASETS)}")
    return key


def profile_table(backbones: list[str], head: str, feature_dim: int | None = None, image_size: int = 224,
                  **options) -> tuple[str, dict[tuple[str, str], tuple[int, float]]]:
    """The Markdown table over the four datasets and the raw ``{(backbone, dataset): (params, macs)}``."""
    from metric_retrieval.models.retrieval_model import build_model

    counts: dict[tuple[str, str], tuple[int, float]] = {}
    columns = dataset_columns()
    lines = ["| Backbone | " + " | ".join(col for col, _ in columns.values()) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for name in backbones:
        cells = []
        display = name
        for key, (_, num_classes) in columns.items():
            model = build_model(name, head, feature_dim, num_classes, **options)
            display = getattr(model.backbone, "display_name", name)
            counts[(name, key)] = params, macs = profile(model, image_size)
            cells.append(f"{params / 1e6:.2f}M \\| {macs / 1e9:.2f}G")
            del model
        lines.append(f"| {display} | " + " | ".join(cells) + " |")
    return "\n".join(lines), counts


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m metric_retrieval.models.profile", add_help=add_help,
                                description="Params | FLOPs (thop MACs) over CARS196, CUB200, SOP, In-shop",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone_type", default="resnet18,resnet50,seresnet50",
                   help="comma-separated backbones")
    p.add_argument("--head", default="clf")
    p.add_argument("--feature_dim", type=int, default=None, help="embedding width (CLF README: 1536)")
    p.add_argument("--data_name", default=None, help="also print the exact counts for this dataset")
    p.add_argument("--image_size", type=int, default=224)
    group = p.add_argument_group("backbone and head options (as train.py)")
    for option, users in flag_options().values():
        option.add_to(group, ", ".join(users))
    return p


def main(args: argparse.Namespace) -> int:
    from metric_retrieval.utils.errors import UserError

    backbones = [b.strip() for b in args.backbone_type.split(",") if b.strip()]
    try:
        options = options_from_config(vars(args))
        data_key = _dataset(args.data_name) if args.data_name else None
        table, counts = profile_table(backbones, args.head, args.feature_dim, args.image_size, **options)
    except (UserError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    if data_key is not None:
        column, num_classes = dataset_columns()[data_key]
        for name in backbones:
            params, macs = counts[(name, data_key)]
            print(f"{name} + {args.head} on {column} ({num_classes} classes): {params:,} params, "
                  f"{macs / 1e9:.2f}G MACs at {args.image_size}px")
    return 0


class _CallableModule(types.ModuleType):
    """Lets ``metric_retrieval.models.profile(model)`` call :func:`profile` although ``metric_retrieval.models.profile``
    is this module."""

    def __call__(self, model: nn.Module, image_size: int | tuple[int, int] = 224) -> tuple[int, float]:
        return profile(model, image_size)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
else:
    sys.modules[__name__].__class__ = _CallableModule
