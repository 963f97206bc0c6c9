"""The search service of ``serve.py``: a FastAPI app over a persistent index and the model that built it.

Routes:

- ``GET /``: a small page where a person drops or picks an image and sees the ranked results as thumbnails
  with their scores;
- ``POST /search`` (multipart field ``image``; query ``k``): the top-k items as JSON
  ``{"results": [{"rank", "path", "id", "label", "score", "thumbnail"}], "predicted", "votes"}``;
- ``GET /thumbnail/{n}?sha256=…``: a JPEG thumbnail of item ``n``; a result's link names the item's content too,
  so after a reload that moved the item (``index add --update``) the link still shows it, or gets a 404;
- ``GET /health``: ``{"status": "ok", "version", "items", "dim", "factory", "metric"}`` of the version served.

Result paths are relative to their catalogue root (the server's own paths are not shown). With
``reload_interval`` > 0 the server watches the index and swaps in a newer committed version (an
``index.py add``) while it serves: :class:`metric_retrieval.retrieval.live_index.LiveIndex`.

An upload is refused with a 4xx and a message, never an error inside the server: a content type that is not
``image/*`` (415), a body over the size limit (413, counted while the body streams in: see :class:`BodyLimit`),
an image whose header declares more pixels than the limit (413, nothing decoded:
:func:`metric_retrieval.data.image_io.open_image`), an empty body, bytes that are not an image, or a
truncated image (400). A request whose ``Host`` header is not one of ``allowed_hosts`` gets a 400 (a page on
another site cannot reach a server on the loopback through DNS rebinding). The upload is decoded once, exactly
as the catalogue was (:func:`metric_retrieval.retrieval.batching.decode_upload`); concurrent searches share one
forward pass and one index search (:class:`metric_retrieval.retrieval.batching.DynamicBatcher`: ``max_batch``
requests, a ``batch_window_ms`` wait; past ``max_queue`` waiting requests, 503).
"""
from __future__ import annotations

import io
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from metric_retrieval.data.image_io import ImageTooLargeError, open_image
from metric_retrieval.retrieval.batching import DynamicBatcher, Overloaded, decode_upload, search_batch
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import check_compatible
from metric_retrieval.retrieval.live_index import LiveIndex
from metric_retrieval.retrieval.visualize import render_tile
from metric_retrieval.utils.errors import UserError

__all__ = ["LOOPBACK_HOSTS", "BodyLimit", "check_bind_address", "check_limits", "create_app"]

THUMBNAIL = 160
MAX_K = 1000
MULTIPART_SLACK = 64 * 1024  # a multipart body carries boundaries and part headers besides the image bytes
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PAGE = Path(__file__).with_name("serve_page.html")
logger = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` (plus ``slack`` for the multipart framing) gets a 413 as
    soon as its bytes say so.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked or understated body
    is counted as it streams in and cut off at the first chunk past the limit, so no more than the limit plus
    one chunk is ever buffered or spooled to disk (python-multipart spools a part over 1 MB to a temporary file).
    """

    def __init__(self, app: Any, max_bytes: int, slack: int = MULTIPART_SLACK) -> None:
        self.app, self.max_bytes, self.cutoff = app, max_bytes, max_bytes + slack

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.cutoff:
            await self._refuse(send)
            return
        seen, refused, started = 0, False, False

        async def counted_receive() -> dict:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.cutoff:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}  # the app stops reading and answers nothing
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused:
                return  # the 413 was sent already
            started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"the request body is larger than the limit of {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def check_bind_address(host: str) -> bool:
    """Whether ``host`` is a loopback address; a warning is logged when it is not (the server has no
    authentication: binding elsewhere exposes it to the network)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        logger.warning("serving on %s, which is not a loopback address: anyone who can reach it can search the "
                       "index and read its thumbnails (there is no authentication)", host)
    return loopback


def check_limits(k: int, max_bytes: int) -> None:
    """``--k`` in 1..1000 and a positive upload limit, else :class:`UserError`."""
    if not 1 <= k <= MAX_K:
        raise UserError(f"--k must be between 1 and {MAX_K}, got {k}")
    if not max_bytes > 0:
        raise UserError(f"--max_upload_mb must be positive, got a limit of {max_bytes} bytes")


def _check_image(body: bytes) -> str:
    """The image format of ``body`` read from its header (nothing decoded): 400 for bytes that are not an
    image, 413 for more pixels than the limit."""
    if not body:
        raise HTTPException(400, "the upload is empty: send an image file in the 'image' field")
    try:
        with open_image(io.BytesIO(body)) as im:  # reads the header only
            return im.format or "image"
    except ImageTooLargeError as err:
        raise HTTPException(413, str(err)) from None
    except (OSError, ValueError, SyntaxError):
        raise HTTPException(400, "the upload is not an image PIL can read (JPEG, PNG, WebP, ...)") from None



def _decode(embedder: Embedder, body: bytes, fmt: str):
    """The upload's evaluation image; 413 over the pixel limit, 400 for a cut-off or damaged file (every pixel is
    decoded here)."""
    try:
        return decode_upload(embedder, body)
    except ImageTooLargeError as err:
        raise HTTPException(413, str(err)) from None
    except (OSError, ValueError, SyntaxError, RuntimeError) as err:
        raise HTTPException(400, f"the {fmt} image is truncated or corrupt ({err})") from None


def create_app(store: IndexStore, embedder: Embedder, k: int = 10, max_bytes: int = 10 * 2**20,
               allowed_hosts: Sequence[str] = LOOPBACK_HOSTS, reload_interval: float = 0.0, max_batch: int = 8,
               batch_window_ms: float = 2.0, max_queue: int = 64) -> FastAPI:
    """The app for ``store`` searched with ``embedder`` (already checked to be the model that built it).

    ``k``: results per query unless a request asks (1..1000); ``max_bytes``: the largest image upload;
    ``allowed_hosts``: the ``Host`` header values served (``"*"`` allows any); ``reload_interval``: seconds
    between checks for a newer committed index version while the app runs (0: never); ``max_batch``,
    ``batch_window_ms``, ``max_queue``: the dynamic batching of concurrent searches.
    """
    check_limits(k, max_bytes)
    live = LiveIndex(store, lambda new: check_compatible(new, embedder, embedder.checkpoint), reload_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live.start()
        yield
        live.stop()

    app = FastAPI(title="metric-retrieval search", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.live = live
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(BodyLimit, max_bytes=max_bytes)

    def search_snapshot(requests: list) -> list:
        snapshot = live.current  # one index version for the whole batch
        return [(snapshot, found) for found in search_batch(snapshot.store, embedder, requests)]

    batcher = DynamicBatcher(search_snapshot, max_batch, batch_window_ms, max_queue)
    app.state.batcher = batcher

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict:
        served = live.current.store
        return {"status": "ok", "version": served.version, "items": len(served), "dim": served.meta["dim"],
                "factory": served.meta["factory"], "metric": served.meta["metric"]}

    @app.get("/thumbnail/{n}")
    def thumbnail(n: int, sha256: Annotated[str | None, Query(max_length=64)] = None) -> Response:
        snapshot = live.current
        item = snapshot.item_of(n, sha256)
        if item is None:
            what = "" if sha256 is None else f" with content {sha256[:12]}…; the index changed since: search again"
            raise HTTPException(404, f"no item {n}{what} (the index holds items 0..{len(snapshot.store) - 1})")
        buf = io.BytesIO()
        render_tile(snapshot.store.items["paths"][item], THUMBNAIL).save(buf, format="JPEG", quality=85)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/search")
    def search_image(image: Annotated[UploadFile, File()],
                     top: Annotated[int, Query(alias="k", ge=1, le=MAX_K)] = k) -> dict:
        kind = (image.content_type or "").split(";")[0].strip().lower()
        if not kind.startswith("image/"):
            raise HTTPException(415, f"expected an image upload (image/jpeg, image/png, ...), got content type "
                                     f"{kind or 'none'!r}")
        body = image.file.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise HTTPException(413, f"the image is larger than the limit of {max_bytes} bytes")
        image = _decode(embedder, body, _check_image(body))
        try:
            snapshot, found = batcher((image, top))
        except Overloaded as err:
            raise HTTPException(503, f"the server is busy ({err}); retry shortly") from None
        hashes = snapshot.store.items.get("sha256") or []
        results = [{**asdict(h), "path": snapshot.paths[h.item], "thumbnail": f"/thumbnail/{h.item}"
                    + (f"?sha256={hashes[h.item]}" if h.item < len(hashes) and hashes[h.item] else "")}
                   for h in found.hits]
        return {"results": results, "predicted": found.predicted, "votes": found.votes}

    return app
