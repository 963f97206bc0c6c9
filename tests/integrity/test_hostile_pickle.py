"""Issue 26 item 1: a checkpoint whose pickle would run a command is refused by every loader, and the command
never runs; the raw-byte checksum is checked before anything is unpickled."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metric_retrieval.evaluation.whitening import load_whitening
from metric_retrieval.models.checkpoint import read_state_dict
from metric_retrieval.retrieval.database import load_database
from metric_retrieval.training.checkpoint import load_file, load_model, load_resume
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import CorruptFileError, atomic_save, load_verified

REPO = Path(__file__).resolve().parents[2]


class Exploit:
    """Unpickling it runs ``touch MARKER`` (the issue's reproduction)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_checkpoint(path: Path, marker: Path, signed: bool = False) -> Path:
    payload = {"model": {"w": torch.zeros(2)}, "model_config": {"backbone": "resnet18"}, "p": Exploit(marker)}
    if signed:  # a valid checksum does not make a file trusted
        atomic_save(payload, path)
    else:
        torch.save(payload, path)
    return path


LOADERS = {
    "load_verified": lambda p, d: load_verified(p),
    "load_file": lambda p, d: load_file(p),
    "load_model": lambda p, d: load_model(p),
    "load_resume": lambda p, d: load_resume(str(p), d),
    "read_state_dict": lambda p, d: read_state_dict(p),
    "load_database": lambda p, d: load_database(p),
    "load_whitening": lambda p, d: load_whitening(p),
}


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "signed"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_no_loader_runs_code_from_a_file(tmp_path, loader, signed):
    marker = tmp_path / "PWN"
    path = hostile_checkpoint(tmp_path / "e.pth", marker, signed)
    with pytest.raises(UserError, match=r"e\.pth: it asks for the Python object posix\.system"):
        LOADERS[loader](path, tmp_path)
    assert not marker.exists()


def test_the_export_cli_refuses_it_in_a_subprocess(tmp_path):
    """The issue's end-to-end reproduction: ``export.py --checkpoint e.pth`` must exit 2 and run nothing."""
    marker = tmp_path / "PWN"
    path = hostile_checkpoint(tmp_path / "e.pth", marker)
    proc = subprocess.run([sys.executable, "export.py", "--checkpoint", str(path), "--format", "onnx",
                           "--out", str(tmp_path / "x.onnx")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: cannot read checkpoint") and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_checksum_is_checked_before_unpickling(tmp_path):
    """Flipping a byte of the pickle of a signed file is caught by the raw-byte checksum: the message says
    corrupt (a flipped pickle opcode would otherwise fail, or worse, load, inside the unpickler)."""
    path = tmp_path / "c.pth"
    atomic_save({"model": {"w": torch.arange(10.0)}, "step": 3}, path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data.pkl") + 60  # inside the pickle record's data
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="c.pth is corrupt: its contents do not match the checksum"):
        load_verified(path)


def test_signed_file_is_a_standard_torch_file(tmp_path):
    path = tmp_path / "c.pth"
    atomic_save({"w": torch.arange(4)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4))
    assert torch.equal(load_verified(path)["w"], torch.arange(4))


def test_a_legacy_checkpoint_with_a_numpy_rng_state_still_loads(tmp_path):
    """Checkpoints of the code before this change stored ``np.random.get_state()`` (a numpy array): the one
    legacy type allowed, for that load only."""
    import numpy as np

    path = tmp_path / "old.pth"
    torch.save({"rng": {"numpy": np.random.get_state()}, "step": 1}, path)
    state = load_file(path)["rng"]["numpy"]
    assert state[0] == "MT19937" and np.array_equal(state[1], np.random.get_state()[1])
