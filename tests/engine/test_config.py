"""Config resolution: defaults < YAML < explicit flags; unknown keys and bad combinations are rejected."""
import pytest

from metric_retrieval.training.config import resolve_config
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.parsing import parse_key_values


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_then_yaml_then_flags(tmp_path):
    cfg_file = write(tmp_path, "lr: 0.5\nbatch_size: 16\nhead: cgd\ndata_path: /data/cub\n")
    cfg = resolve_config(["--config", cfg_file, "--lr", "0.25"])
    assert cfg["lr"] == 0.25  # the flag wins over the file
    assert cfg["batch_size"] == 16  # the file wins over the default
    assert cfg["head"] == "cgd"
    assert cfg["num_epochs"] == 20  # untouched default


def test_flag_equal_to_default_still_beats_yaml(tmp_path):
    cfg = resolve_config(["--config", write(tmp_path, "lr: 0.5\n"), "--lr", "1e-4"])
    assert cfg["lr"] == 1e-4


def test_boolean_flags_beat_yaml(tmp_path):
    cfg = resolve_config(["--config", write(tmp_path, "frozen_bn: false\n"), "--frozen_bn"])
    assert cfg["frozen_bn"] is True


def test_yaml_loss_list_is_kept(tmp_path):
    cfg = resolve_config(["--config", write(tmp_path, "loss:\n  - {name: ls_ce, smoothing: 0.1}\n"
                                                      "  - {name: batch_hard_triplet, margin: 0.1}\n")])
    assert cfg["loss"][1] == {"name": "batch_hard_triplet", "margin": 0.1}


def test_unknown_yaml_key_is_named(tmp_path):
    with pytest.raises(UserError, match=r"unknown keys \['learning_rate'\]"):
        resolve_config(["--config", write(tmp_path, "learning_rate: 0.1\n")])


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        resolve_config(["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_config(["--config", write(tmp_path, "a: [1,\n")])
    with pytest.raises(UserError, match="must hold a mapping"):
        resolve_config(["--config", write(tmp_path, "- 1\n- 2\n")])


def test_shipped_recipes_are_found_from_any_folder(tmp_path, monkeypatch):
    # an installed package has no configs/ folder beside the user's working directory: --config finds the
    # recipe shipped inside it, by its checkout path or without the configs/ prefix
    from metric_retrieval.training.config import PACKAGED_CONFIGS, find_config

    monkeypatch.chdir(tmp_path)
    assert find_config("configs/cgd/cars.yaml") == find_config("cgd/cars.yaml") == PACKAGED_CONFIGS / "cgd/cars.yaml"
    cfg = resolve_config(["--config", "configs/transfer/scratch.yaml", "--data_path", str(tmp_path)])
    assert (cfg["val_classes"], cfg["loss"], cfg["pretrained"]) == (0.2, "multi_similarity", "none")
    (tmp_path / "configs" / "cgd").mkdir(parents=True)
    (tmp_path / "configs" / "cgd" / "cars.yaml").write_text("lr: 0.5\n")  # a file of the user's own wins
    assert resolve_config(["--config", "configs/cgd/cars.yaml"])["lr"] == 0.5
    with pytest.raises(UserError, match=r"file not found: cgd/nope.yaml \(nor a recipe shipped with the package; "
                                        r"they are abir/base.yaml, .* 3\d in all"):
        resolve_config(["--config", "cgd/nope.yaml"])


@pytest.mark.parametrize("argv, message", [
    (["--batch_size", "30", "--samples_per_class", "4"], "multiple of --samples_per_class"),
    (["--detach"], "only apply with --das"),
    (["--aux_loss"], r"--aux_loss only applies with an embedding producer \(--das\)"),
    (["--select_on", "val"], "needs --val_classes"),
    (["--crop_type", "cropped", "--data_name", "sop", "--data_path", "x"],
     r"--crop_type cropped works only for the datasets that take it \(cars, cub\), not --data_name sop"),
    (["--crop_type", "cropped", "--data_name", "imagenet", "--data_path", "x"],
     "--data_name: unknown dataset .imagenet.; choose one of"),
    (["--data_name", "cub"], "--data_name cub needs --data_path"),
    (["--compile", "--deterministic"], "cannot be combined"),
    (["--das", "--das_dfs_scale_left", "2", "--das_dfs_scale_right", "1"], "must not exceed"),
])
def test_incompatible_combinations(argv, message):
    with pytest.raises(UserError, match=message):
        resolve_config(argv)


@pytest.mark.parametrize("alias", ["cub", "CUB_200_2011", "cub200", "cars", "stanford_cars", "CARS196"])
def test_crop_accepted_for_every_alias_of_a_dataset_with_boxes(alias):
    cfg = resolve_config(["--crop_type", "cropped", "--data_name", alias, "--data_path", "x"])
    assert cfg["crop_type"] == "cropped"


def test_key_values():
    assert parse_key_values(["a=1", "b=x", "c=0.5", "d=true"], "--x") == {"a": 1, "b": "x", "c": 0.5, "d": True}
    with pytest.raises(UserError, match="--x expects KEY=VALUE"):
        parse_key_values(["oops"], "--x")


def test_base_inheritance_and_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("lr: 0.5\nbatch_size: 16\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nbatch_size: 8\n")
    cfg = resolve_config(["--config", str(tmp_path / "child.yaml")])
    assert (cfg["lr"], cfg["batch_size"]) == (0.5, 8)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(UserError, match="includes itself"):
        resolve_config(["--config", str(tmp_path / "loop.yaml")])


def test_every_shipped_config_resolves():
    from pathlib import Path

    for path in sorted(Path("configs").rglob("*.yaml")):
        if path.name != "base.yaml":
            cfg = resolve_config(["--config", str(path), "--data_path", "/data"])
            assert cfg["backbone_type"] and cfg["head"], path


def test_quick_recipe_applies_only_to_the_builtin_data(tmp_path):
    quick = resolve_config([])
    assert quick["image_size"] == 64 and quick["data_path"] is None
    assert resolve_config(["--image_size", "96"])["image_size"] == 96
    assert resolve_config(["--data_path", str(tmp_path)])["image_size"] == 224


@pytest.mark.parametrize("text, message", [
    ("lr: abc\n", "lr must be a number, got 'abc'"),
    ("batch_size: 8.5\n", "batch_size must be an integer"),
    ("optimizer: sgdd\n", "optimizer must be one of adam, adamw, sgd"),
    ("frozen_bn: maybe\n", "frozen_bn must be true or false"),
    ("milestones: [x]\n", "milestones must be a single value"),
    ("model_option: {foo: 1}\n", "model_option must be a list of KEY=VALUE strings"),
])
def test_yaml_values_are_checked_like_flags(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        resolve_config(["--config", write(tmp_path, text)])


def test_yaml_numbers_are_converted_like_flags(tmp_path):
    cfg = resolve_config(["--config", write(tmp_path, "lr: 1e-4\nbatch_size: 16.0\n")])
    assert cfg["lr"] == 1e-4 and cfg["batch_size"] == 16 and isinstance(cfg["batch_size"], int)


@pytest.mark.parametrize("argv, message", [
    (["--recalls", "0,1"], "--recalls must list positive integers"),
    (["--samples_per_class", "0"], "--samples_per_class must be a positive integer"),
    (["--workers", "-1"], "--workers must be >= 0"),
])
def test_out_of_range_numbers(argv, message):
    with pytest.raises(UserError, match=message):
        resolve_config(argv)


def test_yaml_per_component_form_equals_the_flat_keys(tmp_path):
    nested = write(tmp_path, "head: {name: cgd, gd_config: MG, embedding_norm: false}\n"
                             "das: {num_produce: 2, dfs_scale_left: 0.99, detach: true}\n"
                             "sampler: {name: m_per_class, samples_per_class: 8}\n")
    cfg = resolve_config(["--config", nested])
    assert (cfg["head"], cfg["gd_config"], cfg["model_option"]) == ("cgd", "MG", ["embedding_norm=false"])
    assert (cfg["das"], cfg["das_num_produce"], cfg["das_dfs_scale_left"], cfg["detach"]) == (True, 2, 0.99, True)
    assert (cfg["sampler"], cfg["samples_per_class"]) == ("m_per_class", 8)
    flat = resolve_config(["--config", write(tmp_path, "head: cgd\ngd_config: MG\n"
                                             "model_option: [embedding_norm=false]\ndas: true\n"
                                             "das_num_produce: 2\ndas_dfs_scale_left: 0.99\n"
                                             "detach: true\nsampler: m_per_class\nsamples_per_class: 8\n")])
    assert {k: v for k, v in cfg.items() if k != "config"} == {k: v for k, v in flat.items() if k != "config"}
    with pytest.raises(UserError, match="das has no option 'num_copies'"):
        resolve_config(["--config", str(write(tmp_path, "das: {num_copies: 2}\n"))])


ROUND_TRIPS = [[], ["--data_path", "/data", "--optimizer", "sgd", "--loss", "batch_hard_triplet"],
               ["--transform", "strong", "--crop_scale", "0.3", "--head", "cgd", "--gd_config", "SG"],
               *(["--config", str(p), "--data_path", "/data"] for p in sorted(__import__("pathlib").Path(
                   "configs").rglob("*.yaml")) if p.name != "base.yaml")]


@pytest.mark.parametrize("argv", ROUND_TRIPS, ids=lambda a: " ".join(a)[-40:] or "defaults")
def test_a_runs_config_yaml_given_back_is_valid_and_resolves_to_the_same_run(tmp_path, argv):
    """Issue 26 item 12: config.yaml as --config is accepted (it used to be refused for crop_type, crop_scale,
    momentum... of components the run did not select) and gives every key that run reads its value."""
    from metric_retrieval.training.config import RUN_PLACE, save_config
    from metric_retrieval.training.validate import unused_keys

    cfg = resolve_config([*argv, "--output_dir", str(tmp_path / "run")])
    save_config(cfg, tmp_path / "config.yaml")
    again = resolve_config(["--config", str(tmp_path / "config.yaml")])
    read = set(cfg) - unused_keys(cfg) - set(RUN_PLACE)
    assert {k: again[k] for k in read} == {k: cfg[k] for k in read}
    saved = __import__("yaml").safe_load((tmp_path / "config.yaml").read_text())
    assert set(saved) == read
    if cfg["optimizer"] == "adam":
        assert "momentum" not in saved  # an option of sgd only
