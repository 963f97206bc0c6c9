"""The trainer's decoding paths see the same images: ``fast``, ``cache``, ``auto`` and ``gpu`` train identically."""
import pytest
import torch

import metric_retrieval.data.decoded_cache
import metric_retrieval.training.config
from metric_retrieval.training import resolve_config, train
from metric_retrieval.utils.errors import UserError

TINY = ["--workers", "0", "--no_tensorboard", "--num_epochs", "2", "--max_steps_per_epoch", "2", "--batch_size",
        "16", "--amp", "off", "--loss", "triplet", "--miner", "semihard", "--eval_every", "1"]


def weights(tmp_path, decode, *argv):
    out = tmp_path / decode
    result = train(resolve_config(["--output_dir", str(out), *TINY, "--decode", decode, *argv]))
    return torch.load(out / "checkpoint_latest.pth", weights_only=True)["model"], result, out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_fast_cache_and_auto_train_bit_identically(tmp_path, monkeypatch):
    monkeypatch.setattr(metric_retrieval.data.decoded_cache, "free_bytes", lambda folder: 10**12)
    fast, fast_result, _ = weights(tmp_path, "fast")
    cache, _, _ = weights(tmp_path, "cache")  # epoch 1 writes the cache, epoch 2 and evaluation read it
    auto, auto_result, out = weights(tmp_path, "auto")
    assert_same(fast, cache)
    assert_same(fast, auto)
    for a, b in zip(auto_result["history"], fast_result["history"]):  # same losses and metrics; not timings
        a.pop("images_per_s"), b.pop("images_per_s")
        assert a == b
    log = (out / "train.log").read_text()
    assert "decode auto: train cache, test cache (1.9 MB still to write" in log  # test split cached by the cache run
    # resuming may switch between paths that give the same pixels, not to others
    train(resolve_config(["--output_dir", str(out), *TINY, "--num_epochs", "3", "--resume", "latest",
                          "--decode", "fast"]))
    with pytest.raises(UserError, match=r"--decode \('fast' there, 'pil' now\)"):
        train(resolve_config(["--output_dir", str(out), *TINY, "--num_epochs", "4", "--resume", "latest",
                              "--decode", "pil"]))


def test_auto_decodes_fast_when_the_cache_would_not_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(metric_retrieval.data.decoded_cache, "free_bytes", lambda folder: 10**6)
    _, _, out = weights(tmp_path, "auto", "--num_epochs", "1")
    log = (out / "train.log").read_text()
    assert "decode auto: train fast, test fast (the cache would take more than 10% of the free space" in log
    _, _, out = weights(tmp_path / "das", "auto", "--num_epochs", "1", "--transform", "das")
    assert "(no split starts with a fixed-size resize (nothing to cache))" in (out / "train.log").read_text()


def test_gpu_decoding_path_trains_like_fast(tmp_path, monkeypatch):
    # The device path is device-agnostic: with the CUDA check lifted it decodes in the main process on the CPU,
    # with the same libjpeg-turbo, the same crops and flips (sample seeds) and so the same weights.
    monkeypatch.setattr(metric_retrieval.training.config, "gpu_decode_unavailable", lambda device: False)
    fast, _, _ = weights(tmp_path, "fast", "--transform", "das", "--val_classes", "0.2")
    gpu, _, out = weights(tmp_path, "gpu", "--transform", "das", "--val_classes", "0.2")
    assert_same(fast, gpu)
    assert "decode gpu: train gpu, test fast" in (out / "train.log").read_text()


def test_gpu_decoding_needs_cuda(tmp_path):
    with pytest.raises(UserError, match="--decode gpu decodes training images on a CUDA GPU, but --device cpu"):
        resolve_config(["--output_dir", str(tmp_path), *TINY, "--decode", "gpu", "--device", "cpu"])
