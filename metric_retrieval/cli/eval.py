"""``metric-retrieval eval``: a model on a dataset's test protocol (Recall@K / MAP@R, or landmark mAP), and the
fitting of a whitening on a training set.

Examples::

    metric-retrieval eval --checkpoint runs/cub/model_best.pth --data_name cub --data_path /data/cub --json out.json
    metric-retrieval eval --data_name roxford5k --data_path /data/roxford5k --backbone_type resnet101 --head gem \\
        --pretrained imagenet --scales 1,0.7071,0.5 --qe aqe:2
    metric-retrieval eval --learn_whitening w.pth --data_name sop --data_path /data/sop --backbone_type resnet50 \\
        --head gem --pretrained imagenet
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from metric_retrieval.cli.common import add_device_flag, new_parser, reports_errors
from metric_retrieval.utils.errors import UserError


def add_model_source(p: argparse._ActionsContainer) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="model_best.pth / checkpoint_latest.pth of a run, or an exported .onnx / .ts model")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    """The evaluation, off-the-shelf model and landmark flags (``eval``, and ``test.py --eval``)."""
    from metric_retrieval.data.registry import CROP_TYPE
    from metric_retrieval.models.heads import add_head_file_args
    from metric_retrieval.training import flags

    g = p.add_argument_group("evaluation")
    g.add_argument("--data_name", default=None)
    g.add_argument("--data_path", default=None)
    CROP_TYPE.add_to(g)  # the readers' own option (data/registry.py)
    flags.RECALLS.add_to(g)
    g.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    g.add_argument("--transform", default="cgd", help="eval transform of an off-the-shelf model (a checkpoint's "
                   "inference recipe names its own, with its image size)")
    flags.IMAGE_SIZE.add_to(g)
    flags.EVAL_BATCH_SIZE.add_to(g)
    flags.WORKERS.add_to(g)
    g.add_argument("--decode", default="fast", choices=("fast", "cache", "pil"), help="JPEG decoding path")
    g.add_argument("--knn_backend", default="auto")
    g = p.add_argument_group("off-the-shelf model (no --checkpoint) and landmark retrieval")
    g.add_argument("--backbone_type", default=None)
    g.add_argument("--head", default=None)
    flags.OFF_THE_SHELF_FEATURE_DIM.add_to(g)
    g.add_argument("--pretrained", default=None)
    g.add_argument("--model_option", action="append", default=[], metavar="KEY=VALUE")
    add_head_file_args(g)
    flags.IMSIZE.add_to(g)
    flags.SCALES.add_to(g)
    g.add_argument("--whitening", default=None, help="landmarks: whitening file (evaluation.save_whitening)")
    g.add_argument("--qe", default=None, help="landmarks: query expansion aqe:K or alpha:K:ALPHA")
    flags.DBA.add_to(g)
    g.add_argument("--learn_whitening", default=None, metavar="FILE",
                   help="fit a whitening on --data_name/--data_path (a training set) and save it to FILE")
    g.add_argument("--whitening_type", default="pca", choices=("pca", "learned"),
                   help="pca: PCA-whitening; learned: cirtorch Lw from same-class pairs (labelled data)")
    p.add_argument("--amp", default="run", choices=("run", *flags.AMP_CHOICES),
                   help="precision of the evaluation / whitening: run = the checkpoint's own (off without one)")


def get_args_parser(prog: str | None = None, add_help: bool = True) -> argparse.ArgumentParser:
    p = new_parser(prog, "Evaluate a model on a dataset's test protocol, or fit a whitening", add_help)
    add_model_source(p)
    add_eval_args(p)
    add_device_flag(p)
    return p


def print_table(metrics: dict) -> None:
    """Paper-style one-row table of the fractional metrics, as percentages."""
    keys = [k for k, v in metrics.items() if isinstance(v, float)]
    print(" | ".join(f"{k:>10}" for k in keys))
    print(" | ".join(f"{100 * metrics[k]:>10.2f}" for k in keys))


def run(args: argparse.Namespace) -> int:
    """Fit the whitening (``--learn_whitening``) or evaluate; the flags are checked before any work."""
    from metric_retrieval.retrieval.eval_commands import evaluate_checkpoint, learn_whitening
    from metric_retrieval.training.validate import check_test_args

    check_test_args(args)
    if args.learn_whitening:
        if not args.data_name or not args.data_path:
            raise UserError("--learn_whitening needs --data_name and --data_path (a training set)")
        info = learn_whitening(args)
        print(f"whitening ({args.whitening_type}) fitted on {info['num_images']} descriptors of dimension "
              f"{info['dim']}: {args.learn_whitening}")
        return 0
    if not args.data_name or not args.data_path:
        raise UserError("evaluation needs --data_name and --data_path")
    metrics = evaluate_checkpoint(args)
    print_table(metrics)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


@reports_errors
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run(get_args_parser(prog).parse_args(argv))
