"""A real-image, class-disjoint retrieval set built from the fonts packaged in Debian.

A class is one character (``latin_small_letter_g``, ``greek_capital_letter_psi``, ``digit_seven``); its
images are that character drawn by different font families, each type designer's own shape of the same
letter. Retrieving the other fonts' drawing of a character from one font's drawing is the font-invariant
shape matching of Omniglot-style few-shot benchmarks (Lake et al., Science 2015), on glyphs no one here drew.

Building it: every ``.ttf``/``.otf`` file under ``font_root`` is read with Pillow's FreeType binding; one file
per family is kept (its regular style where there is one; optical sizes such as ``LM Roman 10`` / ``LM Roman
12`` count as one family). Each character of :data:`ALPHABET` is drawn black on white, horizontally centred
on a fixed baseline at a fixed point size, so a letter keeps its size and height (``o`` / ``O``, ``p`` /
``P``). A character the font's character map lacks is left out of that font (fontTools reads the map; Pillow
would draw the ``.notdef`` box), and so is a drawing that is blank or equals that font's drawing of another
character (Latin ``A`` and Greek ``Alpha`` share an outline in most fonts, and all-caps fonts draw ``a`` as
``A``), so no picture belongs to two classes. Duplicate pictures inside a class (font clones) are kept once,
at most ``max_images`` per class are kept (a seeded choice), and classes with at least ``min_images`` are
shuffled under ``seed`` and split in half: ``train/`` and ``test/`` (``folder`` layout, leave-one-out
evaluation).
"""
from __future__ import annotations

import hashlib
import logging
import random
import re
import unicodedata
import warnings
from collections import defaultdict
from pathlib import Path

from fontTools.ttLib import TTFont, TTLibError
from PIL import Image, ImageDraw, ImageFont

from metric_retrieval.data.disjoint_halves import write_disjoint_halves
from metric_retrieval.utils.errors import UserError

FONT_ROOT = Path("/usr/share/fonts")
# Latin letters and digits, Greek and Cyrillic letters: the scripts most Debian text fonts cover.
ALPHABET = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            + "".join(map(chr, [*range(0x391, 0x3A2), *range(0x3A3, 0x3AA), *range(0x3B1, 0x3CA)]))
            + "".join(map(chr, range(0x410, 0x450))))
# The packages the README's numbers were measured with: ~150 text and display font packages, 213 MB.
FONT_PACKAGES = (
    "fonts-3270 fonts-adf-accanthis fonts-adf-baskervald fonts-adf-berenis fonts-adf-gillius fonts-adf-ikarius "
    "fonts-adf-libris fonts-adf-mekanus fonts-adf-oldania fonts-adf-romande fonts-adf-solothurn "
    "fonts-adf-switzera fonts-adf-tribun fonts-adf-universalis fonts-adf-verana fonts-agave fonts-allerta "
    "fonts-anonymous-pro fonts-apropal fonts-arapey fonts-averia-sans-gwf fonts-averia-serif-gwf fonts-b612 "
    "fonts-bebas-neue fonts-beteckna fonts-blankenburg fonts-breip fonts-cabin fonts-cabinsketch fonts-campania "
    "fonts-cantarell fonts-cardo fonts-century-catalogue fonts-cherrybomb fonts-clear-sans fonts-cmu "
    "fonts-comfortaa fonts-comic-neue fonts-courier-prime fonts-creep2 fonts-croscore fonts-crosextra-caladea "
    "fonts-crosextra-carlito fonts-dancingscript fonts-dclfonts fonts-dejavu fonts-dkg-handwriting fonts-dosis "
    "fonts-dustin fonts-ebgaramond fonts-ecolier-court fonts-engadget fonts-eurofurence fonts-f500 "
    "fonts-fantasma fonts-femkeklaver fonts-ferrite-core fonts-firacode fonts-freefont-ttf fonts-gamaliel "
    "fonts-georgewilliams fonts-gfs-artemisia fonts-gfs-baskerville fonts-gfs-bodoni-classic fonts-gfs-complutum "
    "fonts-gfs-didot fonts-gfs-didot-classic fonts-gfs-gazis fonts-gfs-neohellenic fonts-gfs-olga "
    "fonts-gfs-porson fonts-gfs-solomos fonts-gfs-theokritos fonts-gnutypewriter fonts-go fonts-goudybookletter "
    "fonts-gotico-antiqua fonts-hack fonts-havana fonts-hermit fonts-humor-sans fonts-inconsolata fonts-inter "
    "fonts-isabella fonts-jetbrains-mono fonts-joscelyn fonts-junction fonts-junicode fonts-jura fonts-karla "
    "fonts-karmilla fonts-kaushanscript fonts-klaudia-berenika fonts-kristi fonts-lato fonts-le-murmure "
    "fonts-league-mono fonts-league-spartan fonts-leckerli-one fonts-levien-museum fonts-levien-typoscript "
    "fonts-liberation fonts-libfinal fonts-lindenhill fonts-linuxlibertine fonts-lmodern fonts-lobster "
    "fonts-lobstertwo fonts-manrope fonts-monofur fonts-monoid fonts-mononoki fonts-mph-2b-damase fonts-mplus "
    "fonts-national-park fonts-ocr-a fonts-ocr-b fonts-oflb-euterpe fonts-oldstandard fonts-open-sans "
    "fonts-opendin fonts-opendyslexic fonts-osifont fonts-oxygen fonts-play fonts-prociono fonts-quattrocento "
    "fonts-quicksand fonts-radisnoir fonts-roadgeek fonts-roboto fonts-roboto-slab fonts-routed-gothic "
    "fonts-rufscript fonts-sjfonts fonts-sora fonts-staypuft fonts-stix fonts-summersby fonts-texgyre "
    "fonts-tiresias fonts-tomsontalks fonts-tuffy fonts-uniol fonts-urw-base35 fonts-yanone-kaffeesatz").split()
APT_COMMAND = "apt-get install --no-install-recommends " + " ".join(FONT_PACKAGES)
MIN_FAMILIES = 60  # fewer installed families than this cannot give classes of min_images pictures
MARKER = ".font_glyphs.json"
# Debian's fonts carry harmless table slack ("extra bytes in post.stringData") that fontTools warns about per file
logging.getLogger("fontTools").setLevel(logging.ERROR)
_REGULAR = ("regular", "book", "roman", "normal", "medium")


def class_name(char: str) -> str:
    """The folder name of a character's class: its Unicode name, e.g. ``latin_small_letter_a``.

    Unicode names keep ``A`` and ``a`` apart on case-insensitive file systems too.
    """
    return unicodedata.name(char).lower().replace(" ", "_").replace("-", "_")


def font_families(font_root: Path = FONT_ROOT) -> dict[str, Path]:
    """Family key -> one font file of that family under ``font_root`` (its regular style where there is one).

    The key is FreeType's family name without trailing optical-size digits, lower-cased. A file that Pillow or
    fontTools cannot read is left out with a warning naming it.
    """
    styles: dict[str, list[tuple[bool, str, Path]]] = defaultdict(list)
    for path in sorted([*Path(font_root).rglob("*.ttf"), *Path(font_root).rglob("*.otf")]):
        try:
            family, style = ImageFont.truetype(str(path), 12).getname()
            with TTFont(path, lazy=True) as tt:
                tt.getBestCmap()
        except (OSError, TTLibError, ValueError, KeyError, AssertionError) as e:
            warnings.warn(f"font {path} is left out: it cannot be read ({e})", stacklevel=2)
            continue
        key = re.sub(r"[\s\d]+$", "", family or path.stem).lower()
        styles[key].append((not any(r in (style or "").lower() for r in _REGULAR), path.name, path))
    return {key: min(files)[2] for key, files in styles.items()}


def render_glyph(font: ImageFont.FreeTypeFont, char: str, image_size: int) -> Image.Image:
    """An RGB ``image_size`` square: ``char`` in black on white, centred on a baseline at 72 % height."""
    img = Image.new("L", (image_size, image_size), 255)
    ImageDraw.Draw(img).text((image_size / 2, image_size * 0.72), char, font=font, fill=0, anchor="ms")
    return img.convert("RGB")


def font_pictures(path: Path, image_size: int) -> dict[str, Image.Image]:
    """Character -> its unambiguous drawing by one font (missing, blank and shared drawings left out)."""
    with TTFont(path, lazy=True) as tt:
        cmap = tt.getBestCmap() or {}
    font = ImageFont.truetype(str(path), round(image_size * 0.55))
    drawn = {c: render_glyph(font, c, image_size) for c in ALPHABET if ord(c) in cmap}
    owners: dict[bytes, list[str]] = defaultdict(list)
    for char, img in drawn.items():
        owners[img.tobytes()].append(char)
    return {c: img for c, img in drawn.items() if img.getextrema()[0][0] < 255 and owners[img.tobytes()] == [c]}


def build_glyph_dataset(out: str | Path, image_size: int = 64, min_images: int = 20, max_images: int = 40,
                        seed: int = 0, font_root: str | Path = FONT_ROOT) -> dict:
    """Write the font-glyph set to ``out`` (``train/<char name>/<family>.png``, ``test/...``); returns a summary.

    Args:
        min_images: a class is kept when at least this many fonts draw it distinctly.
        max_images: at most this many drawings per class (a seeded choice among the families).
        seed: the choice of drawings and the class shuffle that decides the train/test halves.
    """
    if image_size < 16 or min_images < 2 or max_images < min_images:
        raise UserError("--image_size must be >= 16, --min_images >= 2 and --max_images >= --min_images")
    families = font_families(Path(font_root))
    if len(families) < MIN_FAMILIES:
        raise UserError(f"only {len(families)} font families are installed under {font_root} (the glyph set "
                        f"needs {MIN_FAMILIES}); install the measured set with `{APT_COMMAND}` (as root)")
    stems = _file_stems(families)
    by_class: dict[str, dict[bytes, tuple[str, Image.Image]]] = defaultdict(dict)
    for family, path in sorted(families.items()):
        for char, img in font_pictures(path, image_size).items():
            by_class[class_name(char)].setdefault(hashlib.sha1(img.tobytes()).digest(), (family, img))
    rng = random.Random(seed)
    classes = {}
    for name, pictures in sorted(by_class.items()):
        kept = sorted(pictures.values(), key=lambda fi: fi[0])
        if len(kept) >= min_images:
            chosen = sorted(rng.sample(kept, min(max_images, len(kept))), key=lambda fi: fi[0])
            classes[name] = {f"{stems[family]}.png": img for family, img in chosen}
    order = sorted(classes)
    rng.shuffle(order)
    return write_disjoint_halves(out, classes, order, MARKER, {
        "source": "font_glyphs", "families": len(families), "image_size": image_size, "min_images": min_images,
        "max_images": max_images, "seed": seed})


def _file_stems(families: dict[str, Path]) -> dict[str, str]:
    """Family key -> a file-name stem of ``[a-z0-9_]``, unique (``_2``, ``_3`` ... where two keys collide)."""
    stems: dict[str, str] = {}
    for family in sorted(families):
        base = stem = re.sub(r"[^a-z0-9]+", "_", family)
        n = 1
        while stem in stems.values():
            n += 1
            stem = f"{base}_{n}"
        stems[family] = stem
    return stems
