"""A real-image, class-disjoint retrieval set built from the desktop icon themes packaged in Debian.

A class is one freedesktop icon name (``user-trash``, ``printer``, ``folder-music``); its images are the
drawings of that name by different themes (Tango, GNOME, MATE, Oxygen, LXDE nuoveXT2, elementary-xfce,
Adwaita), each artist's own picture of the same concept. Retrieving the other themes' drawing of a name from
one theme's drawing is a small fine-grained cross-domain retrieval task that no one here made.

Building it: for every theme the largest PNG of each name (at least ``MIN_SOURCE_PX``), composited on white
and resized to ``image_size``. Names whose pictures are byte-identical (theme aliases such as ``gtk-copy`` ->
``edit-copy``) are merged into one class, so no picture can sit in two classes or on both sides of the split;
duplicate pictures inside a class (themes sharing artwork) are kept once. Classes with at least
``min_images`` distinct pictures are shuffled under ``seed`` and split in half: ``train/`` and ``test/``
(``folder`` layout, leave-one-out evaluation).
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from pathlib import Path

from PIL import Image

from metric_retrieval.data.disjoint_halves import write_disjoint_halves
from metric_retrieval.utils.errors import UserError

ICON_ROOT = Path("/usr/share/icons")
# theme folder -> Debian package that installs it (Adwaita comes with GTK on most desktops)
THEMES = {"Tango": "tango-icon-theme", "gnome": "gnome-icon-theme", "mate": "mate-icon-theme",
          "oxygen": "oxygen-icon-theme", "nuoveXT2": "lxde-icon-theme",
          "elementary-xfce": "elementary-xfce-icon-theme", "Adwaita": "adwaita-icon-theme"}
APT_COMMAND = "apt-get install --no-install-recommends " + " ".join(sorted(set(THEMES.values())))
MIN_SOURCE_PX = 32  # smaller drawings are too coarse to upscale
MARKER = ".icon_themes.json"
_SIZE = re.compile(r"^(\d+)(?:x\d+)?$")


def missing_themes(icon_root: Path = ICON_ROOT) -> list[str]:
    """Theme folders of :data:`THEMES` that are not installed under ``icon_root``."""
    return [t for t in THEMES if not (Path(icon_root) / t).is_dir()]


def _source_px(path: Path, theme_dir: Path) -> int:
    """The drawing size a theme file is filed under (``48x48/apps/x.png`` or ``apps/48/x.png``), else 0."""
    sizes = [int(m.group(1)) for part in path.relative_to(theme_dir).parts[:-1] if (m := _SIZE.match(part))]
    return max(sizes, default=0)


def theme_icons(theme_dir: Path) -> dict[str, Path]:
    """Icon name -> its largest PNG drawing (>= ``MIN_SOURCE_PX``) in one theme; symbolic icons skipped."""
    best: dict[str, tuple[int, str]] = {}
    for path in theme_dir.rglob("*.png"):
        if "symbolic" in path.name or "symbolic" in path.parts:
            continue
        px = _source_px(path, theme_dir)
        if px >= MIN_SOURCE_PX and (px, str(path)) > best.get(path.stem, (0, "")):
            best[path.stem] = (px, str(path))
    return {name: Path(p) for name, (_, p) in best.items()}


def render_icon(path: Path, image_size: int) -> Image.Image:
    """An RGB ``image_size`` square: the icon composited on white, resized with Lanczos filtering."""
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB").resize((image_size, image_size), Image.Resampling.LANCZOS)


def _merge_aliases(pictures: dict[str, dict[str, bytes]]) -> dict[str, set[str]]:
    """Union of names that share any identical picture -> {canonical name: member names}."""
    parent = {name: name for name in pictures}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    owner: dict[bytes, str] = {}
    for name in sorted(pictures):
        for digest in pictures[name].values():
            if digest in owner:
                a, b = sorted((find(owner[digest]), find(name)))
                parent[b] = a
            else:
                owner[digest] = name
    groups: dict[str, set[str]] = defaultdict(set)
    for name in pictures:
        groups[find(name)].add(name)
    return groups


def build_icon_dataset(out: str | Path, image_size: int = 64, min_themes: int = 4, min_images: int = 4,
                       seed: int = 0, icon_root: str | Path = ICON_ROOT) -> dict:
    """Write the icon-theme set to ``out`` (``train/<name>/<theme>.png``, ``test/...``); returns a summary.

    Args:
        min_themes: a name is a candidate when at least this many themes draw it.
        min_images: a (merged) class is kept when it has at least this many distinct pictures.
        seed: the class shuffle that decides the train/test halves.
    """
    icon_root = Path(icon_root)
    missing = missing_themes(icon_root)
    if missing:
        raise UserError(f"icon themes {missing} are not installed under {icon_root}; install them with "
                        f"`{APT_COMMAND}` (as root)")
    if image_size < 8 or min_images < 2 or min_themes < 2:
        raise UserError("--image_size must be >= 8, --min_images and --min_themes >= 2")
    by_theme = {theme: theme_icons(icon_root / theme) for theme in THEMES}
    counts: dict[str, int] = defaultdict(int)
    for icons in by_theme.values():
        for name in icons:
            counts[name] += 1
    candidates = sorted(n for n, c in counts.items() if c >= min_themes)
    images: dict[tuple[str, str], Image.Image] = {}
    pictures: dict[str, dict[str, bytes]] = defaultdict(dict)  # name -> theme -> digest of the rendered image
    for name in candidates:
        for theme, icons in by_theme.items():
            if name in icons:
                img = render_icon(icons[name], image_size)
                images[name, theme] = img
                pictures[name][theme] = hashlib.sha1(img.tobytes()).digest()
    classes = {}
    for canonical, members in sorted(_merge_aliases(pictures).items()):
        seen, kept = set(), {}
        for name in sorted(members):
            for theme, digest in sorted(pictures[name].items()):
                if digest not in seen:
                    seen.add(digest)
                    kept[f"{theme}{'' if name == canonical else f'_{name}'}.png"] = images[name, theme]
        if len(kept) >= min_images:
            classes[canonical] = kept
    order = sorted(classes)
    random.Random(seed).shuffle(order)
    return write_disjoint_halves(out, classes, order, MARKER, {
        "source": "icon_themes", "themes": THEMES, "image_size": image_size, "min_themes": min_themes,
        "min_images": min_images, "seed": seed})
