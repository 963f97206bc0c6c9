"""Atomic checkpoint writes and RNG state round trips."""
import random

import numpy as np
import pytest
import torch

from metric_retrieval.training.checkpoint import atomic_save, load_file, load_resume, rng_state, set_rng_state
from metric_retrieval.utils.errors import UserError


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("simulated crash while writing")


def test_atomic_save_replaces_whole_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save({"step": 1}, path)
    atomic_save({"step": 2}, path)
    assert load_file(path) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save({"step": 1}, path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        atomic_save({"step": 2, "bad": Unpicklable()}, path)
    assert load_file(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_corrupt_and_missing_checkpoints_are_user_errors(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="checkpoint .*bad.pth is not a PyTorch file written by torch.save"):
        load_file(bad)
    bad.write_bytes(b"PK\x03\x04 torn zip archive")
    with pytest.raises(UserError, match="cannot read checkpoint .*bad.pth"):
        load_file(bad)
    with pytest.raises(UserError, match="checkpoint not found"):
        load_file(tmp_path / "missing.pth")
    with pytest.raises(UserError, match="--resume latest: no checkpoint"):
        load_resume("latest", tmp_path)
    assert load_resume(None, tmp_path) is None


def test_rng_state_round_trip():
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
