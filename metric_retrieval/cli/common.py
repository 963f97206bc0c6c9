"""What the commands share: flag groups declared once, and the error handling every command's ``main`` uses."""
from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from metric_retrieval.utils.errors import UserError, plain_warnings


def new_parser(prog: str | None, description: str, add_help: bool = True) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, add_help=add_help,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_device_flag(p: argparse._ActionsContainer, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help="auto, cpu, cuda or cuda:N")


def add_loader_flags(p: argparse._ActionsContainer, batch_flag: str = "--batch_size", batch_size: int = 64) -> None:
    p.add_argument(batch_flag, type=int, default=batch_size, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes")


def add_search_flags(p: argparse._ActionsContainer) -> None:
    """Search parameters of an approximate index (stored defaults are used when a flag is not given)."""
    p.add_argument("--nprobe", type=int, default=None, help="IVF indexes: inverted lists visited per query")
    p.add_argument("--ef_search", type=int, default=None, help="HNSW indexes: candidate list size")
    p.add_argument("--k_factor", type=int, default=None, help="refine indexes: candidates re-ranked per result; "
                                                              "default: the value stored with the index")


def add_max_pixels_flag(p: argparse._ActionsContainer, refused: str) -> None:
    """``--max_pixels``: the largest width x height an image may have, read from its header before decoding."""
    from metric_retrieval.data.image_io import DEFAULT_MAX_PIXELS

    p.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest width x height of an image, read from its header before decoding; {refused}")


def apply_max_pixels(value: int) -> None:
    """Check ``--max_pixels`` and make it this process's limit (DataLoader workers forked later inherit it)."""
    from metric_retrieval.data.image_io import set_max_pixels
    from metric_retrieval.utils.errors import UserError

    if value < 1:
        raise UserError(f"--max_pixels must be >= 1, got {value}")
    set_max_pixels(value)


def reports_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's ``main``: a :class:`UserError` is one ``error: ...`` line on stderr and exit code 2,
    never a traceback; warnings print as plain lines."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        plain_warnings()
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return wrapper
