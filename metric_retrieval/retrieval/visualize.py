"""Visual retrieval output: a one-row PNG montage and a self-contained HTML page (PIL only).

The CGD/CLF ``test.py`` writes the query and each result as separate 224×224 JPEGs with an
8-px green (same label) or red (different label) border; the README figures are hand-made montages of those.
:func:`write_montage` produces that montage directly: the query tile first, then the K results, each tile
``tile × tile`` (image fitted inside, aspect kept, on white), the rank and the distance written under each
tile. Borders (8 px, drawn on the tile's edge): green = same class, red = different class, grey = unknown,
blue = the query. ``query_box`` (x1, y1, x2, y2 in original pixels, e.g. a landmark query's bbx) is drawn on
the query image as a yellow rectangle. An image that cannot be read becomes a grey "unreadable" tile.

:func:`write_html` shows the same as an HTML page with the thumbnails embedded as base64 JPEG, so the page is
one self-contained file; its tiles sit in a CSS grid that wraps to the window's width, captioned with the
class names when they are known.
"""
from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["BORDER", "COLORS", "TEXT_HEIGHT", "render_tile", "write_html", "write_montage"]

BORDER = 8
TEXT_HEIGHT = 22
COLORS = {True: (0, 200, 0), False: (220, 0, 0), None: (128, 128, 128), "query": (30, 90, 230)}
_BOX_COLOR = (255, 220, 0)


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _load(path: str | os.PathLike, box: Sequence[float] | None = None) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, ValueError):
        return None
    if box is not None:
        draw = ImageDraw.Draw(im)
        width = max(2, round(max(im.size) / 150))
        draw.rectangle([float(v) for v in box[:4]], outline=_BOX_COLOR, width=width)
    return im


def render_tile(path: str | os.PathLike, tile: int = 224, color: tuple[int, int, int] | None = None,
                box: Sequence[float] | None = None) -> Image.Image:
    """One ``tile × tile`` RGB tile: the image fitted inside on white, an 8-px border of ``color``."""
    canvas = Image.new("RGB", (tile, tile), (255, 255, 255))
    im = _load(path, box)
    inner = max(1, tile - 2 * BORDER)
    if im is None:
        canvas.paste((200, 200, 200), (BORDER, BORDER, tile - BORDER, tile - BORDER))
        ImageDraw.Draw(canvas).text((BORDER + 4, tile // 2 - 7), "unreadable", fill=(0, 0, 0), font=_font())
    else:
        im.thumbnail((inner, inner), Image.Resampling.BILINEAR)
        if max(im.size) < inner:  # small images are enlarged to fill the tile as well
            s = inner / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                           Image.Resampling.BILINEAR)
        canvas.paste(im, ((tile - im.width) // 2, (tile - im.height) // 2))
    if color is not None:
        ImageDraw.Draw(canvas).rectangle([0, 0, tile - 1, tile - 1], outline=color, width=BORDER)
    return canvas


def _check(result_paths: Sequence, distances: Sequence, correct: Sequence) -> None:
    if not (len(result_paths) == len(distances) == len(correct)):
        raise ValueError(f"result_paths ({len(result_paths)}), distances ({len(distances)}) and correct "
                         f"({len(correct)}) must have the same length")


def write_montage(query_path: str | os.PathLike, result_paths: Sequence[str | os.PathLike],
                  distances: Sequence[float], correct: Sequence[bool | None], out_png: str | os.PathLike,
                  tile: int = 224, query_box: Sequence[float] | None = None) -> str:
    """Write the query + K results as one PNG of size ((K+1)·tile) × (tile + 22); returns the path."""
    _check(result_paths, distances, correct)
    n = len(result_paths) + 1
    sheet = Image.new("RGB", (n * tile, tile + TEXT_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    sheet.paste(render_tile(query_path, tile, COLORS["query"], query_box), (0, 0))
    draw.text((BORDER, tile + 4), "query", fill=(0, 0, 0), font=font)
    for r, (p, d, c) in enumerate(zip(result_paths, distances, correct), start=1):
        c = None if c is None else bool(c)
        sheet.paste(render_tile(p, tile, COLORS[c]), (r * tile, 0))
        draw.text((r * tile + BORDER, tile + 4), f"#{r}  {float(d):.4f}", fill=COLORS[c] if c is not None
                  else (0, 0, 0), font=font)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    sheet.save(out_png, format="PNG")
    return os.fspath(out_png)


def _data_uri(path: str | os.PathLike, tile: int, box: Sequence[float] | None = None) -> str:
    buf = io.BytesIO()
    render_tile(path, tile, None, box).save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def write_html(query_path: str | os.PathLike, result_paths: Sequence[str | os.PathLike],
               distances: Sequence[float], correct: Sequence[bool | None], out_html: str | os.PathLike,
               tile: int = 224, query_box: Sequence[float] | None = None, title: str | None = None,
               query_class: str | None = None, classes: Sequence[str] | None = None) -> str:
    """Write a self-contained HTML page (base64 thumbnails): the query, then the K ranked results in a grid that
    wraps to the window's width; each caption gives the rank, distance, verdict and (if known) class name."""
    _check(result_paths, distances, correct)
    title = title or f"Retrieval results for {os.path.basename(os.fspath(query_path))}"

    def figure(path: str | os.PathLike, caption: str, color: tuple[int, int, int], box=None) -> str:
        return (f'<figure style="margin:0;text-align:center;font:13px sans-serif">'
                f'<img src="{_data_uri(path, tile, box)}" width="{tile}" height="{tile}" '
                f'style="border:{BORDER}px solid {_hex(color)};box-sizing:border-box" '
                f'alt="{html.escape(os.fspath(path))}" title="{html.escape(os.fspath(path))}">'
                f"<figcaption>{caption}</figcaption></figure>")

    def named(name: str | None) -> str:
        return "" if name is None else f'<br><span class="class">{html.escape(str(name))}</span>'

    parts = [figure(query_path, "query" + named(query_class), COLORS["query"], query_box)]
    for r, (p, d, c) in enumerate(zip(result_paths, distances, correct), start=1):
        c = None if c is None else bool(c)
        verdict = {True: "same class", False: "different class", None: "class unknown"}[c]
        parts.append(figure(p, f"#{r} &middot; {float(d):.4f} &middot; {verdict}"
                            + named(None if classes is None else classes[r - 1]), COLORS[c]))
    grid = f"display:grid;grid-template-columns:repeat(auto-fill,{tile}px);gap:8px"
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
            f'<body style="font-family:sans-serif"><h3>{html.escape(title)}</h3>\n'
            f"<p>{html.escape(os.fspath(query_path))} &mdash; distances are Euclidean between "
            f'L2-normalised embeddings</p>\n<div class="results" style="{grid}">' + "\n".join(parts)
            + "</div>\n</body></html>\n")
    os.makedirs(os.path.dirname(os.path.abspath(out_html)), exist_ok=True)
    with open(out_html, "w", encoding="utf-8") as f:
        f.write(page)
    return os.fspath(out_html)
