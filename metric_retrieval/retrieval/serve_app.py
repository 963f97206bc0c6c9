"""The search service of ``serve.py``: a FastAPI app over a persistent index and the model that built it.

Routes:

- ``GET /``: a small page where a person drops or picks an image and sees the ranked results as thumbnails
  with their scores;
- ``POST /search`` (multipart field ``image``; query ``k``): the top-k items as JSON
  ``{"results": [{"rank", "path", "id", "label", "score", "thumbnail"}], "predicted", "votes"}``;
- ``GET /thumbnail/{n}``: a JPEG thumbnail of item ``n``;
- ``GET /health``: ``{"status": "ok", "items", "dim", "factory", "metric"}``.

An upload is refused with a 4xx and a message, never an error inside the server: a content type that is not
``image/*`` (415), a body over the size limit (413), an empty body, bytes that are not an image, or a
truncated image (400). The upload is decoded once, exactly as the catalogue was
(:func:`metric_retrieval.retrieval.batching.decode_upload`); concurrent searches share one forward pass and one
index search (:class:`metric_retrieval.retrieval.batching.DynamicBatcher`: ``max_batch`` requests, a
``batch_window_ms`` wait; past ``max_queue`` waiting requests, 503).
"""
from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from metric_retrieval.retrieval.batching import DynamicBatcher, Overloaded, decode_upload, search_batch
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.visualize import render_tile

__all__ = ["create_app"]

THUMBNAIL = 160
PAGE = Path(__file__).with_name("serve_page.html")


def _check_image(body: bytes) -> str:
    """The image format of ``body`` (its header only; the pixels are decoded once, by :func:`_decode`); 400 for
    bytes that are not an image."""
    if not body:
        raise HTTPException(400, "the upload is empty: send an image file in the 'image' field")
    try:
        with Image.open(io.BytesIO(body)) as im:  # reads the header only
            return im.format or "image"
    except (OSError, ValueError, SyntaxError):
        raise HTTPException(400, "the upload is not an image PIL can read (JPEG, PNG, WebP, ...)") from None


def _decode(embedder: Embedder, body: bytes, fmt: str):
    """The upload's evaluation image; 400 for a cut-off or damaged file (every pixel is decoded here)."""
    try:
        return decode_upload(embedder, body)
    except (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError) as err:
        raise HTTPException(400, f"the {fmt} image is truncated or corrupt ({err})") from None


def create_app(store: IndexStore, embedder: Embedder, k: int = 10, max_bytes: int = 10 * 2**20,
               max_batch: int = 8, batch_window_ms: float = 2.0, max_queue: int = 64) -> FastAPI:
    """The app for ``store`` searched with ``embedder`` (already checked to be the model that built it)."""
    app = FastAPI(title="metric-retrieval search", docs_url=None, redoc_url=None)
    metric = store.meta["metric"]
    batcher = DynamicBatcher(lambda requests: search_batch(store, embedder, requests), max_batch, batch_window_ms,
                             max_queue)
    app.state.batcher = batcher

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "items": len(store), "dim": store.meta["dim"], "factory": store.meta["factory"],
                "metric": metric}

    @app.get("/thumbnail/{n}")
    def thumbnail(n: int) -> Response:
        if not 0 <= n < len(store):
            raise HTTPException(404, f"no item {n}: the index holds items 0..{len(store) - 1}")
        buf = io.BytesIO()
        render_tile(store.items["paths"][n], THUMBNAIL).save(buf, format="JPEG", quality=85)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/search")
    def search_image(image: Annotated[UploadFile, File()],
                     top: Annotated[int, Query(alias="k", ge=1, le=1000)] = k) -> dict:
        kind = (image.content_type or "").split(";")[0].strip().lower()
        if not kind.startswith("image/"):
            raise HTTPException(415, f"expected an image upload (image/jpeg, image/png, ...), got content type "
                                     f"{kind or 'none'!r}")
        body = image.file.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise HTTPException(413, f"the image is larger than the limit of {max_bytes} bytes")
        image = _decode(embedder, body, _check_image(body))
        try:
            found = batcher((image, top))
        except Overloaded as err:
            raise HTTPException(503, f"the server is busy ({err}); retry shortly") from None
        results = [{**asdict(h), "thumbnail": f"/thumbnail/{h.item}"} for h in found.hits]
        return {"results": results, "predicted": found.predicted, "votes": found.votes}

    return app
