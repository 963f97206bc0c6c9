"""``metric-retrieval index`` (``python index.py``): persistent faiss indexes of image catalogues: build, add,
info, eval.

Examples::

    # embed a folder tree (or a .txt/.csv list of paths, with an optional label or id column) and index it
    metric-retrieval index build --checkpoint runs/cub/model_best.pth --images photos/ --out my_index
    metric-retrieval index build --checkpoint runs/sop/model_best.pth --images list.csv --out sop_ivf \
        --index_factory IVF1024,Flat
    # the same build on 4 GPUs (each rank embeds its own shards; a killed build resumes when rerun)
    torchrun --nproc_per_node 4 -m metric_retrieval index build --checkpoint ... --images ... --out ... --device cuda
    metric-retrieval index add my_index --images more_photos/
    metric-retrieval index info my_index
    metric-retrieval index eval sop_ivf --queries queries.csv --k 10 --nprobe 16
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from metric_retrieval.cli.common import (
    add_device_flag,
    add_loader_flags,
    add_max_pixels_flag,
    add_search_flags,
    apply_max_pixels,
    new_parser,
    reports_errors,
)


def _embedding_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard_size", type=int, default=4096, help="images per shard file (memory holds one shard)")
    add_loader_flags(p)
    add_device_flag(p)
    p.add_argument("--no_progress", action="store_true", help="no tqdm bar")
    add_max_pixels_flag(p, "larger images are skipped and listed in bad_files.tsv")


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = new_parser(prog, "Persistent image-retrieval indexes")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="embed a catalogue and build an index",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--checkpoint", required=True,
                   help="model_best.pth of a run, or a model written by metric-retrieval export (.onnx, .ts)")
    b.add_argument("--images", required=True, help="a folder tree, or a .txt/.csv list of image paths")
    b.add_argument("--out", required=True, help="index directory to create (or to resume)")
    b.add_argument("--index_factory", default="Flat", help="faiss index_factory string: Flat (exact), "
                                                           "IVF1024,Flat, IVF4096,PQ64, HNSW32, ...; "
                                                           "…,RFlatDisk: re-rank with the full vectors read "
                                                           "from a file in the index folder, not RAM")
    b.add_argument("--train_size", type=int, default=100_000, help="vectors sampled to train IVF/PQ")
    b.add_argument("--seed", type=int, default=0, help="seed of the training sample and of k-means")
    b.add_argument("--k_factor", type=int, default=None,
                   help="refine indexes (…,RFlat, …,Refine(…), …,RFlatDisk): candidates re-ranked per result, "
                        "stored with the index (default 16)")
    _embedding_flags(b)
    a = sub.add_parser("add", help="add images to an index without rebuilding it",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("index_dir")
    a.add_argument("--images", required=True)
    a.add_argument("--checkpoint", default=None, help="default: the checkpoint the index names")
    a.add_argument("--update", action="store_true",
                   help="replace the vector of an image whose path the index holds but whose content changed; "
                        "without it such an image is skipped and counted as 'changed' (its old vector stays)")
    _embedding_flags(a)
    i = sub.add_parser("info", help="print what an index holds")
    i.add_argument("index_dir")
    e = sub.add_parser("eval", help="measure an approximate index against exact search",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("index_dir")
    e.add_argument("--queries", required=True, help="a folder tree or list of query images (labels optional)")
    e.add_argument("--k", type=int, default=10, help="recall@k of the true nearest neighbours")
    e.add_argument("--recalls", default="1,2,4,8", help="K list of the label Recall@K")
    add_search_flags(e)
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    _embedding_flags(e)
    return p


def _terminate(signum, frame):  # SIGTERM (a scheduler, kill) ends the run like Ctrl-C
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> dict:
    from metric_retrieval.retrieval.catalogue import read_catalogue
    from metric_retrieval.retrieval.index_store import IndexStore
    from metric_retrieval.retrieval.indexing import (
        add_items,
        build_index,
        embed_queries,
        evaluate_index,
        open_index,
    )
    from metric_retrieval.training.distributed import DistInfo, cleanup_distributed, init_distributed
    from metric_retrieval.training.runtime import resolve_device
    from metric_retrieval.utils.parsing import parse_number_list

    if args.command == "info":
        return IndexStore.open(args.index_dir).describe()
    apply_max_pixels(args.max_pixels)
    device = resolve_device(args.device)
    opts = {"shard_size": args.shard_size, "batch_size": args.batch_size, "workers": args.workers,
            "progress": not args.no_progress}
    if args.command == "eval":
        store, embedder = open_index(args.index_dir, args.checkpoint, device)
        store.set_search_params(args.nprobe, args.ef_search, args.k_factor)
        queries = read_catalogue(args.queries, "--queries")
        emb, good = embed_queries(embedder, queries.paths, args.batch_size, args.workers, "--queries")
        ks = parse_number_list(args.recalls, "--recalls") or [1]
        return evaluate_index(store, emb, [queries.labels[n] for n in good], args.k, ks)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = resolve_device(f"cuda:{info.local_rank}")
    try:
        if args.command == "build":
            opts.update(factory=args.index_factory, train_size=args.train_size, seed=args.seed,
                        k_factor=args.k_factor)
            return build_index(args.checkpoint, args.images, args.out, opts, info, device) or {}
        return add_items(args.index_dir, args.images, opts, info, args.checkpoint, device, args.update) or {}
    finally:
        cleanup_distributed(info if info.enabled else DistInfo())


@reports_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = get_args_parser(prog).parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("error: interrupted; finished shards are kept: rerun the same command to resume", file=sys.stderr)
        return 130
    if result:
        print(json.dumps(result, indent=2))
        if getattr(args, "json", None):
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    return 0
