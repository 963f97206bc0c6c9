"""A local search service over a persistent index (FastAPI + uvicorn): a web page, ``POST /search``, ``GET /health``.

Example::

    python serve.py --index my_index            # then open http://127.0.0.1:8000/
    curl -F image=@photo.jpg 'http://127.0.0.1:8000/search?k=5'

It binds to 127.0.0.1 unless ``--host`` says otherwise (there is no authentication: expose it deliberately).
"""
from __future__ import annotations

from metric_retrieval.utils import thread_policy  # noqa: F401 - before torch loads

# isort: split
import argparse
import sys

from metric_retrieval.utils.errors import UserError


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve an index", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--index", required=True, help="index directory written by index.py build")
    p.add_argument("--checkpoint", default=None, help="default: the checkpoint the index names")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--k", type=int, default=10, help="results per query unless the request asks ?k=")
    p.add_argument("--nprobe", type=int, default=None, help="IVF indexes: lists visited per query")
    p.add_argument("--ef_search", type=int, default=None, help="HNSW indexes: candidate list size")
    p.add_argument("--k_factor", type=int, default=None, help="refine indexes: candidates re-ranked per result; "
                                                              "default: the value stored with the index")
    p.add_argument("--max_upload_mb", type=float, default=10.0, help="larger uploads get 413")
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        import uvicorn

        from metric_retrieval.retrieval.indexing import open_index
        from metric_retrieval.retrieval.serve_app import create_app
        from metric_retrieval.training.runtime import resolve_device

        store, embedder = open_index(args.index, args.checkpoint, resolve_device(args.device))
        store.set_search_params(args.nprobe, args.ef_search, args.k_factor)
        app = create_app(store, embedder, args.k, int(args.max_upload_mb * 2**20))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")  # a taken port: uvicorn says so, exit 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
