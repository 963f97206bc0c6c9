"""The font-glyph set: left-out drawings, one file per family, class-disjoint seeded split, missing fonts.

Built on fonts written by the test with fontTools (every glyph a rectangle whose size says which character
and font it is, so each expectation is exact), and once on the installed Debian fonts when they are there.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen

import data_utils
from metric_retrieval.data import font_glyphs
from metric_retrieval.data.font_glyphs import (
    APT_COMMAND,
    MARKER,
    build_glyph_dataset,
    class_name,
    font_families,
    font_pictures,
    render_glyph,
)
from metric_retrieval.utils.errors import UserError


def _glyph(box: tuple[int, int, int, int] | None):
    pen = TTGlyphPen(None)
    if box:
        x0, y0, x1, y1 = box
        pen.moveTo((x0, y0)), pen.lineTo((x0, y1)), pen.lineTo((x1, y1)), pen.lineTo((x1, y0)), pen.closePath()
    return pen.glyph()


def _font(path: Path, family: str, style: str, boxes: dict[str, tuple[int, int, int, int] | None]) -> Path:
    """A TrueType font drawing each character of ``boxes`` as that rectangle (None: an empty glyph)."""
    names = {char: f"g{ord(char)}" for char in boxes}
    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder([".notdef", *names.values()])
    fb.setupCharacterMap({ord(c): n for c, n in names.items()})
    fb.setupGlyf({".notdef": _glyph((100, 0, 150, 700)), **{names[c]: _glyph(b) for c, b in boxes.items()}})
    fb.setupHorizontalMetrics({n: (1000, 0) for n in [".notdef", *names.values()]})
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": family, "styleName": style})
    fb.setupOS2(sTypoAscender=800, sTypoDescender=-200, usWinAscent=800, usWinDescent=200)
    fb.setupPost()
    path.parent.mkdir(parents=True, exist_ok=True)
    fb.save(str(path))
    return path


def _box(width: int, height: int) -> tuple[int, int, int, int]:
    return 500 - width // 2, 0, 500 + width // 2, height


def test_a_font_keeps_only_its_unambiguous_drawings(tmp_path):
    path = _font(tmp_path / "f.ttf", "Test Sans", "Regular",
                 {"a": _box(200, 400), "b": _box(400, 400), "c": _box(200, 400),  # a and c share an outline
                  "d": None})                                                      # blank
    pictures = font_pictures(path, 32)
    assert set(pictures) == {"b"}  # every other character is missing from the font's character map
    assert pictures["b"].size == (32, 32) and pictures["b"].mode == "RGB"
    assert pictures["b"].getextrema() == ((0, 255),) * 3


def test_glyphs_keep_their_size_on_a_fixed_baseline(tmp_path):
    from PIL import ImageFont

    path = _font(tmp_path / "f.ttf", "Test Sans", "Regular", {"o": _box(400, 300), "O": _box(400, 600)})
    font = ImageFont.truetype(str(path), 20)
    small, big = (render_glyph(font, c, 40).convert("L").point(lambda v: v < 128).getbbox() for c in "oO")
    assert small[3] == big[3]  # one baseline
    assert small[1] > big[1]  # the capital is taller


def test_one_file_per_family_its_regular_style(tmp_path):
    boxes = {"a": _box(200, 400)}
    _font(tmp_path / "x" / "LMRoman10-Bold.ttf", "LM Roman 10", "Bold", boxes)
    _font(tmp_path / "x" / "LMRoman12-Regular.ttf", "LM Roman 12", "Regular", boxes)
    _font(tmp_path / "y" / "Other-Italic.ttf", "Other", "Italic", boxes)
    (tmp_path / "y" / "broken.ttf").write_bytes(b"not a font")
    with pytest.warns(UserWarning, match="broken.ttf is left out"):
        families = font_families(tmp_path)
    assert {k: p.name for k, p in families.items()} == {"lm roman": "LMRoman12-Regular.ttf",
                                                        "other": "Other-Italic.ttf"}


def _fake_root(tmp_path: Path, fonts: int = 6) -> Path:
    """``fonts`` families drawing a-h distinctly; g only in 3 fonts (too few), h shared with a in font 0."""
    root = tmp_path / "fonts"
    for k in range(fonts):
        boxes = {c: _box(100 + 100 * i, 300 + 100 * k) for i, c in enumerate("abcdefh")}
        if k < 3:
            boxes["g"] = _box(800, 100 + 100 * k)
        if k == 0:
            boxes["h"] = boxes["a"]
        _font(root / f"F{k}-Regular.ttf", f"Family {chr(65 + k)}", "Regular", boxes)
    _font(root / "F0-Bold.ttf", "Family A", "Bold", {c: _box(900, 900) for c in "abcdefgh"})  # same family
    return root


def _classes(out: Path) -> dict[str, dict[str, list[str]]]:
    return {split: {d.name: sorted(f.name for f in d.iterdir()) for d in (out / split).iterdir()}
            for split in ("train", "test")}


def test_build_writes_a_class_disjoint_set(tmp_path, monkeypatch):
    monkeypatch.setattr(font_glyphs, "MIN_FAMILIES", 6)
    out = tmp_path / "set"
    summary = build_glyph_dataset(out, image_size=32, min_images=4, max_images=5, seed=0,
                                  font_root=_fake_root(tmp_path))
    classes = _classes(out)
    names = {**classes["train"], **classes["test"]}
    # g has 3 drawings (< min_images); a and h lose font 0's shared drawing but keep 5 of the other 5 fonts
    assert sorted(names) == sorted(class_name(c) for c in "abcdefh")
    assert not set(classes["train"]) & set(classes["test"])
    assert len(classes["train"]) == 3 and len(classes["test"]) == 4
    assert names[class_name("a")] == [f"family_{c.lower()}.png" for c in "BCDEF"]
    assert all(len(files) == 5 for files in names.values())  # max_images: 5 of the 6 fonts, a seeded choice
    assert summary["splits"] == {"train": {"classes": 3, "images": 15}, "test": {"classes": 4, "images": 20}}
    assert (out / MARKER).is_file() and summary["families"] == 6


def test_split_and_choice_follow_the_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(font_glyphs, "MIN_FAMILIES", 6)
    root = _fake_root(tmp_path)
    sets = [_classes(tmp_path / f"s{i}") for i, seed in enumerate((0, 0, 1))
            if build_glyph_dataset(tmp_path / f"s{i}", image_size=32, min_images=4, max_images=5, seed=seed,
                                   font_root=root)]
    assert sets[0] == sets[1] and sets[0] != sets[2]


def test_too_few_fonts_say_how_to_install_them(tmp_path):
    root = _fake_root(tmp_path, fonts=2)
    with pytest.raises(UserError, match=r"only 2 font families are installed .*fonts-dejavu"):
        build_glyph_dataset(tmp_path / "set", font_root=root)
    parser = data_utils.get_args_parser()
    with pytest.raises(UserError, match="apt-get install"):
        data_utils.run(parser.parse_args(["glyphs", "--out", str(tmp_path / "x"), "--font_root", str(root)]))
    with pytest.raises(UserError, match="--max_images"):
        build_glyph_dataset(tmp_path / "set", min_images=10, max_images=5, font_root=root)


@pytest.mark.slow
def test_installed_fonts_build_a_real_set(tmp_path, capsys):
    if len(font_families()) < font_glyphs.MIN_FAMILIES:
        pytest.skip(f"fonts not installed: {APT_COMMAND}")
    out = tmp_path / "glyphs"
    parser = data_utils.get_args_parser()
    assert data_utils.run(parser.parse_args(["glyphs", "--out", str(out), "--image_size", "32"])) == 0
    assert "wrote the font-glyph set" in capsys.readouterr().out
    classes = _classes(out)
    assert len(classes["train"]) >= 60 and len(classes["test"]) >= 60
    assert not set(classes["train"]) & set(classes["test"])
    assert all(20 <= len(files) <= 40 for split in classes.values() for files in split.values())


def test_families_whose_names_clash_as_files_get_distinct_files(tmp_path, monkeypatch):
    monkeypatch.setattr(font_glyphs, "MIN_FAMILIES", 6)
    root = _fake_root(tmp_path)
    _font(root / "Clash-Regular.ttf", "Family-A", "Regular", {c: _box(150 + 100 * i, 900) for i, c in
                                                             enumerate("abcdefh")})
    out = tmp_path / "set"
    build_glyph_dataset(out, image_size=32, min_images=4, max_images=7, font_root=root)
    files = _classes(out)
    names = {**files["train"], **files["test"]}
    assert {"family_a.png", "family_a_2.png"} <= set(names[class_name("b")])


def test_an_unreadable_font_is_named_and_a_file_as_out_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(font_glyphs, "MIN_FAMILIES", 6)
    root = _fake_root(tmp_path)
    (root / "Broken.ttf").write_bytes(b"\0\1\0\0" + b"\0" * 60)
    with pytest.warns(UserWarning, match="Broken.ttf is left out"):
        assert len(font_families(root)) == 6
    (root / "Broken.ttf").unlink()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        build_glyph_dataset(tmp_path / "file", image_size=32, min_images=4, font_root=root)
