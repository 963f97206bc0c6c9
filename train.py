"""``python train.py`` = ``metric-retrieval train``: train a retrieval model.

A thin shim kept so that the papers' scripts and ``python train.py ...`` keep working from a checkout; the command
lives in :mod:`metric_retrieval.cli.train`.
"""
import sys

from metric_retrieval.cli.train import get_args_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
