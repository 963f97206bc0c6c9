"""End to end on the built-in synthetic data: train → evaluate → feature database → query retrieval."""
import shutil

import pytest
import torch
from PIL import Image

import train as train_cli
from metric_retrieval.training import builders, resolve_config
from metric_retrieval.training.evaluate import evaluate_split
from metric_retrieval.training.trainer import default_data
from metric_retrieval.utils.io import atomic_save
from tests.e2e.cli import run_test_cli

FAST = ["--workers", "0", "--no_tensorboard"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["--output_dir", str(out), *FAST]
    cfg = resolve_config(argv)
    root = default_data(cfg)
    splits = builders.build_datasets(cfg, root)
    torch.manual_seed(cfg["seed"])
    untrained = builders.build_model(cfg, splits["train"].num_classes)
    before, _ = evaluate_split(untrained, splits["test"], splits["info"].protocol, [1], cfg, torch.device("cpu"), None)
    assert train_cli.main(argv) == 0
    return out, before


def test_training_beats_the_untrained_model(trained_run):
    out, before = trained_run
    after = torch.load(out / "model_best.pth", weights_only=True)["metrics"]["test"]
    assert after["recall@1"] > before["recall@1"] + 0.1, (before, after)
    for name in ("config.yaml", "env.json", "statistics.csv", "checkpoint_latest.pth", "database_best.pth"):
        assert (out / name).is_file(), name
    assert "recall@1" in (out / "statistics.csv").read_text().splitlines()[0].replace("test_", "")


def test_query_a_stored_image_writes_montage_and_html(trained_run, tmp_path):
    out, _ = trained_run
    db = torch.load(out / "database_best.pth", weights_only=True)
    query = db["query"]["paths"][0]
    result_dir = tmp_path / "q"
    code, stdout, _ = run_test_cli(["--query_img_name", query, "--data_base", str(out / "database_best.pth"),
                                    "--retrieval_num", "5", "--output_dir", str(result_dir)])
    assert code == 0
    ranked = [line for line in stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(ranked) == 5 and all(query not in line for line in ranked)  # never retrieves itself
    montage = Image.open(result_dir / "montage.png")
    assert montage.width == 6 * 224  # query + 5 results in one row of 224-px tiles
    html = (result_dir / "index.html").read_text()
    assert html.count("<img") == 6


def test_query_an_external_image_uses_the_saved_checkpoint(trained_run, tmp_path):
    out, _ = trained_run
    db = torch.load(out / "database_best.pth", weights_only=True)
    external = tmp_path / "my_photo.jpg"
    shutil.copy(db["query"]["paths"][3], external)
    code, stdout, _ = run_test_cli(["--query_img_name", str(external), "--data_base",
                                    str(out / "database_best.pth"), "--retrieval_num", "3",
                                    "--output_dir", str(tmp_path / "ext")])
    assert code == 0
    first = [line for line in stdout.splitlines() if line.strip().startswith("1 ")][0]
    assert db["query"]["paths"][3] in first  # the same picture is its own nearest neighbour
    assert float(first.split()[1]) < 1e-3


def test_resume_continues_from_latest(trained_run, tmp_path):
    out, _ = trained_run
    run = tmp_path / "resumed"
    shutil.copytree(out, run)
    assert train_cli.main(["--output_dir", str(run), *FAST, "--num_epochs", "5", "--resume", "latest"]) == 0
    rows = (run / "statistics.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 and rows[-1].startswith("5,")


def test_rerun_into_a_finished_run_changes_nothing(trained_run, capsys):
    out, _ = trained_run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert train_cli.main(["--output_dir", str(out), *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_the_log_says_where_the_run_went(trained_run):
    out, _ = trained_run
    assert f"run folder: {out.resolve()}" in (out / "train.log").read_text()
    assert "train 192 images / 12 classes, test 192 images / 12 classes" in (out / "train.log").read_text()


def test_progress_bars_stay_out_of_train_log(trained_run):
    log = (trained_run[0] / "train.log").read_text()  # the epoch bars went to stderr while it trained
    assert "epoch 1: " in log and "\r" not in log and "it/s" not in log and "s/it" not in log


def test_eval_reproduces_the_metrics_training_logged(trained_run):
    """The quick recipe trains with bf16 + channels_last where the CPU computes bf16 natively (--amp auto);
    test.py --eval uses the run's own precision and memory format, so the numbers match exactly."""
    out, _ = trained_run
    ckpt = torch.load(out / "model_best.pth", weights_only=True)
    code, stdout, _ = run_test_cli(["--eval", "--checkpoint", str(out / "model_best.pth"), "--data_name", "folder",
                                    "--data_path", ckpt["config"]["data_path"] or str(default_data(dict(
                                        ckpt["config"]))), "--workers", "0", "--json", str(out.parent / "m.json")])
    assert code == 0
    import json

    metrics = json.loads((out.parent / "m.json").read_text())
    assert {k: metrics[k] for k in ckpt["metrics"]["test"]} == ckpt["metrics"]["test"]


def other_weights(out, tmp_path):
    """A checkpoint of the same architecture and width but other weights (another run, say)."""
    ckpt = torch.load(out / "model_best.pth", weights_only=True)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    atomic_save(ckpt, tmp_path / "other.pth")  # with a fresh checksum: a valid file, just other weights
    return tmp_path / "other.pth"


def test_a_checkpoint_of_another_model_is_refused(trained_run, tmp_path):
    out, _ = trained_run
    other = other_weights(out, tmp_path)
    db = torch.load(out / "database_best.pth", weights_only=True)
    external = tmp_path / "photo.jpg"
    shutil.copy(db["query"]["paths"][3], external)
    for query in (db["query"]["paths"][0], str(external)):  # a stored query too: never silently ignored
        code, _, err = run_test_cli(["--query_img_name", query, "--data_base", str(out / "database_best.pth"),
                                     "--checkpoint", str(other), "--output_dir", str(tmp_path / "r")])
        assert code == 2 and "holds other weights than the model that wrote the database" in err
    code, _, _ = run_test_cli(["--query_img_name", str(external), "--data_base", str(out / "database_best.pth"),
                               "--checkpoint", str(out / "model_best.pth"), "--output_dir", str(tmp_path / "r")])
    assert code == 0


def test_the_checkpoint_next_to_the_database_is_found_from_anywhere(trained_run, tmp_path, monkeypatch):
    out, _ = trained_run
    run = tmp_path / "moved"
    run.mkdir()
    for name in ("database_best.pth", "model_best.pth"):
        shutil.copy(out / name, run / name)
    db = torch.load(run / "database_best.pth", weights_only=True)
    db["checkpoint"] = "runs/cars/model_best.pth"  # as typed in the folder training ran from
    atomic_save(db, run / "database_best.pth")  # a fresh checksum: edited on purpose, not corrupt
    external = tmp_path / "photo.jpg"
    shutil.copy(db["query"]["paths"][3], external)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, stdout, err = run_test_cli(["--query_img_name", str(external), "--data_base", "../moved/database_best.pth",
                                      "--output_dir", str(tmp_path / "r")])
    assert code == 0, err
    assert float([line for line in stdout.splitlines() if line.strip().startswith("1 ")][0].split()[1]) < 1e-3


def test_resuming_a_finished_run_says_so(trained_run, tmp_path):
    out, _ = trained_run
    run = tmp_path / "again"
    run.mkdir()
    shutil.copy(out / "checkpoint_latest.pth", run / "checkpoint_latest.pth")
    assert train_cli.main(["--output_dir", str(run), *FAST, "--resume", "latest"]) == 0
    assert "the run is already complete (4 of --num_epochs 4 done)" in (run / "train.log").read_text()
