"""Issue 26 item 12: every run has an id stored in its checkpoints; a run folder refuses another run's
checkpoint; a run folder's config.yaml given back as --config reproduces the run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metric_retrieval.training.run_identity import RUN_FILE, claim_run, folder_run_id
from metric_retrieval.utils.errors import UserError

REPO = Path(__file__).resolve().parents[2]
TINY = ["--workers", "0", "--no_tensorboard", "--image_size", "32", "--num_epochs", "1", "--batch_size", "16",
        "--max_steps_per_epoch", "2", "--device", "cpu", "--amp", "off", "--deterministic"]


def test_claim_run_gives_new_adopted_and_refused_ids(tmp_path):
    fresh = claim_run(tmp_path, None, write=True)
    assert len(fresh) == 32 and folder_run_id(tmp_path) == fresh
    assert claim_run(tmp_path, (tmp_path / "c.pth", {"run_id": fresh}), write=True) == fresh  # its own checkpoint
    assert claim_run(tmp_path, (tmp_path / "c.pth", {}), write=True) == fresh  # older checkpoint: no id to compare
    with pytest.raises(UserError, match=f"belongs to run {'b' * 12}, but {tmp_path} is run {fresh[:12]}"):
        claim_run(tmp_path, (tmp_path / "c.pth", {"run_id": "b" * 32}), write=True)
    assert folder_run_id(tmp_path) == fresh  # unchanged by the refusal
    other = tmp_path / "other"
    other.mkdir()
    assert claim_run(other, (tmp_path / "c.pth", {"run_id": "b" * 32}), write=True) == "b" * 32  # adopted
    assert json.loads((other / RUN_FILE).read_text()) == {"run_id": "b" * 32}
    assert claim_run(tmp_path, None, write=True) != fresh  # a fresh start (--overwrite) is a new run


def train(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_foreign_checkpoints_are_refused_and_config_yaml_reproduces_the_run(tmp_path):
    a, b, again = tmp_path / "a", tmp_path / "b", tmp_path / "again"
    assert (done := train(*TINY, "--output_dir", str(a))).returncode == 0, done.stderr
    assert (done := train(*TINY, "--output_dir", str(b), "--seed", "1")).returncode == 0, done.stderr
    ids = {run: folder_run_id(run) for run in (a, b)}
    for run in (a, b):  # every checkpoint carries its run's id
        for name in ("checkpoint_latest.pth", "model_best.pth"):
            assert torch.load(run / name, weights_only=True)["run_id"] == ids[run]
    assert ids[a] != ids[b]

    refused = train(*TINY, "--seed", "1", "--output_dir", str(a), "--resume", str(b / "checkpoint_latest.pth"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"belongs to run {ids[b][:12]}" in refused.stderr and "mix two runs" in refused.stderr
    shutil.copy(b / "checkpoint_latest.pth", a / "checkpoint_latest.pth")  # a foreign file in the run folder
    refused = train(*TINY, "--seed", "1", "--output_dir", str(a), "--resume", "latest")
    assert refused.returncode == 2 and f"but {a} is run {ids[a][:12]}" in refused.stderr

    reproduced = train("--config", str(b / "config.yaml"), "--output_dir", str(again))
    assert reproduced.returncode == 0, reproduced.stderr
    first, second = (torch.load(run / "checkpoint_latest.pth", weights_only=True) for run in (b, again))
    assert first["model"].keys() == second["model"].keys()
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key
    rows = [[{k: v for k, v in row.items() if k != "images_per_s"} for row in ckpt["progress"]["history"]]
            for ckpt in (first, second)]
    assert rows[0] == rows[1] and "test_recall@1" in rows[0][0]
    assert second["run_id"] == folder_run_id(again) != ids[b]  # the same computation, another run
