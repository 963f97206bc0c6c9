"""Training engine: config resolution, builders, the training loop, checkpoints, logging, DDP plumbing."""
from engine.config import get_args_parser, resolve_config
from engine.trainer import train

__all__ = ["get_args_parser", "resolve_config", "train"]
