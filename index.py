"""``python index.py`` = ``metric-retrieval index``: build, extend, describe and measure persistent indexes.

A thin shim kept so that the papers' scripts and ``python index.py ...`` keep working from a checkout; the command
lives in :mod:`metric_retrieval.cli.index`.
"""
import sys

from metric_retrieval.cli.index import get_args_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
