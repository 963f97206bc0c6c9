"""``test.py --index``: one query (montage + HTML page, as with a feature database) or batches of queries
against a persistent index, with results as JSON/CSV and optional kNN classification."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from metric_retrieval.retrieval.catalogue import Catalogue, read_catalogue
from metric_retrieval.retrieval.indexing import (
    Hit,
    classify,
    embed_queries,
    labelled_neighbours,
    open_index,
    search,
    write_results,
)
from metric_retrieval.retrieval.visualize import write_html, write_montage
from metric_retrieval.utils.errors import UserError

__all__ = ["hit_distance", "query_catalogue", "run_index_queries"]


def hit_distance(score: float, metric: str) -> float:
    """Euclidean distance between the embeddings (what the montage shows) from a faiss score: ``sqrt(2 − 2·cos)``
    for inner products of normalised embeddings, ``sqrt`` of the squared distance for ``l2``."""
    return math.sqrt(max(0.0, 2 - 2 * score if metric == "ip" else score))


def query_catalogue(args: Any) -> Catalogue:
    """The queries of ``--query_img_name`` (one file), ``--query_dir`` or ``--query_list``."""
    given = [f for f in ("query_img_name", "query_dir", "query_list") if getattr(args, f)]
    if len(given) != 1:
        raise UserError("--index needs exactly one of --query_img_name, --query_dir, --query_list")
    if args.query_img_name:
        if not Path(args.query_img_name).is_file():
            raise UserError(f"--query_img_name {args.query_img_name}: no such image file")
        return Catalogue([args.query_img_name], [None], [args.query_img_name])
    flag = "--query_dir" if args.query_dir else "--query_list"
    source = args.query_dir or args.query_list
    if args.query_dir and not Path(source).is_dir():
        raise UserError(f"--query_dir {source}: no such folder")
    return read_catalogue(source, flag)


def run_index_queries(args: Any, device: str) -> int:
    """Search ``args.index`` for the queries; prints the ranking and writes the outputs. Returns the exit code."""
    store, embedder = open_index(args.index, args.checkpoint, device)
    store.set_search_params(args.nprobe, args.ef_search, args.k_factor)
    queries = query_catalogue(args)
    emb, _ = embed_queries(embedder, queries.paths, args.eval_batch_size, 0, "query")
    hits = search(store, emb, args.retrieval_num)
    predictions = ([classify(h, store.meta["metric"]) for h in labelled_neighbours(store, emb, args.retrieval_num)]
                   if args.classify else None)
    for n, (path, ranked) in enumerate(zip(queries.paths, hits)):
        tail = f"  predicted {predictions[n][0]} {predictions[n][1]}" if predictions else ""
        print(f"query {path}{'' if queries.labels[n] is None else f' (label {queries.labels[n]})'}{tail}")
        for h in ranked if args.query_img_name else ranked[:1]:
            print(f"{h.rank:>3}  {h.score:.4f}  {h.path}")
    out_dir = Path(args.output_dir or Path("results") / (Path(args.query_img_name).stem if args.query_img_name
                                                          else "index_queries"))
    results = Path(args.results) if args.results else out_dir / "results.json"
    written = [write_results(queries.paths, hits, results, predictions)]
    if args.query_img_name:
        written += _montage(queries.paths[0], hits[0], store.meta["metric"], out_dir)
    print("wrote " + " and ".join(str(p) for p in written))
    return 0


def _montage(query: str, hits: list[Hit], metric: str, out_dir: Path) -> list[Path]:
    paths, dists = [h.path for h in hits], [hit_distance(h.score, metric) for h in hits]
    correct = [None] * len(hits)
    png, html = out_dir / "montage.png", out_dir / "index.html"
    write_montage(query, paths, dists, correct, png)
    write_html(query, paths, dists, correct, html)
    return [png, html]
