"""``python test.py``: the one-script interface of the papers' repositories, mapped onto ``eval`` and ``query``.

``--eval`` or ``--learn_whitening`` runs :mod:`metric_retrieval.cli.eval`; anything else runs
:mod:`metric_retrieval.cli.query` (a feature database, or ``--index``). The flags are those two commands' own.
"""
from __future__ import annotations

import argparse

from metric_retrieval.cli import eval as eval_cmd
from metric_retrieval.cli import query as query_cmd
from metric_retrieval.cli.common import add_device_flag, new_parser, reports_errors


def get_test_parser(prog: str | None = None, add_help: bool = True) -> argparse.ArgumentParser:
    p = new_parser(prog, "Query retrieval and evaluation (metric-retrieval query / eval)", add_help)
    query_cmd.add_query_args(p)
    p.add_argument("--eval", action="store_true", help="evaluate on a dataset's test protocol (metric-retrieval eval)")
    eval_cmd.add_model_source(p)
    eval_cmd.add_eval_args(p)
    add_device_flag(p)
    return p


@reports_errors
def test_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = get_test_parser(prog).parse_args(argv)
    evaluating = args.eval or args.learn_whitening
    del args.eval
    return eval_cmd.run(args) if evaluating else query_cmd.run(args)
