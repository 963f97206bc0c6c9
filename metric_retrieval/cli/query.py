"""``metric-retrieval query``: the nearest images of a query, in a run's feature database or in a persistent
index (``metric-retrieval index build``); with an index, a folder or list of queries and kNN classification.

Examples::

    metric-retrieval query --data_base runs/cub/database_best.pth --query_img_name photo.jpg --retrieval_num 8
    metric-retrieval query --index my_index --query_img_name photo.jpg
    metric-retrieval query --index my_index --query_dir queries/ --classify --results results.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

from metric_retrieval.cli.common import add_device_flag, add_search_flags, new_parser, reports_errors
from metric_retrieval.cli.eval import add_model_source
from metric_retrieval.utils.errors import UserError


def add_query_args(p: argparse.ArgumentParser) -> None:
    """The query flags (``query``, and ``test.py`` without ``--eval``)."""
    from metric_retrieval.training import flags

    g = p.add_argument_group("query retrieval")
    g.add_argument("--query_img_name", help="query image: a path stored in the database, or any image file")
    g.add_argument("--data_base", help="feature database written by training (database_best.pth)")
    flags.RETRIEVAL_NUM.add_to(g)
    g.add_argument("--output_dir", default=None, help="where montage.png and index.html go "
                                                      "(default: results/<query name>)")
    g = p.add_argument_group("persistent index (built by metric-retrieval index build)")
    g.add_argument("--index", default=None, metavar="INDEX_DIR", help="search this index instead of --data_base")
    g.add_argument("--query_dir", default=None, help="with --index: every image below this folder is a query")
    g.add_argument("--query_list", default=None, help="with --index: a .txt/.csv list of query images")
    g.add_argument("--results", default=None, help="with --index: results file, .json or .csv (rank, path, id, "
                                                   "score); default <output_dir>/results.json")
    g.add_argument("--classify", action="store_true", help="with --index: each query gets the vote of its "
                                                           "--retrieval_num nearest labelled items")
    add_search_flags(g)


def get_args_parser(prog: str | None = None, add_help: bool = True) -> argparse.ArgumentParser:
    from metric_retrieval.training import flags

    p = new_parser(prog, "Query a feature database or an index", add_help)
    add_model_source(p)
    add_query_args(p)
    flags.EVAL_BATCH_SIZE.add_to(p)
    add_device_flag(p)
    return p


def _device(args: argparse.Namespace) -> str:
    from metric_retrieval.training.runtime import resolve_device

    return str(resolve_device(args.device)) if args.device != "auto" else "cpu"


def run(args: argparse.Namespace) -> int:
    from metric_retrieval.retrieval.index_query import run_index_queries
    from metric_retrieval.retrieval.query import retrieve, write_outputs
    from metric_retrieval.training.validate import check_test_args

    check_test_args(args)
    if args.index:
        return run_index_queries(args, _device(args))
    if not args.query_img_name or not args.data_base:
        raise UserError("give --query_img_name with --data_base (a feature database) or --index (an index)")
    result = retrieve(args.data_base, args.query_img_name, args.retrieval_num, args.checkpoint, _device(args))
    out_dir = args.output_dir or Path("results") / Path(args.query_img_name).stem
    png, html = write_outputs(result, out_dir)
    names = result.classes or [""] * len(result.paths)
    print(f"query {result.query_path} (class {result.query_class or '?'}, label {result.query_label})")
    for rank, (path, dist, ok, name) in enumerate(zip(result.paths, result.distances, result.correct, names), 1):
        mark = {True: "right", False: "wrong", None: ""}[ok]
        print(f"{rank:>3}  {dist:.4f}  {mark:>5}  {name:<12}  {path}")
    print(f"wrote {png} and {html}")
    return 0


@reports_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run(get_args_parser(prog).parse_args(argv))
