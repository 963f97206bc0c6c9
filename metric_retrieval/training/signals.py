"""Graceful stop on SIGTERM / SIGINT: finish the current step, checkpoint, say how to resume, exit.

SLURM and Kubernetes preempt a job with SIGTERM (then SIGKILL after a grace period); Ctrl-C sends SIGINT.
The first signal only sets a flag that the training loop reads between steps (under DDP the ranks agree
on it with an all-reduce, so every rank stops after the same step); a second signal of either kind ends
the process at once with the default action. The run then exits with ``128 + signal number`` (143 for
SIGTERM, 130 for SIGINT), the shell's convention, distinct from success (0), a crash (1) and a user
error (2).
"""
from __future__ import annotations

import logging
import os
import signal
from types import FrameType

import torch
import torch.distributed as dist

from metric_retrieval.training.distributed import DistInfo

log = logging.getLogger("metric_retrieval")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """The run stopped on a signal after writing its checkpoint; ``exit_code`` is ``128 + signum``."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum


class StopSignals:
    """Context manager installing the handlers; ``requested(dist)`` → the signal to stop on, or 0."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # the second signal: the default action (terminate) right now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        # logging's lock is re-entrant, and Python runs this handler in the main thread between bytecodes
        log.warning("%s received: stopping after the current step (send it again to stop at once)",
                    signal.Signals(signum).name)

    def requested(self, info: DistInfo, device: torch.device) -> int:
        """The signal any rank received (the largest number if they differ), agreed on by all ranks."""
        if not info.enabled:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.long, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
