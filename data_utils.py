"""``python data_utils.py`` = ``metric-retrieval data``: dataset tools.

A thin shim kept so that the papers' scripts and ``python data_utils.py ...`` keep working from a checkout; the command
lives in :mod:`metric_retrieval.cli.data`.
"""
import sys

from metric_retrieval.cli.data import get_args_parser, main, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
