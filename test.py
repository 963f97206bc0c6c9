"""Query retrieval and evaluation of trained (or off-the-shelf) models.

Examples::

    # the K nearest images of a query (stored in the database, or any image file)
    python test.py --query_img_name data/cub/.../0001.jpg --data_base runs/cub/database_best.pth --retrieval_num 8
    # a persistent index (index.py build): one query, or a folder of them with kNN classification
    python test.py --index my_index --query_img_name photo.jpg
    python test.py --index my_index --query_dir queries/ --classify --results results.csv
    # a dataset's test protocol, paper-style table, numbers to JSON
    python test.py --eval --checkpoint runs/cub/model_best.pth --data_name cub --data_path /data/cub --json out.json
    python test.py --eval --data_name roxford5k --data_path /data/roxford5k --backbone_type resnet101 --head gem \
        --pretrained imagenet --scales 1,0.7071,0.5 --qe aqe:2
"""
from __future__ import annotations

from metric_retrieval.utils import thread_policy  # noqa: F401 - before torch loads

# isort: split
import argparse
import json
import sys
from pathlib import Path

from metric_retrieval.data.registry import CROP_TYPE
from metric_retrieval.models.heads import add_head_file_args
from metric_retrieval.retrieval.eval_commands import evaluate_checkpoint, learn_whitening
from metric_retrieval.retrieval.index_query import run_index_queries
from metric_retrieval.retrieval.query import retrieve, write_outputs
from metric_retrieval.training.config import AMP_CHOICES
from metric_retrieval.training.runtime import resolve_device
from metric_retrieval.training.validate import check_test_args
from metric_retrieval.utils.errors import UserError, plain_warnings


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Query retrieval and evaluation", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("query retrieval")
    g.add_argument("--query_img_name", help="query image: a path stored in the database, or any image file")
    g.add_argument("--data_base", help="feature database written by train.py (database_best.pth)")
    g.add_argument("--retrieval_num", type=int, default=8, help="number of results K")
    g.add_argument("--output_dir", default=None, help="where montage.png and index.html go "
                                                      "(default: results/<query name>)")
    g = p.add_argument_group("persistent index (built by index.py)")
    g.add_argument("--index", default=None, metavar="INDEX_DIR", help="search this index instead of --data_base")
    g.add_argument("--query_dir", default=None, help="with --index: every image below this folder is a query")
    g.add_argument("--query_list", default=None, help="with --index: a .txt/.csv list of query images")
    g.add_argument("--results", default=None, help="with --index: results file, .json or .csv (rank, path, id, "
                                                   "score); default <output_dir>/results.json")
    g.add_argument("--classify", action="store_true", help="with --index: each query gets the vote of its "
                                                           "--retrieval_num nearest labelled items")
    g.add_argument("--nprobe", type=int, default=None, help="IVF indexes: lists visited per query")
    g.add_argument("--ef_search", type=int, default=None, help="HNSW indexes: candidate list size")
    g.add_argument("--k_factor", type=int, default=None, help="refine indexes: candidates re-ranked per result; "
                                                              "default: the value stored with the index")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval", action="store_true", help="evaluate on a dataset's test protocol")
    g.add_argument("--checkpoint", default=None, help="model_best.pth / checkpoint_latest.pth of a run")
    g.add_argument("--data_name", default=None)
    g.add_argument("--data_path", default=None)
    CROP_TYPE.add_to(g)  # the readers' own option (data/registry.py)
    g.add_argument("--recalls", default=None, help="comma-separated K list; default per dataset")
    g.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    g.add_argument("--transform", default="cgd", help="eval transform when the checkpoint names none")
    g.add_argument("--image_size", type=int, default=224)
    g.add_argument("--eval_batch_size", type=int, default=64)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--decode", default="fast", choices=("fast", "cache", "pil"), help="JPEG decoding path")
    g.add_argument("--knn_backend", default="auto")
    g = p.add_argument_group("off-the-shelf model (no --checkpoint) and landmark retrieval")
    g.add_argument("--backbone_type", default=None)
    g.add_argument("--head", default=None)
    g.add_argument("--feature_dim", type=int, default=None,
                   help="embedding width; default: the head's own (gem: the backbone's width, no projection)")
    g.add_argument("--pretrained", default=None)
    g.add_argument("--model_option", action="append", default=[], metavar="KEY=VALUE")
    add_head_file_args(g)
    g.add_argument("--imsize", type=int, default=1024, help="landmarks: longest image side")
    g.add_argument("--scales", default="1", help="landmarks: multi-scale factors, e.g. 1,0.7071,0.5")
    g.add_argument("--whitening", default=None, help="landmarks: whitening file (evaluation.save_whitening)")
    g.add_argument("--qe", default=None, help="landmarks: query expansion aqe:K or alpha:K:ALPHA")
    g.add_argument("--dba", type=int, default=0, help="landmarks: database-side augmentation with K neighbours")
    g.add_argument("--learn_whitening", default=None, metavar="FILE",
                   help="fit a whitening on --data_name/--data_path (a training set) and save it to FILE")
    g.add_argument("--whitening_type", default="pca", choices=("pca", "learned"),
                   help="pca: PCA-whitening; learned: cirtorch Lw from same-class pairs (labelled data)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="run", choices=("run", *AMP_CHOICES),
                   help="precision of --eval / --learn_whitening: run = the checkpoint's own (off without one)")
    return p


def print_table(metrics: dict) -> None:
    """Paper-style one-row table of the fractional metrics, as percentages."""
    keys = [k for k, v in metrics.items() if isinstance(v, float)]
    print(" | ".join(f"{k:>10}" for k in keys))
    print(" | ".join(f"{100 * metrics[k]:>10.2f}" for k in keys))


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    plain_warnings()
    try:
        check_test_args(args)
        if args.learn_whitening:
            if not args.data_name or not args.data_path:
                raise UserError("--learn_whitening needs --data_name and --data_path (a training set)")
            info = learn_whitening(args)
            print(f"whitening ({args.whitening_type}) fitted on {info['num_images']} descriptors of dimension "
                  f"{info['dim']}: {args.learn_whitening}")
            return 0
        if args.eval:
            if not args.data_name or not args.data_path:
                raise UserError("--eval needs --data_name and --data_path")
            metrics = evaluate_checkpoint(args)
            print_table(metrics)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(metrics, indent=2))
            return 0
        if args.index:
            return run_index_queries(args, str(resolve_device(args.device)) if args.device != "auto" else "cpu")
        if not args.query_img_name or not args.data_base:
            raise UserError("give --query_img_name and --data_base (query retrieval) or --eval (evaluation)")
        device = str(resolve_device(args.device)) if args.device != "auto" else "cpu"
        result = retrieve(args.data_base, args.query_img_name, args.retrieval_num, args.checkpoint, device)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_dir = args.output_dir or Path("results") / Path(args.query_img_name).stem
    png, html = write_outputs(result, out_dir)
    names = result.classes or [""] * len(result.paths)
    print(f"query {result.query_path} (class {result.query_class or '?'}, label {result.query_label})")
    for rank, (path, dist, ok, name) in enumerate(zip(result.paths, result.distances, result.correct, names), 1):
        mark = {True: "right", False: "wrong", None: ""}[ok]
        print(f"{rank:>3}  {dist:.4f}  {mark:>5}  {name:<12}  {path}")
    print(f"wrote {png} and {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
