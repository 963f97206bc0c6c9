"""The generic flags: ``train.py``'s flags that no registered component declares, and the ones ``test.py``
shares with it or adds, each declared once as an :class:`~metric_retrieval.utils.options.Option` (default,
type, range, help).

From these declarations come ``train.py``'s parser (:func:`metric_retrieval.training.config.get_args_parser`),
the range checks of flags and YAML keys alike (:func:`metric_retrieval.training.validate.number_problems`),
the numeric checks of ``test.py`` (:func:`metric_retrieval.training.validate.check_test_args`) and the first
section of ``train.py --list``. The components' own options are declared by the components
(:mod:`metric_retrieval.training.components`).
"""
from __future__ import annotations

from metric_retrieval.utils.options import Option

__all__ = ["AMP_CHOICES", "TEST_OPTIONS", "train_flag_groups"]

AMP_CHOICES = ("auto", "off", "bf16", "fp16")

# shared by train.py and test.py
IMAGE_SIZE = Option("image_size", int, 224, low=1)
WORKERS = Option("workers", int, 2, "data-loading worker processes", low=0)
EVAL_BATCH_SIZE = Option("eval_batch_size", int, 64, low=1)
RECALLS = Option("recalls", str, None, "comma-separated K list; default per dataset", item=int, low=1,
                 expected="positive integers")

# test.py's own
RETRIEVAL_NUM = Option("retrieval_num", int, 8, "number of results K", low=1)
OFF_THE_SHELF_FEATURE_DIM = Option("feature_dim", int, None, "embedding width; default: the head's own (gem: the "
                                   "backbone's width, no projection)", low=1)
IMSIZE = Option("imsize", int, 1024, "landmarks: longest image side", low=1)
SCALES = Option("scales", str, "1", "landmarks: multi-scale factors, e.g. 1,0.7071,0.5", item=float, low=0.0,
                low_ok=False, expected="positive factors (e.g. 1,0.7071,0.5)")
DBA = Option("dba", int, 0, "landmarks: database-side augmentation with K neighbours", low=0)

# the numbers test.py checks before it builds a model or reads an image (validate.check_test_args)
TEST_OPTIONS: tuple[Option, ...] = (RETRIEVAL_NUM, IMAGE_SIZE, EVAL_BATCH_SIZE, WORKERS, RECALLS,
                                    OFF_THE_SHELF_FEATURE_DIM, IMSIZE, SCALES, DBA)


def train_flag_groups() -> tuple[tuple[str, tuple[Option, ...]], ...]:
    """``(argument group, options)`` of ``train.py``'s generic flags, in ``--help`` order.

    A function, not a constant: a few helps and choices name the registered components, which plug-ins may
    add after import.
    """
    from metric_retrieval import data, evaluation, models, optim, samplers

    return (
        ("data", (
            Option("data_path", str, None, "dataset root; omitted: a built-in synthetic dataset is generated and "
                   "used"),
            Option("data_name", str, "folder", ", ".join(data.DATASETS.names()) + " (or an alias: python train.py "
                   "--list)"),
            Option("transform", str, data.DEFAULT_TRANSFORM,
                   f"augmentation preset: {', '.join(data.list_transforms())}"),
            IMAGE_SIZE,
            WORKERS,
            Option("decode", str, "auto", "fast: DCT-scaled / libjpeg-turbo JPEG decoding; cache: fast + exact "
                   "on-disk cache of decode + fixed-size resize ($METRIC_RETRIEVAL_CACHE/decoded); auto: cache "
                   "where the preset allows it and the entries still missing take <= 10% of the free disk space, "
                   "else fast; pil: plain PIL; gpu: training batches decoded and augmented on the GPU (nvJPEG; "
                   "evaluation uses fast)", choices=("auto", "fast", "cache", "pil", "gpu")),
            Option("skip_bad_images", bool, False, "drop undecodable images with a warning"),
            Option("val_classes", float, 0.0, "fraction of training classes held out as a validation split for "
                   "model selection", low=0.0, high=1.0, high_ok=False, expected="a fraction"),
        )),
        ("model", (
            Option("backbone_type", str, "resnet18"),
            Option("head", str, "baseline", ", ".join(models.HEADS.names())),
            Option("feature_dim", int, 512, low=1),
            Option("pretrained", str, None, "'imagenet' for torchvision weights, a local state-dict file, or "
                   "'none' (random init); default: with --data_path the backbone's ImageNet weights from the local "
                   "torch cache (a clear error when they are not there), without it random init"),
            Option("model_option", list, (), "any other model builder option (repeatable)", metavar="KEY=VALUE"),
            Option("sync_bn", bool, False, "SyncBatchNorm under DDP"),
        )),
        ("loss and sampler", (
            Option("loss", str, "triplet", "loss name, or names joined by '+' (weighted sum), e.g. "
                   "ls_ce+batch_hard_triplet"),
            Option("loss_weights", str, None, "comma-separated weights for the '+' terms"),
            Option("miner", str, "semihard", "miner for embedding losses, or 'none'"),
            Option("loss_option", list, (), "loss hyper-parameter (repeatable), e.g. triplet.margin=0.1",
                   metavar="[LOSS.]KEY=VALUE"),
            Option("sampler", str, "m_per_class", ", ".join(samplers.SAMPLERS.names())),
            Option("aux_loss", bool, False, "with an embedding producer: L(real) + w * L(real + generated)"),
            Option("aux_loss_weight", float, 1.0, low=0.0),
        )),
        ("optimisation", (
            Option("batch_size", int, 32, "per-process batch size", low=1),
            Option("num_epochs", int, 20, low=1),
            Option("optimizer", str, "adam", choices=tuple(optim.OPTIMIZERS.names())),
            # above 10 no optimiser here converges: a typo (1e30) or a unit mix-up
            Option("lr", float, 1e-4, low=0.0, low_ok=False, high=10.0),
            Option("backbone_lr_mult", float, 1.0, low=0.0),
            Option("head_lr_mult", float, 1.0, low=0.0),
            Option("scheduler", str, "multistep", choices=tuple(optim.SCHEDULERS.names())),
            Option("grad_clip", float, 0.0, "max gradient norm; 0 disables", low=0.0),
            Option("max_steps_per_epoch", int, 0, "cap on steps per epoch; 0 = full", low=0),
        )),
        ("evaluation and selection", (
            RECALLS,
            Option("eval_every", int, 1, "evaluate every N epochs; 0 = only at the end", low=0),
            EVAL_BATCH_SIZE,
            Option("knn_backend", str, "auto", "auto or " + ", ".join(evaluation.KNN_BACKENDS.names())),
            Option("select_metric", str, "recall@1"),
            Option("select_on", str, None, "split used to keep 'best' (default: val if --val_classes > 0 else "
                   "test)", choices=("val", "test")),
        )),
        ("runtime", (
            Option("seed", int, 0),
            Option("device", str, "auto", "auto, cpu, cuda, cuda:N"),
            Option("amp", str, "auto", "mixed precision; auto = bf16 where the hardware computes it natively (CUDA "
                   "with bf16, CPUs with AVX512-BF16/AMX), else off", choices=AMP_CHOICES),
            Option("channels_last", bool, True, "NHWC memory format for the model and its inputs", negatable=True),
            Option("compile", bool, False, "torch.compile the model"),
            Option("deterministic", bool, False, "bit-exact mode: deterministic algorithms; two runs, or a run and "
                   "its resumed copy, give identical weights (README 'Reliability' says under which settings)"),
            Option("dist_timeout", float, 600.0, "seconds a DDP collective waits for the other ranks before the run "
                   "stops with an error (must exceed the longest evaluation, which the other ranks wait out)",
                   low=0.0, low_ok=False),
            Option("output_dir", str, None, "run folder; default: a new runs/<date-time>-<backbone>-<head>. A folder "
                   "holding a run is refused unless --resume or --overwrite is given"),
            Option("overwrite", bool, False, "train into --output_dir although it holds a run: its files are "
                   "replaced as this run writes"),
            Option("resume", str, None, "checkpoint path, or 'latest' in --output_dir"),
            Option("checkpoint_every", int, 0, "also checkpoint every N steps inside an epoch; 0 = end of epoch "
                   "only", low=0),
            Option("no_tensorboard", bool, False),
        )),
    )

