"""Cross-batch memory through train.py: SIGKILL + resume equals the uninterrupted run (memory included), and
2 gloo ranks hold the same memory as one process with the global batch."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MEMORY = ["--workers", "0", "--no_tensorboard", "--image_size", "32", "--num_epochs", "2", "--batch_size", "16",
          "--max_steps_per_epoch", "3", "--loss", "multi_similarity", "--miner", "none", "--loss_option",
          "memory_size=40", "--loss_option", "memory_warmup=1", "--eval_every", "1", "--device", "cpu",
          "--amp", "off", "--deterministic"]
KEYS = ("embeddings", "labels", "ptr", "filled", "steps")


def run(argv, **kw):
    return subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True, **kw)


def memory_of(out: Path) -> dict:
    state = torch.load(out / "checkpoint_latest.pth", weights_only=True)["criterion"]
    return {k: state[f"memories.multi_similarity.{k}"] for k in KEYS}


@pytest.mark.slow
def test_sigkill_then_resume_restores_the_memory_exactly(tmp_path):
    args = [*MEMORY, "--checkpoint_every", "1"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run([*args, "--output_dir", str(full)]).returncode == 0
    proc = subprocess.Popen([sys.executable, "train.py", *args, "--output_dir", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = killed / "checkpoint_latest.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if summary.is_file() and json.loads(summary.read_text())["epoch"] == 1 and \
                json.loads(summary.read_text())["step"] >= 1:
            os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 2, the memory already full and wrapping
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    resumed = run([*args, "--output_dir", str(killed), "--resume", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = memory_of(full), memory_of(killed)
    assert int(a["steps"]) == 6 and int(a["filled"]) == 40
    for key in KEYS:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_two_gloo_ranks_hold_the_memory_of_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert run([*MEMORY, "--output_dir", str(single)]).returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "train.py", *MEMORY, "--batch_size", "8", "--output_dir", str(ddp)], cwd=REPO,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = memory_of(single), memory_of(ddp)
    assert torch.equal(a["labels"], b["labels"]) and int(a["filled"]) == int(b["filled"]) == 40
    assert torch.equal(a["ptr"], b["ptr"]) and torch.equal(a["steps"], b["steps"])
    # Adam normalises tiny kernel-level gradient differences up to lr-sized weight changes (see
    # test_resume_and_ddp); a wrong gather would store other rows entirely (cosine far from 1).
    cosine = (a["embeddings"] * b["embeddings"]).sum(1)
    assert float(cosine.min()) > 0.99, cosine
