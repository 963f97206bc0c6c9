"""Every head and every loss (with and without DAS) trains a few steps through the trainer on synthetic data."""
import json

import pytest
import torch

from metric_retrieval import data, losses
from metric_retrieval.losses.base import reads_logits
from metric_retrieval.training import resolve_config, train
from metric_retrieval.training.trainer import TrainingDiverged
from metric_retrieval.utils.errors import UserError
from tests.e2e.cli import run_test_cli

TINY = ["--workers", "0", "--no_tensorboard", "--image_size", "32", "--num_epochs", "1", "--max_steps_per_epoch",
        "2", "--batch_size", "16", "--amp", "off"]
HEADS = {"baseline": ["--backbone_type", "resnet18"], "cgd": ["--backbone_type", "resnet18", "--gd_config", "SMG",
                                                              "--feature_dim", "510"],
         "clf": ["--backbone_type", "resnet18", "--pooling", "sap"], "abir": ["--backbone_type", "vgg16"],
         "gem": ["--backbone_type", "resnet18"], "rmac": ["--backbone_type", "resnet18", "--feature_dim", "512"],
         "regional_attention": ["--backbone_type", "resnet18", "--feature_dim", "512", "--model_option", "levels=2"]}
MINERS = {"triplet": "semihard", "contrastive": "distance", "margin": "distance", "lifted": "lifted",
          "npair": "npair", "batch_hard_triplet": "none"}


def run(tmp_path, *argv):
    return train(resolve_config(["--output_dir", str(tmp_path), *TINY, *argv]))


@pytest.mark.parametrize("head", sorted(HEADS))
def test_each_head_trains_and_embeds_on_the_unit_sphere(head, tmp_path):
    loss = ["--loss", "ls_ce+multi_similarity"] if head in ("cgd", "clf") else ["--loss", "multi_similarity"]
    run(tmp_path, "--head", head, *HEADS[head], *loss, "--miner", "none")
    db = torch.load(tmp_path / "database_best.pth", weights_only=True)
    norms = db["query"]["embeddings"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-4)


@pytest.mark.parametrize("das", [False, True], ids=["plain", "das"])
@pytest.mark.parametrize("loss", losses.LOSSES.names())
def test_each_loss_trains_with_and_without_das(loss, das, tmp_path):
    logits_loss = reads_logits(losses.LOSSES.get(loss))
    if das and logits_loss:
        pytest.skip("DAS generates embeddings; a logits-only criterion has nothing for it to act on")
    head = ["--head", "clf"] if logits_loss else []
    result = run(tmp_path, "--loss", loss, "--miner", MINERS.get(loss, "none"), *head,
                 *(["--das", "--das_num_produce", "2"] if das else []))
    history = result["history"][0]
    assert torch.isfinite(torch.tensor(history["loss"])) and 0 <= history["test_recall@1"] <= 1


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run(tmp_path, "--checkpoint_every", "1")
    good = torch.load(tmp_path / "checkpoint_latest.pth", weights_only=True)["model"]
    original = losses.Criterion.forward

    def poisoned(self, *args):
        total, parts = original(self, *args)
        return total * float("nan"), parts

    monkeypatch.setattr(losses.Criterion, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 1"):
        run(tmp_path, "--num_epochs", "2", "--resume", "latest")
    kept = torch.load(tmp_path / "checkpoint_latest.pth", weights_only=True)["model"]
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_eval_cli_on_a_benchmark_prints_and_writes_json(tmp_path):
    run(tmp_path / "run")
    out = tmp_path / "metrics.json"
    code, stdout, _ = run_test_cli(["--eval", "--checkpoint", str(tmp_path / "run" / "model_best.pth"),
                                    "--data_name", "folder", "--data_path", str(data.ensure_default_dataset()),
                                    "--json", str(out), "--workers", "0"])
    assert code == 0 and "recall@1" in stdout
    saved = torch.load(tmp_path / "run" / "model_best.pth", weights_only=True)["metrics"]["test"]
    assert json.loads(out.read_text())["recall@1"] == pytest.approx(saved["recall@1"])


def test_eval_cli_on_revisited_landmarks_with_an_off_the_shelf_model(tmp_path):
    root = data.ensure_synthetic("roxford5k", tmp_path / "roxford5k", image_size=(64, 48))
    code, stdout, err = run_test_cli(["--eval", "--data_name", "roxford5k", "--data_path", str(root),
                                      "--backbone_type", "resnet18", "--head", "gem", "--feature_dim", "512",
                                      "--imsize", "64", "--scales", "1,0.7071", "--qe", "aqe:2", "--workers", "0",
                                      "--json", str(tmp_path / "m.json")])
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"mAP_easy", "mAP_medium", "mAP_hard"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("mAP_easy", "mAP_medium", "mAP_hard"))


@pytest.mark.parametrize("argv, message", [
    (["--query_img_name", "x.jpg", "--data_base", "missing.pth"], "missing.pth"),
    (["--eval", "--data_name", "cub"], "evaluation needs --data_name and --data_path"),
    ([], "give --query_img_name with --data_base"),
])
def test_test_cli_user_errors(argv, message):
    code, _, err = run_test_cli(argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_matching_pairs_link_every_image_to_another_of_its_class():
    from metric_retrieval.evaluation.whitening import matching_pairs

    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    q, p = matching_pairs(labels)
    assert sorted(zip(q.tolist(), p.tolist())) == [(0, 2), (1, 4), (2, 5), (4, 1), (5, 0)]  # class 1 has no pair


@pytest.mark.parametrize("kind", ["pca", "learned"])
def test_learn_whitening_on_a_training_set_then_apply_it(kind, tmp_path):
    root = data.ensure_synthetic("roxford5k", tmp_path / "roxford5k", image_size=(64, 48))
    model = ["--backbone_type", "resnet18", "--head", "gem", "--feature_dim", "512", "--workers", "0"]
    folder = str(data.ensure_default_dataset())
    whitening = tmp_path / "w.pth"
    code, stdout, err = run_test_cli(["--learn_whitening", str(whitening), "--whitening_type", kind,
                                      "--data_name", "folder", "--data_path", folder, "--image_size", "48", *model])
    assert code == 0, err
    mean, projection = __import__("metric_retrieval.evaluation", fromlist=["x"]).load_whitening(whitening)
    assert tuple(mean.shape) == (512,) and tuple(projection.shape) == (512, 512)
    code, _, err = run_test_cli(["--eval", "--data_name", "roxford5k", "--data_path", str(root), "--imsize", "64",
                                 "--whitening", str(whitening), "--json", str(tmp_path / "m.json"), *model])
    assert code == 0, err
    assert 0 <= json.loads((tmp_path / "m.json").read_text())["mAP_medium"] <= 1


def test_an_unreadable_external_query_is_a_user_error(tmp_path):
    run(tmp_path / "run")
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not an image")
    code, _, err = run_test_cli(["--query_img_name", str(bogus), "--data_base",
                                 str(tmp_path / "run" / "database_best.pth")])
    assert code == 2 and "cannot read it as an image" in err and "Traceback" not in err


def test_resume_with_other_settings_names_them(tmp_path):
    run(tmp_path)
    with pytest.raises(UserError, match=r"--loss \('multi_similarity' there, 'triplet' now\)"):
        run(tmp_path, "--resume", "latest", "--loss", "triplet", "--miner", "semihard")


def test_a_logits_loss_needs_a_head_with_a_classifier(tmp_path):
    with pytest.raises(UserError, match="--loss ls_ce reads classifier logits, but --head baseline"):
        run(tmp_path, "--loss", "ls_ce")
