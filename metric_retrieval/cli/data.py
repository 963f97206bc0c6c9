"""``metric-retrieval data`` (``python data_utils.py``): dataset tools: check a dataset root, prepare a
resized/cropped cache, write synthetic data.

    metric-retrieval data check --data_name cub --data_path /data/CUB_200_2011 [--json] [--verify]
    metric-retrieval data prepare --data_name cars --data_path /data/cars196 --out /data/cars_256 [--size 256] [--crop]
    metric-retrieval data synth --layout sop --out /tmp/sop_synth [--image_size 64 64] [--images_per_class 3]
    metric-retrieval data icons --out /data/icons64 [--image_size 64] [--seed 0]   # real images, Debian icon themes
    metric-retrieval data glyphs --out /data/glyphs64 [--image_size 64] [--seed 0] # real images, Debian fonts
"""
from __future__ import annotations

import argparse
import json
import sys

from metric_retrieval.cli.common import new_parser, reports_errors


def get_args_parser(prog: str | None = None, add_help: bool = True) -> argparse.ArgumentParser:
    p = new_parser(prog, "Dataset tools", add_help)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate a dataset root; print per-split image and class counts")
    c.add_argument("--data_name", required=True, help="a registered dataset or alias (metric-retrieval train "
                   "--list; an unknown name lists them)")
    c.add_argument("--data_path", required=True, help="dataset root in its official layout")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    c.add_argument("--verify", action="store_true", help="also decode every image (slow on large datasets)")

    r = sub.add_parser("prepare", help="write a resized (optionally box-cropped) copy in the same layout")
    r.add_argument("--data_name", required=True)
    r.add_argument("--data_path", required=True)
    r.add_argument("--out", required=True, help="output root (a valid root for the same --data_name)")
    r.add_argument("--size", type=int, default=256, help="shorter image side after resizing (never upsampled)")
    r.add_argument("--crop", action="store_true", help="crop to the bounding boxes (cub and cars only)")
    r.add_argument("--workers", type=int, default=2, help="image conversion threads")
    r.add_argument("--skip_bad_images", action="store_true", help="leave undecodable images out with a warning")

    s = sub.add_parser("synth", help="write a miniature synthetic dataset in a real layout")
    s.add_argument("--layout", required=True, help="a dataset whose reader brings a synthetic layout (the readers "
                   "say which: an unknown name lists them)")
    s.add_argument("--out", required=True)
    s.add_argument("--image_size", type=int, nargs=2, default=(64, 64), metavar=("W", "H"))
    s.add_argument("--images_per_class", type=int, default=None, help="default: the layout's own")
    s.add_argument("--seed", type=int, default=0)

    i = sub.add_parser("icons", help="write the class-disjoint icon-theme set (real images; needs the Debian "
                                     "icon-theme packages, see metric_retrieval/data/icon_themes.py)")
    i.add_argument("--out", required=True, help="output root (folder layout; replaced if it exists)")
    i.add_argument("--image_size", type=int, default=64)
    i.add_argument("--min_themes", type=int, default=4, help="themes that must draw an icon name")
    i.add_argument("--min_images", type=int, default=4, help="distinct pictures a class needs")
    i.add_argument("--seed", type=int, default=0, help="class shuffle deciding the train/test halves")
    i.add_argument("--icon_root", default="/usr/share/icons")

    g = sub.add_parser("glyphs", help="write the class-disjoint font-glyph set (real images; needs Debian font "
                                      "packages, see metric_retrieval/data/font_glyphs.py)")
    g.add_argument("--out", required=True, help="output root (folder layout; replaced if it exists)")
    g.add_argument("--image_size", type=int, default=64)
    g.add_argument("--min_images", type=int, default=20, help="fonts that must draw a character distinctly")
    g.add_argument("--max_images", type=int, default=40, help="drawings kept per character (a seeded choice)")
    g.add_argument("--seed", type=int, default=0, help="drawing choice and class shuffle (train/test halves)")
    g.add_argument("--font_root", default="/usr/share/fonts")
    return p


def _print_check(report: dict) -> None:
    print(f"{report['dataset']} at {report['root']} (protocol: {report['protocol']})")
    for split, counts in report["splits"].items():
        extra = ", ".join(f"{v:,} {k}" for k, v in counts.items() if k != "images")
        print(f"  {split:<9} {counts['images']:>8,} images" + (f", {extra}" if extra else ""))
    for message in report["warnings"]:
        print(f"warning: {message}", file=sys.stderr)
    print("ok" if not report["warnings"] else f"ok with {len(report['warnings'])} warning(s)")


def _print_built(title: str, summary: dict) -> None:
    print(f"wrote the {title} set to {summary['root']}: " + ", ".join(
        f"{s} {v['classes']} classes / {v['images']} images" for s, v in summary["splits"].items()))


def run(args: argparse.Namespace) -> int:
    from metric_retrieval import data  # imported here so `--help` stays fast

    if args.command == "check":
        report = data.describe_dataset(args.data_name, args.data_path, verify_images=args.verify)
        if args.json:
            print(json.dumps(report))
        else:
            _print_check(report)
    elif args.command == "prepare":
        from metric_retrieval.data.prepare import prepare_dataset

        summary = prepare_dataset(args.data_name, args.data_path, args.out, size=args.size, crop=args.crop,
                                  workers=args.workers, skip_bad_images=args.skip_bad_images)
        print(f"wrote {summary['images']:,} images of {summary['dataset']} to {summary['out']} "
              f"(shorter side {summary['size']}, crop={summary['crop']})")
    elif args.command == "icons":
        from metric_retrieval.data.icon_themes import build_icon_dataset

        _print_built("icon-theme", build_icon_dataset(
            args.out, image_size=args.image_size, min_themes=args.min_themes, min_images=args.min_images,
            seed=args.seed, icon_root=args.icon_root))
    elif args.command == "glyphs":
        from metric_retrieval.data.font_glyphs import build_glyph_dataset

        _print_built("font-glyph", build_glyph_dataset(
            args.out, image_size=args.image_size, min_images=args.min_images, max_images=args.max_images,
            seed=args.seed, font_root=args.font_root))
    else:
        root = data.write_synthetic(args.layout, args.out, image_size=tuple(args.image_size),
                                    images_per_class=args.images_per_class, seed=args.seed)
        print(f"wrote a synthetic {args.layout} dataset to {root}")
    return 0



@reports_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run(get_args_parser(prog).parse_args(argv))
