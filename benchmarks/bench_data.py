"""Benchmark: the training input pipeline (decode + augmentation + collate through a DataLoader), images/s.

CUB-like JPEGs (``--image_width`` x ``--image_height``, default 500 x 375, quality 90) are written once by
``data.ensure_synthetic("cub", ...)`` into ``--data_dir`` (a cache; reused by later runs). Every variant
runs the same ``--preset`` training transform through a ``torch.utils.data.DataLoader`` with the same
``--workers``, ``--batch_size``, persistent workers, prefetch 4 and pinned memory on CUDA (as the trainer),
and each batch is turned into the network input on ``--device`` inside the timed loop, as the trainer does:

- ``pil``      — the baseline, the original code's pipeline: ``torchvision.datasets.ImageFolder``
  (``Image.open(p).convert("RGB")``), the preset's geometric steps on the PIL image, then torchvision's
  ``ToImage`` + ``ToDtype(float32, scale=True)`` + ``Normalize`` in the workers, ``default_collate``;
- ``fast``     — ``--decode fast`` (and ``auto`` where nothing is cached): ``RetrievalDataset(decode="fast")``
  (reduced-size JPEG decoding where the preset allows it, libjpeg-turbo into a tensor, geometric steps on
  uint8 tensors), uint8 batches collated channels-last (:func:`metric_retrieval.data.batch.collate`), normalised on the
  device (:class:`DeviceInput`);
- ``cache``    — (cgd, clf) ``--decode cache`` (and ``auto``, the default, where the cache fits): ``fast`` plus
  the exact on-disk cache of decode + the preset's fixed-size first resize (:mod:`metric_retrieval.data.decoded_cache`);
  the timed epochs show every epoch after the first; ``cache_1st`` is its warm-up epoch, which fills an emptied
  cache (one epoch, not a best of rounds);
- ``fast_f32`` — (``--ablation``) the ``fast`` decoding with the preset's float pipeline in the workers
  (``build_transform(normalize=True)``) and ``default_collate``: what shipping uint8 adds;
- ``prepared`` — (``--prepared``) ``fast`` on the ``data_utils.py prepare --size 256`` copy of the same images;
- ``gpu``      — (CUDA only) ``--decode gpu``: the workers read files,
  :class:`metric_retrieval.data.device_decode.DeviceDecoder` decodes the batch with nvJPEG and augments it on the GPU.

Variants alternate for ``--repeats`` rounds (one untimed warm-up epoch each first, so page cache and worker
start-up are out); the best round of each is reported with the ratio to ``pil``. Not run by the tests::

    python benchmarks/bench_data.py --workers 2 --num_images 400 --preset cgd --ablation
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metric_retrieval import data  # noqa: E402
from metric_retrieval.data.batch import DeviceInput, collate  # noqa: E402
from metric_retrieval.data.dataset import RetrievalDataset  # noqa: E402
from metric_retrieval.data.decoded_cache import split_fixed_resize  # noqa: E402
from metric_retrieval.data.device_decode import DeviceDecoder, EncodedFiles  # noqa: E402
from metric_retrieval.data.prepare import prepare_dataset  # noqa: E402
from metric_retrieval.models.backbones.base import DEEP_METRIC_BGR255, IMAGENET_RGB  # noqa: E402

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
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds; the best is reported")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where batches are normalised (and decoded, for the gpu variant)")
    p.add_argument("--ablation", action="store_true", help="also time fast decoding with float32 batches")
    p.add_argument("--prepared", action="store_true", help="also time the `data_utils.py prepare` 256 cache")
    p.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "metric-retrieval-bench-data"),
                   help="cache folder of the synthetic images")
    return p


@dataclass
class Variant:
    """A loader and what turns its batch into network input on the device."""

    loader: DataLoader
    to_input: Callable[..., torch.Tensor]
    cache_dir: Path | None = None  # emptied after the warm-up, then one epoch refilling it is timed (cache_1st)


class ToBGR(torch.nn.Module):
    """RGB → BGR of a (3, H, W) tensor (the abir preset's channel order)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-3)


def input_spec(preset: str):
    """The normalisation of the model each preset's paper trains (ABIR's Deep_Metric input, else ImageNet)."""
    return DEEP_METRIC_BGR255 if data.TRANSFORMS.canonical(preset) == "abir" else IMAGENET_RGB


def plain_transform(preset: str, image_size: int) -> v2.Compose:
    """The preset as the original code ran it: geometric steps, then torchvision's float conversion and
    ``Normalize`` per image, with the statistics of the preset's model."""
    stats = data.build_normalize(input_spec(preset))
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)] + ([ToBGR()] if stats.bgr else [])
    steps = data.TRANSFORMS.get(preset)(True, image_size)
    return v2.Compose(steps + to_float + [v2.Normalize(stats.mean, stats.std), v2.ToPureTensor()])


def make_images(args: argparse.Namespace) -> Path:
    per_class = max(1, -(-args.num_images // CUB_CLASSES))
    root = Path(args.data_dir) / f"cub_{args.image_width}x{args.image_height}_{per_class}"
    return data.ensure_synthetic("cub", root, image_size=(args.image_width, args.image_height),
                                 images_per_class=per_class)


def image_paths(root: Path, n: int) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.jpg"))[:n]


def loader(dataset: Dataset, args: argparse.Namespace, collate_fn=None) -> DataLoader:
    workers = args.workers
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                      pin_memory=torch.device(args.device).type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, collate_fn=collate_fn)


def build_variants(args: argparse.Namespace, root: Path) -> dict[str, Variant]:
    from torchvision.datasets import ImageFolder

    device = torch.device(args.device)
    plain = plain_transform(args.preset, args.image_size)
    spec = input_spec(args.preset)
    f32 = data.build_transform(args.preset, train=True, image_size=args.image_size, normalize=spec)
    u8 = data.build_transform(args.preset, train=True, image_size=args.image_size)
    to_input = DeviceInput(device, data.build_normalize(spec), channels_last=True)  # float batches: moved

    paths = image_paths(root, args.num_images)
    labels, classes = [0] * len(paths), ["all"]
    folder = ImageFolder(str(next(root.rglob("images"))), transform=plain)
    wanted = set(paths)
    keep = [i for i, (p, _) in enumerate(folder.samples) if p in wanted]
    out = {"pil": Variant(loader(Subset(folder, keep), args), to_input),
           "fast": Variant(loader(RetrievalDataset(paths, labels, classes, transform=u8), args, collate), to_input)}
    if split_fixed_resize(u8)[0] is not None:  # das, abir: a random first step, nothing to cache
        cached = RetrievalDataset(paths, labels, classes, transform=u8, decode="cache", cache_dir=f"{root}_decoded")
        out["cache"] = Variant(loader(cached, args, collate), to_input, cache_dir=Path(f"{root}_decoded"))
    if args.ablation:
        out["fast_f32"] = Variant(loader(RetrievalDataset(paths, labels, classes, transform=f32), args), to_input)
    if args.prepared:
        cache = Path(str(root) + "_256")
        if not (cache / ".prepared.json").is_file():
            prepare_dataset("cub", root, cache, size=256, workers=2)
        prepared = RetrievalDataset(image_paths(cache, args.num_images), labels, classes, transform=u8)
        out["prepared"] = Variant(loader(prepared, args, collate), to_input)
    if device.type == "cuda":
        files = EncodedFiles(RetrievalDataset(paths, labels, classes))
        decode = DeviceInput(device, data.build_normalize(spec), True, DeviceDecoder(u8, device))
        out["gpu"] = Variant(loader(files, args, collate), decode)
    return out


def run_epochs(variant: Variant, epochs: int, device: torch.device) -> int:
    """Iterate ``epochs`` epochs, making each batch network input on ``device``; returns the images seen."""
    seen = 0
    for _ in range(epochs):
        for batch in variant.loader:
            seen += variant.to_input(batch[0]).shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen


def main(args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(1)  # the workers do the work; keep the main process off the shared cores
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine (use --device cpu)")
    root = make_images(args)
    variants = build_variants(args, root)
    best: dict[str, float] = {}
    for variant in variants.values():
        run_epochs(variant, 1, device)  # warm-up: worker start-up, page cache, nvJPEG handles
    for name, variant in variants.items():  # one epoch that fills an emptied cache, workers already running
        if variant.cache_dir is not None:
            shutil.rmtree(variant.cache_dir, ignore_errors=True)
            start = time.perf_counter()
            best[f"{name}_1st"] = run_epochs(variant, 1, device) / (time.perf_counter() - start)
    for round_ in range(args.repeats):
        for name, variant in variants.items():
            start = time.perf_counter()
            seen = run_epochs(variant, args.epochs, device)
            rate = seen / (time.perf_counter() - start)
            best[name] = max(best.get(name, 0.0), rate)
            print(f"round {round_ + 1} {name:<9} {rate:8.1f} images/s", flush=True)
    print(f"\n{args.preset} @ {args.image_size}, {args.num_images} JPEGs of {args.image_width}x{args.image_height}, "
          f"{args.workers} workers, batch {args.batch_size}, input on {device} (best of {args.repeats}):")
    for name, rate in best.items():
        print(f"  {name:<9} {rate:8.1f} images/s   x{rate / best['pil']:.2f} vs pil")
    return best


if __name__ == "__main__":
    main(get_args_parser().parse_args())
