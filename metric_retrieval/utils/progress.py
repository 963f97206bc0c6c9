"""How often the tqdm bars of long jobs (training, evaluation, landmark descriptors, ``prepare``, ``synth``,
index building) redraw.

On a terminal a bar redraws every 0.1 s (tqdm's default). When stderr is a file or a pipe (a SLURM or
Kubernetes job log, ``| tee``), every redraw is appended to the log, so the bars redraw every
:data:`NON_TTY_INTERVAL` seconds there: a 10-minute job adds about 20 updates, not 6000, and still shows it
is alive.
"""
from __future__ import annotations

import sys
from typing import TextIO

NON_TTY_INTERVAL = 30.0  # seconds between redraws when stderr is not a terminal


def bar_interval(stream: TextIO | None = None) -> float:
    """tqdm's ``mininterval`` for a bar drawn on ``stream`` (default: ``sys.stderr``)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 0.1 if isatty is not None and isatty() else NON_TTY_INTERVAL
