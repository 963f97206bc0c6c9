"""A careless user of ``test.py`` / ``train.py``: every mistake is a clear ``error:`` (exit 2), found before work."""
import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

import data_utils
import train as train_cli
from metric_retrieval.retrieval.eval_commands import build_eval_model, eval_amp
from metric_retrieval.utils.io import torch_file_problem
from tests.e2e.cli import run_test_cli, test_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    from metric_retrieval.data import write_synthetic

    return write_synthetic("folder", tmp_path_factory.mktemp("folder"), image_size=(32, 32), images_per_class=2,
                           num_classes=4)


@pytest.fixture
def yaml_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("lr: 0.1\nbatch_size: 32\n")
    return path


def eval_argv(folder_data, *extra):
    return ["--eval", "--data_name", "folder", "--data_path", str(folder_data), "--backbone_type", "resnet18",
            "--head", "gem", "--workers", "0", *extra]


@pytest.mark.parametrize("extra, message", [
    (["--retrieval_num", "0"], "--retrieval_num must be a positive integer, got 0"),
    (["--retrieval_num", "-3"], "--retrieval_num must be a positive integer, got -3"),
    (["--imsize", "0"], "--imsize must be a positive integer, got 0"),
    (["--scales", "0"], "--scales must list positive factors"),
    (["--scales", "-1"], "--scales must list positive factors"),
    (["--scales", "1,nan"], "--scales must list positive factors"),
    (["--eval_batch_size", "0"], "--eval_batch_size must be a positive integer"),
    (["--whitening", "missing.pth"], "--whitening missing.pth: no such file"),
    (["--data_base", "missing.pth"], "--data_base missing.pth: no such file"),
])
def test_bad_arguments_are_refused_first(folder_data, extra, message):
    code, out, err = run_test_cli([*eval_argv(folder_data), *extra])
    assert code == 2 and message in err and "Traceback" not in err and out == ""


@pytest.mark.parametrize("extra, message", [
    (["--model_option", "gem_q=3"], "--model_option gem_q: backbone resnet18 with head gem takes no option 'gem_q'; "
                                    "valid options: embedding_norm, freeze_backbone"),
    (["--model_option", "gem_p=0"], "--model_option gem_p"),
    (["--backbone_type", "resnet19"], "--backbone_type: unknown backbone 'resnet19'; choose one of: caffe_resnet101"),
    (["--head", "gme"], "--head: unknown head 'gme'; choose one of: abir"),
])
def test_off_the_shelf_model_options_are_checked_before_the_model_is_built(folder_data, extra, message):
    code, out, err = run_test_cli([*eval_argv(folder_data), *extra])
    assert code == 2 and message in err and "Traceback" not in err and out == ""


def test_off_the_shelf_flags_beside_a_checkpoint_are_refused_not_ignored(folder_data, tmp_path):
    checkpoint = tmp_path / "model_best.pth"
    checkpoint.write_bytes(b"never read")  # the flags are refused before the file is opened
    code, out, err = run_test_cli([*eval_argv(folder_data), "--pretrained", "imagenet", "--checkpoint",
                                   str(checkpoint)])
    assert code == 2 and out == "" and "Traceback" not in err
    assert (f"--backbone_type, --head, --pretrained: describe an off-the-shelf model, but --checkpoint {checkpoint} "
            "carries its own; drop them") in err


@pytest.mark.parametrize("flag", ["--json", "--learn_whitening"])
def test_output_file_that_is_a_folder_is_refused_before_evaluating(folder_data, tmp_path, flag):
    code, _, err = run_test_cli([*eval_argv(folder_data), flag, str(tmp_path)])
    assert code == 2 and f"{flag} {tmp_path} is a folder" in err


@pytest.mark.parametrize("extra, named", [
    (["--qe", "banana"], "--qe"), (["--qe", "aqe:2"], "--qe"), (["--dba", "3"], "--dba"),
    (["--scales", "1,0.5"], "--scales"), (["--imsize", "512"], "--imsize"),
])
def test_landmark_options_on_another_dataset_are_refused(folder_data, extra, named):
    code, _, err = run_test_cli([*eval_argv(folder_data), *extra])
    assert code == 2 and f"{named} only apply to landmark datasets" in err


def test_bad_query_expansion_is_refused_before_the_model(monkeypatch, folder_data):
    from metric_retrieval.retrieval import eval_commands

    monkeypatch.setattr(eval_commands.data, "get_benchmark", lambda *a: argparse.Namespace(protocol="landmark"))
    monkeypatch.setattr(eval_commands, "build_eval_model", lambda *a: pytest.fail("model built before --qe"))
    code, _, err = run_test_cli([*eval_argv(folder_data), "--qe", "banana"])
    assert code == 2 and "unknown query expansion method 'banana'" in err


def test_whitening_of_the_wrong_dimension_is_refused_before_extracting(monkeypatch, tmp_path, folder_data):
    from metric_retrieval.evaluation import save_whitening
    from metric_retrieval.retrieval import eval_commands

    path = tmp_path / "w.pth"
    save_whitening(path, torch.zeros(16), torch.eye(16))
    monkeypatch.setattr(eval_commands.data, "get_benchmark", lambda *a: argparse.Namespace(protocol="landmark"))
    monkeypatch.setattr(eval_commands.data, "load_landmark_dataset", lambda *a: pytest.fail("images read"))
    code, _, err = run_test_cli([*eval_argv(folder_data), "--whitening", str(path)])
    assert code == 2 and "whitens 16-d descriptors, but the model gives 512-d ones" in err


@pytest.mark.parametrize("flag", ["--data_base", "--checkpoint"])
def test_yaml_given_as_a_torch_file(folder_data, yaml_file, flag):
    argv = ["--query_img_name", "x.jpg", "--data_base", str(yaml_file)] if flag == "--data_base" else \
        ["--eval", "--data_name", "folder", "--data_path", str(folder_data), "--checkpoint", str(yaml_file)]
    code, _, err = run_test_cli(argv)
    assert code == 2 and "is not a PyTorch file written by torch.save: it holds text (a YAML" in err


def test_yaml_given_to_train_as_resume_or_pretrained(tmp_path, yaml_file, capsys):
    fast = ["--workers", "0", "--no_tensorboard", "--image_size", "32", "--amp", "off"]
    assert train_cli.main([*fast, "--output_dir", str(tmp_path / "a"), "--resume", str(yaml_file)]) == 2
    assert "is not a PyTorch file written by torch.save: it holds text" in capsys.readouterr().err
    assert train_cli.main([*fast, "--output_dir", str(tmp_path / "b"), "--pretrained", str(yaml_file)]) == 2
    assert f"weights file {yaml_file} is not a PyTorch file" in capsys.readouterr().err


def test_torch_file_problem(tmp_path):
    torch.save({"a": 1}, tmp_path / "ok.pth")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02\x03")
    assert torch_file_problem(tmp_path / "ok.pth") is None
    assert torch_file_problem(tmp_path / "empty") == "is empty"
    assert "another format" in torch_file_problem(tmp_path / "bin")


def test_off_the_shelf_gem_is_deterministic_without_a_projection(folder_data, tmp_path):
    from metric_retrieval import models

    weights = tmp_path / "resnet18.pth"  # stands in for --pretrained imagenet (no download in tests)
    torch.save(models.build_model("resnet18", "gem").backbone.state_dict(), weights)
    args = test_cli.get_args_parser().parse_args(eval_argv(folder_data, "--pretrained", str(weights)))
    torch.manual_seed(0)
    first, _ = build_eval_model(args, torch.device("cpu"))
    torch.manual_seed(123)  # a different RNG state must not matter: no randomly initialised layer
    second, _ = build_eval_model(args, torch.device("cpu"))
    assert first.head.whiten is None and first.feature_dim == 512
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(first(x)[0], second(x)[0])
    projected, _ = build_eval_model(test_cli.get_args_parser().parse_args(eval_argv(folder_data, "--feature_dim",
                                                                                    "128")), torch.device("cpu"))
    assert projected.feature_dim == 128  # a projection only when asked for


def test_eval_precision_follows_the_run_unless_overridden():
    parse = test_cli.get_args_parser().parse_args
    cpu = torch.device("cpu")
    assert eval_amp(parse([]), {"amp": "bf16"}, cpu) is torch.bfloat16
    assert eval_amp(parse([]), {"amp": "off"}, cpu) is None
    assert eval_amp(parse([]), {}, cpu) is None  # off-the-shelf
    assert eval_amp(parse(["--amp", "off"]), {"amp": "bf16"}, cpu) is None
    assert eval_amp(parse(["--amp", "fp16"]), {"amp": "off"}, cpu) is torch.float16


def _cli_parser(script: str):
    spec = importlib.util.spec_from_file_location(script, REPO / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_args_parser


@pytest.mark.parametrize("parser", [train_cli.get_args_parser, test_cli.get_args_parser, data_utils.get_args_parser,
                                    *(_cli_parser(s) for s in ("export", "index", "serve"))])
def test_usage_line_names_the_program(parser):
    p = parser()
    assert p.format_usage().startswith(f"usage: {p.prog} ") and " " not in p.prog and p.description


def test_pooling_help_lists_what_each_head_accepts():
    text = train_cli.get_args_parser().format_help()
    assert "baseline avg, avgmax" in " ".join(text.split())


TINY = ["--pretrained", "none", "--workers", "0", "--no_tensorboard", "--image_size", "32", "--amp", "off",
        "--num_epochs", "1", "--batch_size", "8", "--samples_per_class", "2", "--eval_batch_size", "16"]


def train_argv(root, out, *extra, name="folder"):
    return ["--data_path", str(root), "--data_name", name, "--output_dir", str(out), *TINY, *extra]


def synth(tmp_path_factory, layout, **kw):
    from metric_retrieval.data import write_synthetic

    return write_synthetic(layout, tmp_path_factory.mktemp(layout), image_size=(32, 32), **kw)


def test_one_training_class_is_refused_and_the_log_keeps_why(tmp_path_factory, tmp_path, capsys):
    root = synth(tmp_path_factory, "folder", num_classes=2, images_per_class=4)
    assert train_cli.main(train_argv(root, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "error: unusable data:\n  the training split has 1 class" in err and "Traceback" not in err
    log = (tmp_path / "run" / "train.log").read_text()
    assert "ERROR stopped: unusable data" in log and "train 4 images / 1 classes" in log
    assert not (tmp_path / "run" / "model_best.pth").exists()


@pytest.mark.parametrize("extra, message", [
    (["--val_classes", "0.9"], "the training split has 1 class"),
    (["--val_classes", "0.01"], "--val_classes 0.01 holds out 1 class of 4"),
    (["--batch_size", "32", "--samples_per_class", "4"], "--sampler m_per_class with --batch_size 32"),
    (["--select_metric", "recall@3"], "--select_metric recall@3 is not computed"),
])
def test_data_mistakes_stop_before_the_first_step(tmp_path_factory, tmp_path, capsys, monkeypatch, extra, message):
    from metric_retrieval.training import trainer

    root = synth(tmp_path_factory, "folder", num_classes=8, images_per_class=3)
    monkeypatch.setattr(trainer, "train_one_epoch", lambda *a: pytest.fail("trained before the check"))
    assert train_cli.main(train_argv(root, tmp_path / "run", *extra)) == 2
    assert message in capsys.readouterr().err


def test_an_empty_test_split_stops_before_training(tmp_path_factory, tmp_path, capsys, monkeypatch):
    from metric_retrieval.training import trainer

    root = synth(tmp_path_factory, "cub", images_per_class=1)
    images = root / "CUB_200_2011" / "images.txt"
    images.write_text("".join(images.read_text().splitlines(keepends=True)[:100]))  # truncated: the test half lost
    monkeypatch.setattr(trainer, "train_one_epoch", lambda *a: pytest.fail("trained before the check"))
    assert train_cli.main(train_argv(root, tmp_path / "run", "--batch_size", "4", name="cub")) == 2
    assert "the test split has no images" in capsys.readouterr().err


def test_warnings_reach_the_log_as_plain_lines(tmp_path_factory, tmp_path, capsys, monkeypatch):
    from metric_retrieval.training import trainer
    from metric_retrieval.utils.errors import UserError

    root = synth(tmp_path_factory, "folder", num_classes=8, images_per_class=3)
    next((root / "train").rglob("*.jpg")).write_bytes(b"not a jpeg")

    def stop(*args):
        raise UserError("stopped by the test")

    monkeypatch.setattr(trainer, "train_one_epoch", stop)
    assert train_cli.main(train_argv(root, tmp_path / "run", "--skip_bad_images", "--samples_per_class", "4")) == 2
    err = capsys.readouterr().err
    log = (tmp_path / "run" / "train.log").read_text()
    for text in ("WARNING dropped 1 unreadable image(s)", "WARNING --samples_per_class 4: 4 of 4 training classes",
                 "ERROR stopped: stopped by the test"):
        assert text in log, text
    assert "DatasetWarning" not in err and "warnings.warn" not in err and "error: stopped by the test" in err
    assert err.count("stopped by the test") == 1  # the console gets the CLI's line only
