"""``python test.py``: query retrieval and evaluation, as in the papers' repositories.

``--eval`` (and ``--learn_whitening``) is ``metric-retrieval eval``; a query (``--data_base`` or ``--index``) is
``metric-retrieval query``; the flags are those commands' own (:mod:`metric_retrieval.cli.compat`). A thin shim
kept so that the papers' scripts and ``python test.py ...`` keep working from a checkout.

Examples::

    python test.py --query_img_name photo.jpg --data_base runs/cub/database_best.pth --retrieval_num 8
    python test.py --index my_index --query_dir queries/ --classify --results results.csv
    python test.py --eval --checkpoint runs/cub/model_best.pth --data_name cub --data_path /data/cub --json out.json
"""
import sys

from metric_retrieval.cli.compat import get_test_parser as get_args_parser  # noqa: F401
from metric_retrieval.cli.compat import test_main as main

if __name__ == "__main__":
    sys.exit(main())
