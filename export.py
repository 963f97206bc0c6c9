"""``python export.py`` = ``metric-retrieval export``: export a model to ONNX or TorchScript.

A thin shim kept so that the papers' scripts and ``python export.py ...`` keep working from a checkout; the command
lives in :mod:`metric_retrieval.cli.export`.
"""
import sys

from metric_retrieval.cli.export import get_args_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
