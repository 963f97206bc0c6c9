"""The icon-theme set: alias merging, duplicate pictures, class-disjoint seeded split, missing packages.

Built on a fake ``icon_root`` of hand-drawn PNGs (exact expectations), and once on the installed Debian themes
(skipped with the apt command when they are absent).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import data_utils
from metric_retrieval.data.icon_themes import APT_COMMAND, MARKER, THEMES, build_icon_dataset, missing_themes
from metric_retrieval.utils.errors import UserError


def _icon(path: Path, color: tuple[int, int, int], size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (size, size), (*color, 255)).save(path)


def _fake_root(tmp_path: Path) -> Path:
    """7 themes; ``a``..``f`` drawn by all (each theme its own colour), ``b-alias`` is ``b``'s picture in every
    theme, ``dup`` has the same picture in 4 themes, ``tiny`` is only 16 px, ``rare`` is drawn by 2 themes."""
    root = tmp_path / "icons"
    for t, theme in enumerate(THEMES):
        for n, name in enumerate("abcdef"):
            _icon(root / theme / "48x48" / "apps" / f"{name}.png", (n * 40, t * 30, 7))
            _icon(root / theme / "16x16" / "apps" / f"{name}.png", (255, 255, 255), 16)  # smaller: not used
        _icon(root / theme / "apps" / "64" / "b-alias.png", (40, t * 30, 7), 64)  # resized to b's picture
        _icon(root / theme / "48x48" / "apps" / "dup.png", (9, 9, 9 if t < 4 else t))
        _icon(root / theme / "16x16" / "apps" / "tiny.png", (1, t, 1), 16)
        _icon(root / theme / "48x48" / "apps" / "symbolic" / "s.png", (2, t, 2))
        if t < 2:
            _icon(root / theme / "48x48" / "apps" / "rare.png", (3, t, 3))
    return root


def _classes(out: Path) -> dict[str, dict[str, list[str]]]:
    return {s: {d.name: sorted(f.name for f in d.iterdir()) for d in (out / s).iterdir()} for s in ("train", "test")}


def test_aliases_merged_duplicates_dropped_split_class_disjoint(tmp_path):
    out = tmp_path / "set"
    summary = build_icon_dataset(out, image_size=8, min_themes=4, min_images=4, seed=0,
                                 icon_root=_fake_root(tmp_path))
    classes = _classes(out)
    names = {**classes["train"], **classes["test"]}
    # dup has 1 + 3 distinct pictures (themes 4..6) = 4 >= min_images; tiny (< 32 px) and rare (2 themes) are out
    assert sorted(names) == ["a", "b", "c", "d", "dup", "e", "f"]
    assert not set(classes["train"]) & set(classes["test"])
    assert (len(classes["train"]), len(classes["test"])) == (3, 4)
    assert names["a"] == sorted(f"{t}.png" for t in THEMES)
    assert names["b"] == names["a"]  # b-alias merged into b, its identical pictures kept once
    assert len(names["dup"]) == 4
    with Image.open(out / "train" / classes["train"].popitem()[0] / "Tango.png") as im:
        assert im.size == (8, 8) and im.mode == "RGB"
    assert summary["splits"]["train"]["images"] == sum(len(v) for v in _classes(out)["train"].values())
    assert json.loads((out / MARKER).read_text())["seed"] == 0


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    root = _fake_root(tmp_path)
    splits = []
    for i, seed in enumerate((0, 0, 1, 2, 3)):
        build_icon_dataset(tmp_path / f"s{i}", image_size=8, seed=seed, icon_root=root)
        splits.append(sorted(_classes(tmp_path / f"s{i}")["train"]))
    assert splits[0] == splits[1]
    assert any(s != splits[0] for s in splits[2:])


def test_missing_themes_name_the_apt_command(tmp_path, capsys):
    root = _fake_root(tmp_path)
    (root / "oxygen").rename(root / "gone")
    assert missing_themes(root) == ["oxygen"]
    with pytest.raises(UserError, match="oxygen-icon-theme"):
        build_icon_dataset(tmp_path / "set", icon_root=root)
    parser = data_utils.get_args_parser()
    with pytest.raises(UserError, match=r"\['oxygen'\] are not installed"):
        data_utils.run(parser.parse_args(["icons", "--out", str(tmp_path / "x"), "--icon_root", str(root)]))
    assert "oxygen-icon-theme" in APT_COMMAND


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_themes()), reason=f"icon themes not installed: {APT_COMMAND}")
def test_installed_themes_build_a_real_set(tmp_path, capsys):
    out = tmp_path / "icons"
    parser = data_utils.get_args_parser()
    assert data_utils.run(parser.parse_args(["icons", "--out", str(out), "--image_size", "32"])) == 0
    assert "wrote the icon-theme set" in capsys.readouterr().out
    classes = _classes(out)
    assert len(classes["train"]) >= 50 and len(classes["test"]) >= 50
    assert not set(classes["train"]) & set(classes["test"])
    assert all(len(files) >= 4 for split in classes.values() for files in split.values())
