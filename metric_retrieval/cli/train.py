"""``metric-retrieval train`` (``python train.py``): train a retrieval model.

Examples::

    metric-retrieval train                                   # built-in synthetic data, about a minute on a CPU
    metric-retrieval train --list                            # every registered component and its options
    metric-retrieval train --config configs/cgd/cars.yaml --data_path /data/cars196
    torchrun --nproc_per_node 4 -m metric_retrieval train --config configs/das/table1.yaml --data_name cub \\
        --data_path /data/cub200
"""
from __future__ import annotations

import argparse

from metric_retrieval.cli.common import reports_errors


def get_args_parser(prog: str | None = None, add_help: bool = True) -> argparse.ArgumentParser:
    from metric_retrieval.training import get_args_parser as training_parser

    p = training_parser(add_help=add_help)
    p.prog = prog or p.prog
    return p


@reports_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    import sys

    from metric_retrieval.training import resolve_config, train
    from metric_retrieval.training.listing import describe_components
    from metric_retrieval.training.signals import Stopped

    if "--list" in (sys.argv[1:] if argv is None else argv):
        print(describe_components())
        return 0
    cfg = resolve_config(argv, get_args_parser(prog))
    try:
        result = train(cfg)
    except Stopped as stop:  # SIGTERM / SIGINT: checkpoint written and the resume hint logged
        return stop.exit_code
    if result["rank"] == 0:
        print(f"best {cfg['select_metric']} {result['best']:.4f} at epoch {result['best_epoch']}; "
              f"run folder: {cfg['output_dir']}")
    return 0
