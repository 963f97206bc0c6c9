"""``python -m metric_retrieval COMMAND ...``: the same as the ``metric-retrieval`` command."""
import sys

from metric_retrieval.cli import main

if __name__ == "__main__":
    sys.exit(main())
