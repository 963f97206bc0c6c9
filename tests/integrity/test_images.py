"""Issue 26 items 2 and 8: the pixel limit checked from the header before decoding (RSS measured in a
subprocess), over-limit files skipped and reported by index.py, and high-bit-depth / CMYK / palette images
converted to the right 8-bit RGB pixels."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import index as index_cli
from metric_retrieval.data.image_io import (
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    check_image,
    decode_image,
    load_image,
    open_image,
)
from metric_retrieval.retrieval.embedder import Embedder
from metric_retrieval.retrieval.index_store import IndexStore
from tests.index.conftest import write_catalogue

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    """12000×12000 black 1-bit PNG: 144 M pixels in about 20 KB."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (12000, 12000)).save(path, optimize=False)
    return path


def test_over_limit_image_is_refused_from_its_header(huge_png):
    assert huge_png.stat().st_size < 1_000_000
    for read in (open_image, load_image, decode_image, lambda p: decode_image(str(p))):
        with pytest.raises(ImageTooLargeError, match=f"12000x12000 = 144000000 pixels, more than the limit of "
                                                     f"{DEFAULT_MAX_PIXELS}"):
            read(str(huge_png))
    assert "ImageTooLargeError" in check_image(str(huge_png))  # what the training/eval readers' check reports


RSS_SCRIPT = """
import resource, sys
from metric_retrieval.data.image_io import decode_image, ImageTooLargeError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(4):
    try:
        decode_image(sys.argv[1])
    except ImageTooLargeError:
        pass
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_refusing_a_12000_squared_png_costs_no_memory(huge_png):
    """Peak RSS growth of four refused decodes, measured in a fresh process: under 50 MB (a decode would add
    144 MB as 1-bit, 432 MB as RGB)."""
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(huge_png)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) < 50e6


def test_index_build_skips_and_reports_an_over_limit_image(checkpoint, tmp_path, huge_png, capsys):
    root = tmp_path / "cat"
    write_catalogue(root, per_class=2)
    (root / "red" / "huge.png").write_bytes(huge_png.read_bytes())
    out = tmp_path / "idx"
    assert index_cli.main(["build", "--checkpoint", str(checkpoint), "--images", str(root), "--out", str(out),
                           "--workers", "0", "--no_progress", "--device", "cpu"]) == 0
    assert len(IndexStore.open(out)) == 6
    report = (out / "bad_files.tsv").read_text().splitlines()
    assert len(report) == 2 and "huge.png" in report[1] and "more than the limit" in report[1]
    assert json.loads(capsys.readouterr().out)["bad_files"] == 1


def test_max_pixels_flag_sets_the_limit(checkpoint, tmp_path):
    root = tmp_path / "cat"
    write_catalogue(root, per_class=2)  # 24x24 images: 576 pixels
    out = tmp_path / "idx"
    try:
        assert index_cli.main(["build", "--checkpoint", str(checkpoint), "--images", str(root), "--out", str(out),
                               "--workers", "0", "--no_progress", "--device", "cpu", "--max_pixels", "500"]) == 2
    finally:
        from metric_retrieval.data.image_io import set_max_pixels
        set_max_pixels(DEFAULT_MAX_PIXELS)


@pytest.mark.slow
def test_a_30000_squared_png_beyond_pils_own_limit_is_refused_too(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(path)
    with pytest.raises(ImageTooLargeError, match="limit"):
        decode_image(str(path))


def grey16(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A 16-bit grey PNG whose values are exactly 257 × an 8-bit ramp, and that ramp as an 8-bit PNG."""
    eight = (np.arange(48 * 48).reshape(48, 48) % 256).astype(np.uint8)
    sixteen = eight.astype(np.uint16) * 257
    p16, p8 = tmp_path / "g16.png", tmp_path / "g8.png"
    Image.fromarray(sixteen).save(p16)
    Image.fromarray(eight).save(p8)
    assert Image.open(p16).mode.startswith("I")
    return p16, p8, eight


def test_16_bit_grey_is_scaled_not_binarised(tmp_path):
    p16, p8, eight = grey16(tmp_path)
    expected = np.repeat(eight[:, :, None], 3, axis=2)
    assert np.array_equal(np.asarray(load_image(str(p16))), expected)
    assert torch.equal(decode_image(str(p16)), torch.from_numpy(expected).permute(2, 0, 1))
    assert not np.array_equal(np.asarray(Image.open(p16).convert("RGB")), expected)  # what PIL alone does


def test_16_bit_png_embeds_like_its_8_bit_version(tmp_path, checkpoint):
    p16, p8, _ = grey16(tmp_path)
    embedder = Embedder(checkpoint)
    assert float(embedder.embed_file(str(p16)) @ embedder.embed_file(str(p8))) > 0.9999


def test_float_cmyk_and_palette_modes(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(ramp, "F").save(tmp_path / "f.tiff")
    grey = np.rint(ramp * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(str(tmp_path / "f.tiff")))[:, :, 0], grey)
    # CMYK (0, 255, 255, 0) is pure red; (0, 0, 0, 255) black; (0, 0, 0, 0) white
    cmyk = np.array([[[0, 255, 255, 0], [0, 0, 0, 255], [0, 0, 0, 0]]], np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tiff")
    assert np.asarray(load_image(str(tmp_path / "c.tiff"))).tolist() == [[[255, 0, 0], [0, 0, 0], [255, 255, 255]]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putdata([1, 0])
    palette.save(tmp_path / "p.png")
    assert np.asarray(load_image(str(tmp_path / "p.png"))).tolist() == [[[200, 100, 50], [10, 20, 30]]]
