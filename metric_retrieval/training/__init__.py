"""Training engine: config resolution, builders, the training loop, checkpoints, logging, DDP plumbing."""
from metric_retrieval.training.config import get_args_parser, resolve_config
from metric_retrieval.training.trainer import train

__all__ = ["get_args_parser", "resolve_config", "train"]
