"""Benchmark: the training input pipeline (decode + augmentation + collate through a DataLoader), images/s.

CUB-like JPEGs (``--image_width`` x ``--image_height``, default 500 x 375, quality 90) are written once by
``data.ensure_synthetic("cub", ...)`` into ``--data_dir`` (a cache; reused by later runs). Every variant
runs the same ``--preset`` training transform through a ``torch.utils.data.DataLoader`` with the same
``--workers``, ``--batch_size``, persistent workers, prefetch 4 and pinned memory on CUDA (as the trainer):

- ``pil``      — the baseline: ``torchvision.datasets.ImageFolder`` (``Image.open(p).convert("RGB")``) + transform;
- ``fast``     — ``RetrievalDataset(decode="fast")``, what training uses: reduced-size JPEG decoding where the
  preset allows it, transforms on uint8 tensors;
- ``cache``    — ``RetrievalDataset(decode="cache")``: ``fast`` plus the exact on-disk cache of decode + the
  preset's fixed-size first resize (cgd, clf; :mod:`data.decoded_cache`); its warm-up epoch fills the cache,
  so the timed epochs show every epoch after the first;
- ``tvjpeg``   — ``torchvision.io.decode_jpeg`` (libjpeg-turbo, full size) + the same tensor transforms
  (``--decoders``: measured to decide the CPU decoder);
- ``prepared`` — ``fast`` on the ``data_utils.py prepare --size 256`` cache of the same images (``--prepared``);
- ``gpu``      — files read by the workers, decoded as a batch by nvJPEG and transformed on the GPU (CUDA only).

Variants alternate for ``--repeats`` rounds (one untimed warm-up epoch each first, so page cache and worker
start-up are out); the best round of each is reported with the ratio to ``pil``. Not run by the tests::

    python benchmarks/bench_data.py --workers 2 --num_images 400 --preset cgd
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
from data.dataset import RetrievalDataset  # noqa: E402
from data.image_io import decode_jpeg_batch  # noqa: E402
from data.prepare import prepare_dataset  # noqa: E402

CUB_CLASSES = 200


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (same for every variant)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_images", type=int, default=400, help="images per epoch")
    p.add_argument("--preset", default="cgd", help="training transform preset: cgd, clf, das, abir")
    p.add_argument("--image_size", type=int, default=224, help="network input size of the preset")
    p.add_argument("--image_width", type=int, default=500, help="width of the synthetic JPEGs")
    p.add_argument("--image_height", type=int, default=375, help="height of the synthetic JPEGs")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per round")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds; the best is reported")
    p.add_argument("--decoders", action="store_true", help="also time torchvision.io.decode_jpeg on CPU")
    p.add_argument("--prepared", action="store_true", help="also time the `data_utils.py prepare` 256 cache")
    p.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "metric-retrieval-bench-data"),
                   help="cache folder of the synthetic images")
    return p


class TVJpegDataset(Dataset):
    """``torchvision.io.decode_jpeg`` at full size, then the transform (on a uint8 tensor)."""

    def __init__(self, paths: list[str], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        return self.transform(decode_jpeg(read_file(self.paths[i]), mode=ImageReadMode.RGB)), 0


class FileBytesDataset(Dataset):
    """Encoded files as 1-D uint8 tensors, for decoding on the GPU in the main process."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from torchvision.io import read_file

        return read_file(self.paths[i])


def _list_collate(batch: list) -> list:
    return batch


def make_images(args: argparse.Namespace) -> Path:
    per_class = max(1, -(-args.num_images // CUB_CLASSES))
    root = Path(args.data_dir) / f"cub_{args.image_width}x{args.image_height}_{per_class}"
    return data.ensure_synthetic("cub", root, image_size=(args.image_width, args.image_height),
                                 images_per_class=per_class)


def image_paths(root: Path, n: int) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.jpg"))[:n]


def loader(dataset: Dataset, args: argparse.Namespace, collate=None) -> DataLoader:
    workers = args.workers
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, collate_fn=collate)


def build_variants(args: argparse.Namespace, root: Path) -> dict[str, DataLoader]:
    from torchvision.datasets import ImageFolder

    tf = data.build_transform(args.preset, train=True, image_size=args.image_size)
    paths = image_paths(root, args.num_images)
    folder = ImageFolder(str(next(root.rglob("images"))), transform=tf)
    wanted = set(paths)
    keep = [i for i, (p, _) in enumerate(folder.samples) if p in wanted]
    fast = RetrievalDataset(paths, [0] * len(paths), ["all"], transform=tf, decode="fast")
    # decode="cache": the warm-up epoch fills the cache, the timed epochs show the steady state (epoch >= 2)
    cached = RetrievalDataset(paths, [0] * len(paths), ["all"], transform=tf, decode="cache",
                              cache_dir=str(root) + "_decoded")
    out = {"pil": loader(Subset(folder, keep), args), "fast": loader(fast, args), "cache": loader(cached, args)}
    if args.decoders:
        out["tvjpeg"] = loader(TVJpegDataset(paths, tf), args)
    if args.prepared:
        cache = Path(str(root) + "_256")
        if not (cache / ".prepared.json").is_file():
            prepare_dataset("cub", root, cache, size=256, workers=2)
        out["prepared"] = loader(RetrievalDataset(image_paths(cache, args.num_images), [0] * len(paths), ["all"],
                                                  transform=tf, decode="fast"), args)
    if torch.cuda.is_available():
        out["gpu"] = loader(FileBytesDataset(paths), args, collate=_list_collate)
    return out


def run_epochs(name: str, dl: DataLoader, epochs: int, tf) -> int:
    """Iterate ``epochs`` epochs; returns the number of images seen (GPU variant decodes here)."""
    seen = 0
    for _ in range(epochs):
        for batch in dl:
            if name == "gpu":
                images = torch.stack([tf(x) for x in decode_jpeg_batch(batch)])
                torch.cuda.synchronize()
            else:
                images = batch[0]
            seen += images.shape[0]
    return seen


def main(args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(1)  # the workers do the work; keep the main process off the shared cores
    root = make_images(args)
    variants = build_variants(args, root)
    tf = data.build_transform(args.preset, train=True, image_size=args.image_size)
    best: dict[str, float] = {}
    for name, dl in variants.items():
        run_epochs(name, dl, 1, tf)  # warm-up: worker start-up, page cache, nvJPEG handles
    for round_ in range(args.repeats):
        for name, dl in variants.items():
            start = time.perf_counter()
            seen = run_epochs(name, dl, args.epochs, tf)
            rate = seen / (time.perf_counter() - start)
            best[name] = max(best.get(name, 0.0), rate)
            print(f"round {round_ + 1} {name:<9} {rate:8.1f} images/s", flush=True)
    print(f"\n{args.preset} @ {args.image_size}, {args.num_images} JPEGs of {args.image_width}x{args.image_height}, "
          f"{args.workers} workers, batch {args.batch_size} (best of {args.repeats}):")
    for name, rate in best.items():
        print(f"  {name:<9} {rate:8.1f} images/s   x{rate / best['pil']:.2f} vs pil")
    return best


if __name__ == "__main__":
    main(get_args_parser().parse_args())
