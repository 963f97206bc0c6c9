"""``metric-retrieval serve`` (``python serve.py``): a local search service over a persistent index (FastAPI +
uvicorn): a web page, ``POST /search``, ``GET /health``.

Example::

    metric-retrieval serve --index my_index            # then open http://127.0.0.1:8000/
    curl -F image=@photo.jpg 'http://127.0.0.1:8000/search?k=5'

It binds to 127.0.0.1 unless ``--host`` says otherwise (there is no authentication: expose it deliberately).
"""
from __future__ import annotations

import argparse

from metric_retrieval.cli.common import (
    add_device_flag,
    add_max_pixels_flag,
    add_search_flags,
    apply_max_pixels,
    new_parser,
    reports_errors,
)


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = new_parser(prog, "Serve an index")
    p.add_argument("--index", required=True, help="index directory written by index.py build")
    p.add_argument("--checkpoint", default=None, help="default: the checkpoint the index names")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--k", type=int, default=10, help="results per query unless the request asks ?k=")
    add_search_flags(p)
    p.add_argument("--max_upload_mb", type=float, default=10.0, help="larger uploads get 413")
    add_device_flag(p, default="cpu")
    p.add_argument("--allowed_hosts", default="",
                   help="comma-separated Host header values to serve besides the bound address and the loopback "
                        "names (a DNS name the server is reached by); '*' serves any")
    add_max_pixels_flag(p, "larger uploads get 413")
    p.add_argument("--reload_interval", type=float, default=2.0,
                   help="seconds between checks for a newer committed version of the index (an index add), "
                        "swapped in without dropping requests; 0: never reload")
    return p


@reports_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = get_args_parser(prog).parse_args(argv)
    import uvicorn

    from metric_retrieval.retrieval.indexing import open_index
    from metric_retrieval.retrieval.serve_app import LOOPBACK_HOSTS, check_bind_address, check_limits, create_app
    from metric_retrieval.training.runtime import resolve_device
    from metric_retrieval.utils.errors import UserError

    apply_max_pixels(args.max_pixels)
    hosts = [*LOOPBACK_HOSTS, args.host, *(h.strip() for h in args.allowed_hosts.split(",") if h.strip())]
    check_limits(args.k, int(args.max_upload_mb * 2**20))  # before the model loads
    if args.reload_interval < 0:
        raise UserError(f"--reload_interval must be >= 0 seconds, got {args.reload_interval}")
    store, embedder = open_index(args.index, args.checkpoint, resolve_device(args.device))
    store.set_search_params(args.nprobe, args.ef_search, args.k_factor)
    app = create_app(store, embedder, args.k, int(args.max_upload_mb * 2**20), hosts, args.reload_interval)
    check_bind_address(args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")  # a taken port: uvicorn says so, exit 1
    return 0
