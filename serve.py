"""``python serve.py`` = ``metric-retrieval serve``: serve an index (search page, POST /search).

A thin shim kept so that the papers' scripts and ``python serve.py ...`` keep working from a checkout; the command
lives in :mod:`metric_retrieval.cli.serve`.
"""
import sys

from metric_retrieval.cli.serve import get_args_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
