"""Train a retrieval model.

Examples::

    python train.py                                   # built-in synthetic data, about a minute on a CPU
    python train.py --config configs/cgd/cars.yaml --data_path /data/cars196
    torchrun --nproc_per_node 4 train.py --config configs/das/table1.yaml --data_name cub --data_path /data/cub200
"""
from __future__ import annotations

import sys

from engine import get_args_parser, resolve_config, train
from utils.errors import UserError, plain_warnings


def main(argv: list[str] | None = None) -> int:
    plain_warnings()
    try:
        cfg = resolve_config(argv, get_args_parser())
        result = train(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    best = result["best"]
    print(f"best {cfg['select_metric']} {best:.4f} at epoch {result['best_epoch']}; run folder: {cfg['output_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
