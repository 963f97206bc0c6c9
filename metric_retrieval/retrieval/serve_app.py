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
truncated image (400). The upload is decoded exactly as the catalogue was
(:class:`metric_retrieval.retrieval.embedder.Embedder` on a temporary copy of the file).
"""
from __future__ import annotations

import io
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from metric_retrieval.retrieval.indexing import classify, labelled_neighbours, search
from metric_retrieval.retrieval.visualize import render_tile

__all__ = ["create_app"]

THUMBNAIL = 160
PAGE = Path(__file__).with_name("serve_page.html")


def _check_image(body: bytes) -> str:
    """The image format of ``body``; 400 for bytes that are not a complete image."""
    if not body:
        raise HTTPException(400, "the upload is empty: send an image file in the 'image' field")
    try:
        im = Image.open(io.BytesIO(body))  # reads the header only
    except (OSError, ValueError, SyntaxError):
        raise HTTPException(400, "the upload is not an image PIL can read (JPEG, PNG, WebP, ...)") from None
    try:
        with im:
            im.load()  # decodes every pixel: a cut-off or damaged file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise HTTPException(400, f"the {im.format} image is truncated or corrupt ({err})") from None
    return im.format or "image"


def create_app(store: IndexStore, embedder: Embedder, k: int = 10, max_bytes: int = 10 * 2**20) -> FastAPI:
    """The app for ``store`` searched with ``embedder`` (already checked to be the model that built it)."""
    app = FastAPI(title="metric-retrieval search", docs_url=None, redoc_url=None)
    metric = store.meta["metric"]

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
        fmt = _check_image(body)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload.{fmt.lower()}"
            path.write_bytes(body)
            try:
                embedding = embedder.embed_file(str(path))
            except (OSError, ValueError, SyntaxError, RuntimeError) as err:
                raise HTTPException(400, f"the image cannot be decoded ({err})") from None
        hits = search(store, embedding[None].numpy(), top)[0]
        results = [{**asdict(h), "thumbnail": f"/thumbnail/{h.item}"} for h in hits]
        predicted, votes = classify(labelled_neighbours(store, embedding[None].numpy(), top)[0], metric)
        return {"results": results, "predicted": predicted, "votes": votes}

    return app
