"""Checksummed atomic files, the previous-checkpoint fallback, full disks, the run-folder lock, stale temporaries."""
import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import metric_retrieval.utils.io
from metric_retrieval.training.checkpoint import LATEST, PREVIOUS, load_file, load_resume
from metric_retrieval.training.run_lock import RunFolderBusy, RunLock, remove_stale_temporaries
from metric_retrieval.training.run_log import append_environment
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import (
    CorruptFileError,
    DiskFullError,
    atomic_save,
    atomic_write_text,
    load_verified,
    payload_digest,
)
from tests.fake_files import WrappedFile, small_tmpfs

REPO = Path(__file__).resolve().parents[2]


def checkpoint(value: float) -> dict:
    """A checkpoint-like payload of about 4 MB (so that 1 MB in its middle lands inside tensor data)."""
    return {"model": {"w": torch.full((1000, 1000), value)}, "step": 3, "rng": {"numpy": ("MT19937", 1, 2.5)}}


def overwrite_middle(path: Path, num_bytes: int = 1 << 20) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2 - num_bytes // 2)
        f.write(os.urandom(num_bytes))


def test_checksum_round_trip_and_overwritten_megabyte_is_detected(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save(checkpoint(1.0), path)
    loaded = load_verified(path)
    assert torch.equal(loaded["model"]["w"], torch.full((1000, 1000), 1.0)) and "sha256" not in loaded
    overwrite_middle(path)
    with pytest.raises(CorruptFileError, match=r"ckpt.pth is corrupt: its contents do not match the checksum"):
        load_verified(path)
    with pytest.raises(UserError, match="ckpt.pth"):  # what the trainer and test.py call
        load_file(path)


def test_digest_sees_every_value_and_tensor_dtype():
    base = payload_digest(checkpoint(1.0))
    assert payload_digest(checkpoint(1.0)) == base
    changed_step = {**checkpoint(1.0), "step": 4}
    as_double = {**checkpoint(1.0), "model": {"w": torch.full((1000, 1000), 1.0, dtype=torch.float64)}}
    assert payload_digest(changed_step) != base and payload_digest(as_double) != base


def test_rotation_keeps_the_previous_checkpoint(tmp_path):
    latest, previous = tmp_path / LATEST, tmp_path / PREVIOUS
    atomic_save(checkpoint(1.0), latest, previous=previous)
    assert not previous.exists()
    atomic_save(checkpoint(2.0), latest, previous=previous)
    assert load_file(previous)["model"]["w"][0, 0] == 1.0 and load_file(latest)["model"]["w"][0, 0] == 2.0


def test_resume_latest_falls_back_to_previous_and_an_explicit_path_offers_it(tmp_path):
    latest, previous = tmp_path / LATEST, tmp_path / PREVIOUS
    atomic_save(checkpoint(1.0), latest, previous=previous)
    atomic_save(checkpoint(2.0), latest, previous=previous)
    overwrite_middle(latest)
    with pytest.raises(UserError, match=rf"corrupt.*previous checkpoint {previous} may be intact: --resume"):
        load_resume(str(latest), tmp_path)
    path, ckpt = load_resume("latest", tmp_path)
    assert path == previous and ckpt["model"]["w"][0, 0] == 1.0
    # the corrupt file is set aside, so that the next save cannot rotate it over the good one
    assert not latest.exists() and (tmp_path / f"{LATEST}.corrupt").is_file()
    # killed between the two renames of a save: only the previous file is there
    path, _ = load_resume("latest", tmp_path)
    assert path == previous
    previous.unlink()
    with pytest.raises(UserError, match="--resume latest: no checkpoint"):
        load_resume("latest", tmp_path)
    assert load_resume(None, tmp_path) is None


class FullDisk(WrappedFile):
    """A writer that accepts ``room`` bytes, then fails as a full disk does (the bytes before it are written)."""

    def __init__(self, fd: int, room: int) -> None:
        super().__init__(fd)
        self.room = room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)


def test_disk_full_is_one_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_save(checkpoint(1.0), path)
    monkeypatch.setattr(metric_retrieval.utils.io, "_open_temp", lambda fd: FullDisk(fd, room=1 << 20))
    with pytest.raises(DiskFullError) as err:
        atomic_save(checkpoint(2.0), path)
    message = str(err.value)
    assert f"no space left in {tmp_path} while writing ckpt.pth: it needs about 5.0 MB" in message
    assert "\n" not in message and err.value.__cause__ is None
    assert load_file(path)["model"]["w"][0, 0] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # the partial temporary file is gone


def test_real_full_tmpfs_gives_the_same_error(tmp_path):
    with small_tmpfs(tmp_path / "small", "2m", "the patched-write test covers the logic") as mount:
        with pytest.raises(DiskFullError, match=rf"no space left in {mount} while writing ckpt.pth"):
            atomic_save(checkpoint(1.0), mount / "ckpt.pth")
        assert list(mount.iterdir()) == []


def test_text_writes_use_unique_temporary_names(tmp_path):
    path, errors = tmp_path / "checkpoint_latest.json", []

    def writer(n: int) -> None:
        try:
            for step in range(200):
                atomic_write_text(path, json.dumps({"writer": n, "step": step}))
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.loads(path.read_text())["step"] == 199
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


HOLD_LOCK = "import sys, time; from metric_retrieval.training.run_lock import RunLock; " \
            "RunLock(sys.argv[1]).__enter__(); print('locked', flush=True); time.sleep(60)"


def test_run_folder_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=rf"--output_dir {tmp_path} is in use by another training "
                                                rf"\(pid {holder.pid} on "):
            RunLock(tmp_path).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(tmp_path) as lock:  # the kernel released the dead process's lock
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".checkpoint_latest.pth.k2j3.tmp").write_bytes(b"x" * 1000)
    (tmp_path / ".model_best.pth.a1b2.tmp").write_bytes(b"y")
    (tmp_path / "checkpoint_latest.pth").write_bytes(b"kept")
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pth"]


def test_env_json_is_appended(tmp_path):
    path = tmp_path / "env.json"
    path.write_text(json.dumps({"command": ["train.py", "--first"]}))  # the older single-object format
    append_environment(path)
    append_environment(path)
    runs = json.loads(path.read_text())
    assert len(runs) == 3 and runs[0]["command"] == ["train.py", "--first"] and "torch" in runs[2]



def test_corrupt_feature_database_and_whitening_are_reported(tmp_path):
    from metric_retrieval.evaluation import load_whitening, save_whitening
    from metric_retrieval.models.backbones.base import IMAGENET_RGB
    from metric_retrieval.models.recipe import InferenceRecipe
    from metric_retrieval.retrieval import load_database, save_database

    db, wh = tmp_path / "database_best.pth", tmp_path / "whitening.pth"
    save_database(db, query={"embeddings": torch.randn(2000, 256), "labels": torch.zeros(2000, dtype=torch.long),
                             "paths": [f"{i}.jpg" for i in range(2000)]},
                  recipe=InferenceRecipe(32, "cgd", IMAGENET_RGB, 256, "l2", False))
    save_whitening(wh, torch.zeros(512), torch.eye(512))
    assert load_database(db)["query"]["embeddings"].shape == (2000, 256)
    assert load_whitening(wh)[1].shape == (512, 512)
    for path in (db, wh):
        overwrite_middle(path, num_bytes=1 << 18)
    with pytest.raises(UserError, match="database_best.pth.*corrupt"):
        load_database(db)
    with pytest.raises(UserError, match="whitening.pth.*corrupt"):
        load_whitening(wh)
