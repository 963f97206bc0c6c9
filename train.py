"""Train a retrieval model.

Examples::

    python train.py                                   # built-in synthetic data, about a minute on a CPU
    python train.py --list                            # every registered component and its options
    python train.py --config configs/cgd/cars.yaml --data_path /data/cars196
    torchrun --nproc_per_node 4 train.py --config configs/das/table1.yaml --data_name cub --data_path /data/cub200
"""
from __future__ import annotations

from metric_retrieval.utils import thread_policy  # noqa: F401 - before torch loads

# isort: split
import sys

from metric_retrieval.training import get_args_parser, resolve_config, train
from metric_retrieval.training.listing import describe_components
from metric_retrieval.training.signals import Stopped
from metric_retrieval.utils.errors import UserError, plain_warnings


def main(argv: list[str] | None = None) -> int:
    plain_warnings()
    if "--list" in (sys.argv[1:] if argv is None else argv):
        print(describe_components())
        return 0
    try:
        cfg = resolve_config(argv, get_args_parser())
        result = train(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Stopped as stop:  # SIGTERM / SIGINT: checkpoint written and the resume hint logged
        return stop.exit_code
    if result["rank"] == 0:
        print(f"best {cfg['select_metric']} {result['best']:.4f} at epoch {result['best_epoch']}; "
              f"run folder: {cfg['output_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
