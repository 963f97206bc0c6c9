"""The ``metric-retrieval`` command: one subcommand per job, each a module of this package.

``metric-retrieval COMMAND ...`` (also ``python -m metric_retrieval COMMAND ...``) imports only the module of the
command it runs, so ``--help`` costs what that command needs. A command module provides ``get_args_parser(prog)``
and ``main(argv) -> int``; adding a command is that module plus one line in :data:`COMMANDS`.
"""
from __future__ import annotations

from metric_retrieval.utils import thread_policy  # noqa: F401 - OMP_WAIT_POLICY before torch loads

# isort: split
import importlib
import sys

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("metric_retrieval.cli.train", "train a retrieval model (a paper's recipe or your own data)"),
    "eval": ("metric_retrieval.cli.eval", "evaluate a model on a dataset's test protocol; fit a whitening"),
    "query": ("metric_retrieval.cli.query", "the nearest images of a query in a feature database or an index"),
    "index": ("metric_retrieval.cli.index", "build, extend, describe and measure persistent faiss indexes"),
    "serve": ("metric_retrieval.cli.serve", "serve an index: a search page, POST /search, GET /health"),
    "export": ("metric_retrieval.cli.export", "export a model to ONNX or TorchScript, checked for parity"),
    "data": ("metric_retrieval.cli.data", "dataset tools: check, prepare, synth, icons, glyphs"),
}
PROG = "metric-retrieval"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [options]   ({PROG} COMMAND --help for a command's options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``argv[0]``'s command on the rest; its exit code (2 for a usage error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from metric_retrieval import __version__

        print(f"{PROG} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\nerror: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[name][0]).main(rest, prog=f"{PROG} {name}")
