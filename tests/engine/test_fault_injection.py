"""Faults injected into real training runs: kills, signals, corrupt bytes, a full disk, a second process on the
same folder, a frozen rank, an image truncated while the run goes on. Tiny runs (32 px, few steps, CPU)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metric_retrieval import data
from tests.fake_files import small_tmpfs

REPO = Path(__file__).resolve().parents[2]
# triplet + semihard miner (global RNG) and DAS (its own generator) make the run depend on every RNG;
# --deterministic --amp off is the bit-exact mode (README "Reliability").
EXACT = ["--workers", "0", "--no_tensorboard", "--image_size", "32", "--num_epochs", "2", "--loss", "triplet",
         "--miner", "semihard", "--das", "--lr", "1e-4", "--eval_every", "1", "--device", "cpu", "--amp", "off",
         "--deterministic", "--max_steps_per_epoch", "5"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.slow


def train(argv, launcher=(sys.executable,), **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, "train.py", *argv], cwd=REPO, capture_output=True, text=True, env=ENV, **kw)


def start(argv, log: Path, launcher=(sys.executable,)) -> subprocess.Popen:
    """A training in the background, its stderr to ``log`` (a pipe could fill up and block it)."""
    with open(log, "w") as stderr:
        return subprocess.Popen([*launcher, "train.py", *argv], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                                text=True, env=ENV)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    proc.wait(timeout=timeout)
    return log.read_text()


def wait_for_step(proc: subprocess.Popen, out: Path, epoch: int, step: int, timeout: float = 300) -> None:
    """Block until the run's checkpoint summary says it reached (0-based) ``epoch`` and ``step``."""
    summary, deadline = out / "checkpoint_latest.json", time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            state = json.loads(summary.read_text())
            if (state["epoch"], state["step"]) >= (epoch, step):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the run ended or stalled before epoch {epoch + 1} step {step} (rc {proc.wait()})")


def worker_pid(launcher_pid: int, rank: int) -> int:
    """The pid of ``torchrun``'s worker of ``rank`` (found through /proc: its parent and RANK variable)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher_pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under pid {launcher_pid}")


def assert_same_state(a_dir: Path, b_dir: Path) -> None:
    a, b = (torch.load(d / "checkpoint_latest.pth", weights_only=True) for d in (a_dir, b_dir))
    for part in ("model", "criterion"):
        for key, value in a[part].items():
            if torch.is_tensor(value):
                assert torch.equal(value, b[part][key]), f"{part}.{key}"
    rows = [[{k: v for k, v in r.items() if k != "images_per_s"} for r in c["progress"]["history"]] for c in (a, b)]
    assert rows[0] == rows[1]  # epoch mean losses included: a mid-epoch resume counts the steps before it


def test_ddp_rank1_sigkilled_mid_epoch2_then_resume_is_bitwise_identical(tmp_path):
    args = [*EXACT, "--batch_size", "8", "--checkpoint_every", "1"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    result = train([*args, "--output_dir", str(full)], TORCHRUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best recall@1") == 1 and "-inf" not in result.stdout  # rank 0 reports, alone

    proc = start([*args, "--output_dir", str(killed)], tmp_path / "killed.log", TORCHRUN)
    wait_for_step(proc, killed, epoch=1, step=2)
    os.kill(worker_pid(proc.pid, rank=1), signal.SIGKILL)
    finish(proc, tmp_path / "killed.log")
    assert proc.returncode != 0
    resumed = train([*args, "--output_dir", str(killed), "--resume", "latest"], TORCHRUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_state(full, killed)


def test_eval_every_does_not_change_what_training_computes(tmp_path):
    runs = {n: tmp_path / f"eval{n}" for n in (1, 0)}
    for n, out in runs.items():
        result = train([*EXACT, "--batch_size", "16", "--eval_every", str(n), "--output_dir", str(out)])
        assert result.returncode == 0, result.stderr[-2000:]
    a, b = (torch.load(out / "checkpoint_latest.pth", weights_only=True) for out in runs.values())
    assert [r["loss"] for r in a["progress"]["history"]] == [r["loss"] for r in b["progress"]["history"]]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_sigterm_mid_epoch_checkpoints_and_resume_equals_uninterrupted(tmp_path):
    args = [*EXACT, "--batch_size", "16", "--checkpoint_every", "2"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert train([*args, "--output_dir", str(full)]).returncode == 0
    proc = start([*args, "--output_dir", str(stopped)], tmp_path / "stopped.log")
    wait_for_step(proc, stopped, epoch=1, step=2)
    proc.send_signal(signal.SIGTERM)  # the stop lands on step 3 or 4, which --checkpoint_every 2 would not save
    stderr = finish(proc, tmp_path / "stopped.log")
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    line = next(x for x in stderr.splitlines() if "stopped by SIGTERM" in x)
    assert "at epoch 2, step " in line and "--resume latest" in line and str(stopped) in line
    assert line.split("stopped by SIGTERM")[1] in (stopped / "train.log").read_text()
    assert json.loads((stopped / "checkpoint_latest.json").read_text())["step"] in (3, 4)
    resumed = train([*args, "--output_dir", str(stopped), "--resume", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_state(full, stopped)


def test_second_sigint_exits_at_once(tmp_path):
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start([*EXACT, "--batch_size", "16", "--checkpoint_every", "1", "--output_dir", str(out)], log)
    wait_for_step(proc, out, epoch=0, step=1)
    proc.send_signal(signal.SIGINT)
    deadline = time.time() + 60  # two signals sent at once would be coalesced into one by the interpreter
    while "SIGINT received: stopping after the current step" not in log.read_text() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stderr = finish(proc, log, timeout=60)
    assert proc.returncode == -signal.SIGINT and "KeyboardInterrupt" not in stderr


def test_corrupt_checkpoint_is_named_and_resume_latest_falls_back(tmp_path):
    args = [*EXACT, "--batch_size", "16", "--num_epochs", "1", "--max_steps_per_epoch", "3", "--checkpoint_every", "1",
            "--eval_every", "0", "--output_dir", str(tmp_path)]
    assert train(args).returncode == 0
    latest = tmp_path / "checkpoint_latest.pth"
    size = latest.stat().st_size
    with open(latest, "r+b") as f:  # 1 MB of the middle overwritten (a bad disk, a partial copy)
        f.seek(size // 2 - (1 << 19))
        f.write(os.urandom(1 << 20))
    explicit = train([*args, "--num_epochs", "2", "--resume", str(latest)])
    assert explicit.returncode == 2 and "Traceback" not in explicit.stderr
    # checksum mismatch, or (when the overwrite hit a zip header) unreadable: either way named, prev offered
    assert f"checkpoint {latest} is corrupt" in explicit.stderr or f"cannot read checkpoint {latest}" in explicit.stderr
    assert f"may be intact: --resume {tmp_path / 'checkpoint_prev.pth'}" in explicit.stderr
    fallback = train([*args, "--num_epochs", "2", "--resume", "latest"])
    assert fallback.returncode == 0, fallback.stderr[-2000:]
    assert "resuming from the previous checkpoint" in fallback.stderr and "at epoch 1 step 2" in fallback.stderr


def test_full_disk_is_one_error_line_also_in_train_log(tmp_path):
    # room for the run's logs and model_best.pth (45 MB), not for checkpoint_latest.pth with Adam's state
    with small_tmpfs(tmp_path / "small", "80m", "tests/engine/test_safe_files.py patches the write") as out:
        result = train([*EXACT, "--batch_size", "16", "--num_epochs", "1", "--max_steps_per_epoch", "2",
                        "--output_dir", str(out)])
        assert result.returncode == 2 and "Traceback" not in result.stderr
        error = [x for x in result.stderr.splitlines() if x.startswith("error:")]
        assert len(error) == 1 and f"no space left in {out} while writing checkpoint_latest.pth" in error[0]
        assert "it needs about" in error[0]
        assert "no space left in" in (out / "train.log").read_text()
        assert not list(out.glob(".*.tmp"))


def test_second_training_into_the_same_folder_is_refused_until_the_first_dies(tmp_path):
    out = tmp_path / "run"
    args = [*EXACT, "--batch_size", "16", "--max_steps_per_epoch", "4", "--checkpoint_every", "1",
            "--output_dir", str(out)]
    first = start([*args, "--num_epochs", "20"], tmp_path / "first.log")  # still running when the second starts
    wait_for_step(first, out, epoch=0, step=1)
    second = train([*args, "--num_epochs", "1", "--resume", "latest"])  # even a legitimate resume must wait
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"--output_dir {out} is in use by another training (pid {first.pid} on" in second.stderr
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the first run ended before the second one tried"
    taken_over = train([*args, "--num_epochs", "1", "--resume", "latest"])  # the dead run's lock is stale
    assert taken_over.returncode == 0, taken_over.stderr[-2000:]


def test_ddp_run_into_a_locked_folder_stops_every_rank_with_the_one_message(tmp_path):
    from metric_retrieval.training.run_lock import RunLock

    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):  # held by this (live) process: the torchrun job must refuse the folder
        result = train([*EXACT, "--batch_size", "8", "--num_epochs", "1", "--output_dir", str(out)], TORCHRUN,
                       timeout=240)
    message = f"error: --output_dir {out} is in use by another training (pid {os.getpid()} on"
    assert result.returncode != 0 and result.stderr.count(message) == 2, result.stderr[-3000:]  # rank 0 and rank 1
    for raw in ("gloo", "Connection", "RuntimeError", "DistBackendError"):  # rank 1 no longer dies on a collective
        assert raw not in result.stderr, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_frozen_rank_ends_the_job_after_dist_timeout(tmp_path):
    args = [*EXACT, "--batch_size", "8", "--checkpoint_every", "1", "--num_epochs", "1", "--max_steps_per_epoch", "20",
            "--dist_timeout", "10", "--output_dir", str(tmp_path / "run")]
    proc = start(args, tmp_path / "run.log", TORCHRUN)
    wait_for_step(proc, tmp_path / "run", epoch=0, step=1)
    frozen = worker_pid(proc.pid, rank=1)
    os.kill(frozen, signal.SIGSTOP)
    started = time.time()
    try:
        stderr = finish(proc, tmp_path / "run.log", timeout=240)
    finally:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(frozen, sig)
            except ProcessLookupError:
                pass
    assert proc.returncode != 0 and time.time() - started < 240
    assert "rank 0 waited more than --dist_timeout 10.0 s for the other ranks" in stderr


def test_image_truncated_while_training_is_named_or_left_out(tmp_path):
    root = data.write_synthetic("folder", tmp_path / "images", image_size=(32, 32), images_per_class=8,
                                num_classes=8)
    bad = sorted((root / "test").rglob("*.jpg"))[0]
    args = [*EXACT, "--batch_size", "16", "--num_epochs", "1", "--checkpoint_every", "1",
            "--data_path", str(root), "--data_name", "folder", "--pretrained", "none"]
    for skip in (False, True):
        out, log = tmp_path / f"run_skip{skip}", tmp_path / f"run_skip{skip}.log"
        proc = start([*args, "--output_dir", str(out), *(["--skip_bad_images"] if skip else [])], log)
        wait_for_step(proc, out, epoch=0, step=1)  # checked and started; the evaluation comes at the epoch's end
        good = bad.read_bytes()
        bad.write_bytes(good[: len(good) // 3])
        stderr = finish(proc, log)
        bad.write_bytes(good)
        assert "Traceback" not in stderr
        if skip:
            assert proc.returncode == 0, stderr[-2000:]
            assert "left 1 unreadable image(s) out of the evaluation" in (out / "train.log").read_text()
        else:
            assert proc.returncode == 2
            assert f"error: {bad} cannot be read any more" in stderr


def test_nonfinite_weights_are_never_checkpointed_and_resume_may_change_the_remedies(tmp_path, monkeypatch, capsys):
    import metric_retrieval.training.trainer
    import train as train_cli

    args = [*EXACT, "--batch_size", "16", "--num_epochs", "1", "--max_steps_per_epoch", "3", "--checkpoint_every", "1",
            "--scheduler", "constant", "--output_dir", str(tmp_path)]
    real_step = metric_retrieval.training.trainer.train_step

    def blow_up_on_step_2(ctx, *batch):
        result = real_step(ctx, *batch)
        if ctx.progress.step == 1:  # the second step: its loss was finite, the weights it leaves are not
            ctx.model.backbone.conv1.weight.data[0, 0, 0, 0] = float("inf")
        return result

    monkeypatch.setattr(metric_retrieval.training.trainer, "train_step", blow_up_on_step_2)
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "error: the weights became non-finite (model.backbone.conv1.weight) at epoch 1, step 2" in err
    saved = torch.load(tmp_path / "checkpoint_latest.pth", weights_only=True)
    assert saved["progress"]["step"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())

    monkeypatch.setattr(metric_retrieval.training.trainer, "train_step", real_step)
    assert train_cli.main([*args, "--resume", "latest", "--lr", "5e-5", "--grad_clip", "1.0"]) == 0
    err = capsys.readouterr().err
    assert "resume changes --grad_clip 0.0 -> 1.0, --lr 0.0001 -> 5e-05" in err
    final = torch.load(tmp_path / "checkpoint_latest.pth", weights_only=True)
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-5) and final["config"]["lr"] == 5e-5


@pytest.mark.parametrize("trained, resumed", [("off", "bf16"), ("fp16", "off")])
def test_resume_after_divergence_may_switch_amp_and_then_differs(tmp_path, monkeypatch, capsys, trained, resumed):
    import shutil

    import metric_retrieval.training.trainer
    import train as train_cli

    args = [*EXACT, "--batch_size", "16", "--num_epochs", "1", "--max_steps_per_epoch", "3", "--checkpoint_every", "1",
            "--scheduler", "constant", "--eval_every", "0"]
    real_step = metric_retrieval.training.trainer.train_step

    def diverge_on_step_2(ctx, *batch):
        if ctx.progress.step == 1:
            raise metric_retrieval.training.trainer.TrainingDiverged("the loss became nan (injected)")
        return real_step(ctx, *batch)

    diverged = tmp_path / "diverged"
    monkeypatch.setattr(metric_retrieval.training.trainer, "train_step", diverge_on_step_2)
    assert train_cli.main([*args, "--amp", trained, "--output_dir", str(diverged)]) == 2
    monkeypatch.setattr(metric_retrieval.training.trainer, "train_step", real_step)
    capsys.readouterr()
    runs = {amp: tmp_path / f"resumed_{amp}" for amp in (trained, resumed)}
    for amp, out in runs.items():
        shutil.copytree(diverged, out)
        assert train_cli.main([*args, "--amp", amp, "--output_dir", str(out), "--resume", "latest"]) == 0
    err = capsys.readouterr().err
    assert err.count("resume changes") == 1 and f"resume changes --amp {trained!r} -> {resumed!r}" in err
    same, switched = (torch.load(out / "checkpoint_latest.pth", weights_only=True) for out in runs.values())
    assert same["progress"]["global_step"] == switched["progress"]["global_step"] == 3
    assert switched["config"]["amp"] == resumed
    # README "Reliability": bit-exact only with the same --amp; a switched one computes differently from there on
    assert any(not torch.equal(same["model"][k], switched["model"][k]) for k in same["model"])
