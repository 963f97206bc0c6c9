"""Training-step throughput: precision / memory-format variants, and the trainer's overhead over a bare loop.

All numbers come from one run on one machine and are printed as ratios to a baseline measured in the same
run (machines here are noisy; compare ratios, not absolute images/s across runs).

1. Variants of one full training step (forward, CGD criterion = label-smoothed CE + batch-hard triplet,
   backward, Adam step) of the CGD ResNet-50 model (stage-3 stride 1, SG, 1536-d): fp32 (baseline),
   channels_last, bf16 autocast, bf16 + channels_last, fp16 autocast with the gradient scaler (CUDA), and
   ``--compile`` variants of ``--compile_variants`` on request (``--variants`` picks the eager ones).
2. The trainer's ``train_one_epoch`` against a bare loop with the same model, loss, optimiser, input
   normalisation and in-memory uint8 batches: overhead = trainer time / bare time - 1.
3. ``--accuracy``: the built-in quick recipe trained in fp32 and in bf16 + channels_last; prints both
   Recall@1 values (to check that the faster setting learns as well).

Examples::

    python benchmarks/bench_train.py                          # CPU: batch 32 at 224 (slow: ~10 s per step)
    python benchmarks/bench_train.py --image_size 112 --steps 3
    python benchmarks/bench_train.py --device cuda --batch_size 128 --compile
    python benchmarks/bench_train.py --device cuda --batch_size 128 --variants fp32,bf16,fp16 --compile \
        --compile_variants fp32,bf16,fp16
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metric_retrieval import (
    losses,  # noqa: E402
    models,  # noqa: E402
)
from metric_retrieval.data.batch import DeviceInput  # noqa: E402
from metric_retrieval.data.transforms import build_normalize  # noqa: E402
from metric_retrieval.training.distributed import DistInfo  # noqa: E402
from metric_retrieval.training.run_log import RunLog  # noqa: E402
from metric_retrieval.training.runtime import AMP_DTYPES, resolve_amp  # noqa: E402
from metric_retrieval.training.trainer import TrainContext, train_one_epoch  # noqa: E402

NUM_CLASSES = 100
VARIANTS = {"fp32": ("off", False), "channels_last": ("off", True), "bf16": ("bf16", False),
            "bf16+channels_last": ("bf16", True), "fp16": ("fp16", False)}  # name: (--amp, --channels_last)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma list of eager variants to time, of {', '.join(VARIANTS)} (fp32 always runs)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    p.add_argument("--compile_variants", default="fp32,bf16+channels_last",
                   help="comma list of the variants timed again under torch.compile (with --compile)")
    p.add_argument("--accuracy", action="store_true", help="also train the quick recipe in fp32 and bf16+CL")
    p.add_argument("--all_variants", action="store_true",
                   help="also time bf16 where it is not native (emulated, many times slower than fp32)")
    return p


def build(device: torch.device, channels_last: bool) -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    model = models.build_model("resnet50", "cgd", 1536, NUM_CLASSES, gd_config="SG").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = losses.build_criterion([{"name": "ls_ce", "smoothing": 0.1, "temperature": 0.5},
                                        {"name": "batch_hard_triplet", "margin": 0.1}],
                                       num_classes=NUM_CLASSES, embedding_dim=1536).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, criterion, optimizer


def batches(args: argparse.Namespace, count: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]]:
    """In-memory loader batches as the trainer gets them: uint8 images, labels, indices, no seeds."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(args.batch_size) // 4 % NUM_CLASSES  # m-per-class structure, m = 4
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    return [(torch.randint(0, 256, shape, dtype=torch.uint8, generator=g), labels, torch.arange(args.batch_size), None)
            for _ in range(count)]


def bare_loop(model, criterion, optimizer, data, device, amp: str, channels_last: bool) -> float:
    """Seconds for the steps in ``data`` with nothing but the step itself (and the input normalisation);
    fp16 scales the loss with a ``GradScaler``, as the trainer does."""
    dtype = AMP_DTYPES[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    normalize = build_normalize(model.input_spec).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    start = time.perf_counter()
    for images, labels, _, _ in data:
        images = normalize(images.to(device).contiguous(memory_format=memory_format))
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            embedding, logits = model(images)
        loss, _ = criterion(embedding.float(), logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    _sync(device)
    return time.perf_counter() - start


def trainer_loop(model, criterion, optimizer, data, device, amp: str, channels_last: bool) -> float:
    """Seconds for the same steps through ``metric_retrieval.training.trainer.train_one_epoch`` (progress bar, logging,
    scheduler)."""
    cfg = {"amp": amp, "channels_last": channels_last, "grad_clip": 0.0, "checkpoint_every": 0, "num_epochs": 1,
           "batch_size": data[0][0].shape[0], "output_dir": tempfile.gettempdir()}
    ctx = TrainContext(cfg=cfg, model=model, train_model=model, criterion=criterion, optimizer=optimizer,
                       scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                       scaler=torch.amp.GradScaler(device.type, enabled=False), sampler=None, device=device,
                       dist=DistInfo(), num_classes=NUM_CLASSES, steps_per_epoch=len(data),
                       run_log=RunLog(tempfile.gettempdir(), cfg, enabled=False),
                       device_input=DeviceInput(device, build_normalize(model.input_spec), channels_last))
    start = time.perf_counter()
    train_one_epoch(ctx, data)
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_s(args, device, amp: str, channels_last: bool, compile_model: bool = False) -> float:
    model, criterion, optimizer = build(device, channels_last)
    if compile_model:
        model = torch.compile(model)
    bare_loop(model, criterion, optimizer, batches(args, args.warmup), device, amp, channels_last)
    seconds = bare_loop(model, criterion, optimizer, batches(args, args.steps), device, amp, channels_last)
    return args.steps * args.batch_size / seconds


def quick_recall(amp: str, channels_last: bool) -> float:
    from metric_retrieval.training import resolve_config, train

    with tempfile.TemporaryDirectory() as out:
        argv = ["--output_dir", out, "--workers", "0", "--no_tensorboard", "--amp", amp,
                "--channels_last" if channels_last else "--no-channels_last"]
        result = train(resolve_config(argv))
    return result["best"]


def pick(parser: argparse.ArgumentParser, names: str, flag: str) -> list[str]:
    """The variant names of a comma list, in order, without repeats; an unknown name is a usage error."""
    out = list(dict.fromkeys(n for n in names.split(",") if n))
    unknown = [n for n in out if n not in VARIANTS]
    if unknown:
        parser.error(f"{flag}: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return out


def main() -> None:
    parser = get_args_parser()
    args = parser.parse_args()
    eager = pick(parser, f"fp32,{args.variants}", "--variants")
    compiled = pick(parser, args.compile_variants, "--compile_variants") if args.compile else []
    device = torch.device(args.device)
    print(f"device {device}, CGD ResNet-50 (SG, 1536-d), batch {args.batch_size} at {args.image_size} px, "
          f"{args.steps} timed steps, torch {torch.__version__}, {torch.get_num_threads()} threads")
    variants = {name: VARIANTS[name] for name in eager} | {f"compile {name}": VARIANTS[name] for name in compiled}
    skip = set()
    if resolve_amp("auto", device) == "off" and not args.all_variants:
        skip.add("bf16")
        print("bf16 is not native here (no AVX512-BF16/AMX, or a GPU without bf16): its variants are skipped, "
              "and --amp auto trains in fp32 (--all_variants times them anyway)")
    if device.type != "cuda" and not args.all_variants:
        skip.add("fp16")
        print("fp16 autocast is a GPU setting: its variants are skipped on the CPU (--all_variants times them anyway)")
    variants = {name: v for name, v in variants.items() if v[0] not in skip}
    results = {}
    for name, (amp, cl) in variants.items():
        results[name] = images_per_s(args, device, amp, cl, compile_model=name.startswith("compile"))
        print(f"{name:>28}: {results[name]:8.2f} images/s  ({results[name] / results['fp32']:.2f}x fp32)",
              flush=True)

    model, criterion, optimizer = build(device, False)
    bare_loop(model, criterion, optimizer, batches(args, args.warmup), device, "off", False)
    data = batches(args, args.steps)
    bare, trainer = float("inf"), float("inf")
    for _ in range(2):  # alternated, so a machine that speeds up or slows down affects both alike
        bare = min(bare, bare_loop(model, criterion, optimizer, data, device, "off", False))
        trainer = min(trainer, trainer_loop(model, criterion, optimizer, data, device, "off", False))
    print(f"trainer {trainer:.2f} s vs bare loop {bare:.2f} s for the same {args.steps} steps: "
          f"overhead {100 * (trainer / bare - 1):+.1f}%")

    if args.accuracy:
        fp32, fast = quick_recall("off", False), quick_recall("bf16", True)
        print(f"quick recipe Recall@1: fp32 {fp32:.4f}, bf16+channels_last {fast:.4f}")


if __name__ == "__main__":
    main()
