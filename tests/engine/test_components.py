"""Every registered component's declared options (utils/options.py) are train.py flags, YAML keys (flat and
per-component form), range-checked and listed; a new component in a module of its own is all of that too. A model
part's constructor options (no flags) round-trip through --model_option and the YAML node, are checked at config
time and are declared with the constructor's defaults; a top-level YAML miner node is the loss terms' miner."""
from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import importlib.util
import inspect
import io
import math
from pathlib import Path

import pytest
import torch
import yaml

from metric_retrieval import optim
from metric_retrieval.training.builders import build_criterion, build_sampler, model_options
from metric_retrieval.training.checkpoint import load_model
from metric_retrieval.training.components import KINDS, Kind, component_kwargs, declared, kind
from metric_retrieval.training.config import get_args_parser, resolve_config
from metric_retrieval.training.listing import describe_components
from metric_retrieval.training.loss_terms import loss_terms, term_problems
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.options import Option, merge_options, options_of

BASE = ["--data_path", "x"]  # a data path (not read): the quick recipe for the built-in data stays off


def _flag_options() -> list[tuple[Kind, str, Option]]:
    """(kind, component, option) for every declared option that is a flag of its own."""
    return [(k, name, option) for k in KINDS if k.flags for name, component in k.registry.items()
            if ":" not in name for option in options_of(component) if option.flag]


CASES = _flag_options()
IDS = [f"{k.noun}-{name}-{option.name}" for k, name, option in CASES]


def _valid(option: Option):
    """A value inside the option's type and range, different from its default where the type allows."""
    if option.type is bool:
        return not option.default
    if option.choices is not None:
        return next(c for c in reversed(option.choices) if c != option.default)
    if option.type is int:
        return int(option.low) + 1 if option.high is None or option.low + 1 <= option.high else int(option.low)
    if option.type is float:
        if option.high is not None:
            return (option.low + option.high) / 2
        return 2 * option.default if option.default else 0.25
    return option.default if option.default is not None else "value"


def _selecting(k: Kind, name: str) -> dict:
    """The YAML keys that make component ``name`` the one used."""
    return {k.key: name} if k.key else {name: True}


def _write(tmp_path: Path, content: dict) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


@pytest.fixture(scope="module")
def help_text() -> str:
    return get_args_parser().format_help()


@pytest.mark.parametrize("k, name, option", CASES, ids=IDS)
def test_declared_option_is_in_help_and_listing(help_text, k, name, option):
    assert all(spelling in help_text for spelling in option.spellings)
    assert f"option {'/'.join(option.spellings)}: {option.describe()}" in describe_components()


@pytest.mark.parametrize("k, name, option", CASES, ids=IDS)
def test_declared_option_is_a_yaml_key_flat_and_per_component(tmp_path, k, name, option):
    value = _valid(option)
    flat = resolve_config([*BASE, "--config", _write(tmp_path, {**_selecting(k, name), option.name: value})])
    node = ({k.key: {"name": name, option.name: value}} if k.key else
            {name: {option.name.removeprefix(f"{name}_"): value}})
    nested = resolve_config([*BASE, "--config", _write(tmp_path, node)])
    assert flat[option.name] == nested[option.name] == value


@pytest.mark.parametrize("k, name, option", [c for c in CASES if c[2].low is not None or c[2].high is not None],
                         ids=[i for c, i in zip(CASES, IDS) if c[2].low is not None or c[2].high is not None])
def test_declared_range_is_enforced_for_flags_and_yaml(tmp_path, k, name, option):
    outside = option.low - 1 if option.low is not None else option.high + 1
    flag = [f"--{option.name}", str(outside)]
    with pytest.raises(UserError, match=f"--{option.name} must be"):
        resolve_config([*BASE, *flag])
    with pytest.raises(UserError, match=f"--{option.name} must be"):
        resolve_config([*BASE, "--config", _write(tmp_path, {option.name: outside})])
    if option.type is float:
        with pytest.raises(UserError, match=f"--{option.name} must be a finite number"):
            resolve_config([*BASE, f"--{option.name}", "nan"])


@pytest.mark.parametrize("k, name, option", [c for c in CASES if c[2].type is not str],
                         ids=[i for c, i in zip(CASES, IDS) if c[2].type is not str])
def test_yaml_value_of_the_wrong_type_is_refused(tmp_path, k, name, option):
    wrong = "maybe" if option.type is bool else "several"
    with pytest.raises(UserError, match=f"{option.name} must be"):
        resolve_config([*BASE, "--config", _write(tmp_path, {option.name: wrong})])


@pytest.mark.parametrize("kind_key", ["loss", "miner"])
def test_every_loss_and_miner_hyper_parameter_is_range_checked(kind_key):
    """Declared loss / miner options are checked in --loss_option and YAML terms (not flags: terms combine)."""
    k = next(k for k in KINDS if k.key == kind_key)
    checked = 0
    for name, component in k.registry.items():
        for option in options_of(component):
            if option.low is None:
                continue
            term = ({"name": name, option.name: option.low - 1} if kind_key == "loss" else
                    {"name": "triplet", "miner": {"name": name, option.name: option.low - 1}})
            problems = term_problems({"loss": [term], "miner": "none", "loss_option": []})
            assert len(problems) == 1 and f"{name} option {option.name} must be" in problems[0]
            checked += 1
    assert checked > 0


def test_a_declared_option_shared_by_several_components_is_one_flag(help_text):
    pooling = declared(next(k for k in KINDS if k.key == "head"))["pooling"]
    assert pooling[1] == ["baseline", "clf"] and help_text.count("--pooling POOLING") == 2  # usage + group
    with pytest.raises(ValueError, match="declared differently"):
        merge_options([("a", Option("x", int, 1)), ("b", Option("x", int, 2))])


# -- a new component of each kind, in one test-local module ----------------------------------------------------
PLUGIN = Path(__file__).with_name("plugin_components.py")


@pytest.fixture
def plugins(monkeypatch):
    """Import plugin_components.py; its registrations are undone afterwards."""
    for k in KINDS:
        monkeypatch.setattr(k.registry, "_entries", dict(k.registry._entries))
    spec = importlib.util.spec_from_file_location("plugin_components", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLUGIN_OPTIONS = [("backbone_type", "plugin_backbone", "plugin_width_mult", 0.5),
                  ("head", "plugin_head", "plugin_head_temperature", 0.5),
                  ("sampler", "plugin_sampler", "plugin_sampler_passes", 3),
                  ("optimizer", "plugin_sgd", "dampening", 0.5),
                  (None, "plugin_producer", "plugin_producer_noise", 0.5)]


@pytest.mark.parametrize("key, name, option, value", PLUGIN_OPTIONS, ids=[p[1] for p in PLUGIN_OPTIONS])
def test_a_plugin_components_options_reach_parser_yaml_listing_and_checks(plugins, tmp_path, key, name, option,
                                                                          value):
    assert f"--{option}" in get_args_parser().format_help()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print(describe_components())
    assert f"  {name}(" in out.getvalue() and f"option --{option}:" in out.getvalue()
    selecting = {key: name} if key else {name: True}
    cfg = resolve_config([*BASE, "--config", _write(tmp_path, {**selecting, option: value})])
    assert cfg[option] == value
    with pytest.raises(UserError, match=f"--{option} must be"):
        resolve_config([*BASE, "--config", _write(tmp_path, {**selecting, option: -1})])


def test_a_plugin_optimizer_and_sampler_are_built_with_their_declared_options(plugins, tmp_path):
    cfg = resolve_config([*BASE, "--optimizer", "plugin_sgd", "--dampening", "0.25",
                          "--sampler", "plugin_sampler", "--plugin_sampler_passes", "2"])
    assert component_kwargs("optimizer", cfg) == {"dampening": 0.25}
    assert component_kwargs("sampler", cfg) == {"passes": 2}
    param = torch.nn.Parameter(torch.zeros(2))
    opt = optim.OPTIMIZERS.get(cfg["optimizer"])([{"params": [param]}], lr=0.1, **component_kwargs("optimizer", cfg))
    assert opt.param_groups[0]["dampening"] == 0.25
    assert build_sampler(cfg, torch.arange(64) % 8, rank=0, world_size=1).passes == 2


def test_a_plugin_loss_and_miner_options_are_listed_and_checked(plugins):
    listing = describe_components()
    assert "  plugin_loss(scale: float = 1.0)" in listing and "  plugin_miner(keep: int = 32)" in listing
    cfg = {"loss": "plugin_loss", "miner": "none", "loss_option": ["plugin_loss.scale=0"]}
    assert term_problems(cfg) == ["loss plugin_loss option scale must be in (0, inf), got 0"]
    cfg = {"loss": [{"name": "plugin_loss", "miner": {"name": "plugin_miner", "keep": 0}}], "miner": "none"}
    assert term_problems(cfg) == ["miner plugin_miner option keep must be a positive integer, got 0"]


# -- the plug-ins work: exact values against brute force, then one run of train.py with every plug-in at once --------
def test_the_plugin_miner_keeps_the_hardest_triplets(plugins):
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 0.5]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    a, p, n = plugins.PluginMiner(keep=3)(emb, labels)
    d = lambda i, j: float((emb[i] - emb[j]).norm())  # noqa: E731
    triplets = [(i, j, k) for i in range(5) for j in range(5) for k in range(5)
                if i != j and labels[i] == labels[j] and labels[k] != labels[i]]
    expected = sorted(triplets, key=lambda t: d(t[0], t[1]) - d(t[0], t[2]), reverse=True)[:3]
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == expected == [(4, 3, 0), (4, 3, 1), (4, 3, 2)]


def test_the_plugin_loss_is_the_soft_margin_triplet_loss(plugins):
    emb = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    # triplets (0, 1, 2): softplus(2 · (5 − 1)); (1, 0, 2): d(1, 2) = sqrt(9 + 9): softplus(2 · (5 − sqrt 18))
    expected = (math.log1p(math.exp(8.0)) + math.log1p(math.exp(2 * (5 - math.sqrt(18))))) / 2
    loss = plugins.PluginLoss(scale=2.0)(emb, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    only_first = plugins.PluginLoss(scale=2.0)(emb, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    assert only_first.item() == pytest.approx(math.log1p(math.exp(8.0)), rel=1e-6)


def test_the_plugin_sampler_makes_each_pass_a_permutation(plugins):
    sampler = plugins.PluginSampler(torch.arange(12) % 3, batch_size=4, seed=1, passes=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 9 and all(len(b) == 4 for b in batches)
    flat = [i for b in batches for i in b]
    assert all(sorted(flat[k * 12:(k + 1) * 12]) == list(range(12)) for k in range(3))


def test_the_plugin_reader_reads_its_own_synthetic_layout(plugins, tmp_path):
    from metric_retrieval import data

    root = data.write_synthetic("plugin_data", tmp_path / "d", image_size=(16, 16), num_classes=6)
    train, test = (data.build_dataset("plugin_data", root, split) for split in ("train", "test"))
    assert (len(train), train.num_classes, len(test), test.num_classes) == (12, 3, 12, 3)  # 4 images per class
    assert train[0][0].size == (16, 16) and data.get_benchmark("plugin_data", root).protocol == "leave_one_out"


def test_the_plugin_backbone_and_head_compute_cosine_logits(plugins):
    from metric_retrieval import models

    model = models.build_model("plugin_backbone", "plugin_head", feature_dim=6, num_classes=3, plugin_width_mult=0.5,
                               temperature=0.5)
    assert model.backbone.num_features == 8
    model.eval()
    images = torch.randn(2, 3, 16, 16)
    embedding, logits = model(images)
    pooled = model.backbone(images).mean(dim=(2, 3))
    e = model.head.fc(pooled)
    torch.testing.assert_close(embedding, e / e.norm(dim=1, keepdim=True))
    w = model.head.classes / model.head.classes.norm(dim=1, keepdim=True)
    torch.testing.assert_close(logits, embedding @ w.t() / 0.5)
    with pytest.raises(UserError, match="no pretrained weights"):
        models.build_model("plugin_backbone", "plugin_head", pretrained="imagenet")


def test_every_plugin_trains_end_to_end_through_train_py(plugins, tmp_path):
    """The data, backbone, head, loss, miner, sampler, producer and optimiser of the plug-in module, together."""
    import train as train_cli
    from metric_retrieval import data

    root = data.write_synthetic("plugin_data", tmp_path / "data", image_size=(32, 32), images_per_class=6)
    (root / "split.csv").rename(root / "listing.csv")  # found only through the reader's own option
    out = tmp_path / "run"
    config = _write(tmp_path, {"miner": {"name": "plugin_miner", "keep": 16}, "head": {"name": "plugin_head",
                                                                                     "plugin_head_temperature": 0.2}})
    plugins.PluginProducer.produced_rows = 0
    argv = ["--config", config, "--data_name", "plugin_data", "--data_path", str(root), "--pretrained", "none",
            "--backbone_type", "plugin_backbone", "--plugin_width_mult", "0.5", "--feature_dim", "16",
            "--loss", "plugin_loss", "--loss_option", "plugin_loss.scale=2", "--sampler", "plugin_sampler",
            "--plugin_sampler_passes", "2", "--plugin_producer", "--plugin_producer_noise", "0.05",
            "--optimizer", "plugin_sgd", "--dampening", "0.1", "--lr", "0.01", "--batch_size", "8",
            "--plugin_data_listing", "listing.csv",
            "--num_epochs", "2", "--image_size", "32", "--workers", "0", "--amp", "off", "--no_tensorboard",
            "--output_dir", str(out)]
    assert train_cli.main(argv) == 0
    # 4 training classes x 6 images, two passes of batches of 8: 6 steps an epoch, each producing 8 noisy rows
    assert plugins.PluginProducer.produced_rows == 2 * 6 * 8
    rows = list(csv.DictReader((out / "statistics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["loss"])) and 0 <= float(r["test_recall@1"]) <= 1 for r in rows)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    criterion = build_criterion(cfg, num_classes=4, class_counts=torch.full((4,), 6))
    assert isinstance(criterion.miners[0], plugins.PluginMiner) and criterion.miners[0].keep == 16
    assert isinstance(criterion.losses[0], plugins.PluginLoss) and criterion.losses[0].scale == 2
    import test as test_cli

    assert test_cli.main(["--eval", "--checkpoint", str(out / "model_best.pth"), "--data_name", "plugin_data",
                          "--data_path", str(root), "--workers", "0"]) == 0  # the run's reader option again
    model, _ = load_model(out / "model_best.pth")  # rebuilt from the plug-ins' registrations alone
    assert isinstance(model.backbone, plugins.PluginNet) and model.backbone.num_features == 8
    assert isinstance(model.head, plugins.PluginHead) and model.head.temperature == 0.2


LOSS_CASES = [(name, option) for name, component in next(k for k in KINDS if k.key == "loss").registry.items()
              for option in options_of(component) if option.low is not None]


@pytest.mark.parametrize("name, option", LOSS_CASES, ids=[f"{n}-{o.name}" for n, o in LOSS_CASES])
def test_a_loss_option_in_a_yaml_loss_node_is_kept_and_range_checked(tmp_path, name, option):
    value = _valid(option)
    cfg = resolve_config([*BASE, "--config", _write(tmp_path, {"loss": {"name": name, option.name: value}})])
    assert cfg["loss"] == [{"name": name, option.name: value}]
    with pytest.raises(UserError, match=f"loss {name} option {option.name} must be"):
        resolve_config([*BASE, "--config", _write(tmp_path, {"loss": {"name": name, option.name: option.low - 1}})])
    with pytest.raises(UserError, match=f"loss {name} option {option.name} must be"):
        resolve_config([*BASE, "--loss", name, "--loss_option", f"{name}.{option.name}=oops"])


# -- the model parts' constructor options (flag=False): --model_option and the YAML node, checked at config time ---
MODEL_KINDS = [kind("backbone_type"), kind("head")]
PARTNER = {"backbone_type": ("head", "baseline"), "head": ("backbone_type", "resnet18")}
TIMM = "timm:vit_tiny_patch16_224"  # a family member standing for the timm family (nothing is downloaded)


def _concrete(name: str) -> str:
    return TIMM if name == "timm:<name>" else name


MODEL_CASES = [(k, _concrete(name), option) for k in MODEL_KINDS for name, component in k.registry.items()
               for option in options_of(component) if not option.flag]
MODEL_IDS = [f"{k.noun}-{name}-{option.name}" for k, name, option in MODEL_CASES]


def _model_value(option: Option):
    """A valid value different from the default (a bool option's default may be None: the builder decides)."""
    if option.type is bool:
        return not option.default if option.default is not None else True
    if option.type is float and option.default is None:
        return (option.low + option.high) / 2 if option.high is not None else 0.5
    if option.type is int and option.default is not None and option.choices is None:
        return option.default + 1
    return _valid(option)


def _pair(k: Kind, name: str) -> list[str]:
    other, partner = PARTNER[k.key]
    return [f"--{k.key}", name, f"--{other}", partner]


@pytest.mark.parametrize("k, name, option", MODEL_CASES, ids=MODEL_IDS)
def test_a_model_option_round_trips_through_model_option_and_the_yaml_node(tmp_path, k, name, option):
    value = _model_value(option)
    flag = resolve_config([*BASE, *_pair(k, name), "--model_option", f"{option.kwarg}={yaml.safe_dump(value)}"])
    other, partner = PARTNER[k.key]
    nested = resolve_config([*BASE, "--config", _write(tmp_path, {k.key: {"name": name, option.name: value},
                                                                  other: partner})])
    assert model_options(flag)[option.kwarg] == model_options(nested)[option.kwarg] == value
    assert f"--{option.name}" not in get_args_parser().format_help()  # no flag of its own


def _bad_values(option: Option) -> list:
    bad = [] if option.type is str else ["several"]
    if option.choices is not None:
        bad.append("no_such_choice")
    if option.low is not None:
        bad.append(option.low - 1)
    if option.high is not None:
        bad.append(option.high + 1)
    return bad


BAD_CASES = [(k, name, option, bad) for k, name, option in MODEL_CASES for bad in _bad_values(option)]


@pytest.mark.parametrize("k, name, option, bad", BAD_CASES,
                         ids=[f"{k.noun}-{name}-{option.name}-{bad}" for k, name, option, bad in BAD_CASES])
def test_a_bad_model_option_value_is_refused_at_config_time(tmp_path, k, name, option, bad):
    with pytest.raises(UserError, match=f"--model_option {option.kwarg} must be"):
        resolve_config([*BASE, *_pair(k, name), "--model_option", f"{option.kwarg}={bad}"])
    other, partner = PARTNER[k.key]
    with pytest.raises(UserError, match=f"{k.key} {name} option {option.name} must be"):
        resolve_config([*BASE, "--config", _write(tmp_path, {k.key: {"name": name, option.name: bad},
                                                             other: partner})])


@pytest.mark.parametrize("k, name", [(k, _concrete(n)) for k in MODEL_KINDS for n, _ in k.registry.items()],
                         ids=[f"{k.noun}-{n}" for k in MODEL_KINDS for n, _ in k.registry.items()])
def test_an_undeclared_model_option_is_refused_listing_the_valid_ones(tmp_path, k, name):
    with pytest.raises(UserError, match="takes no option 'no_such_option'; valid options: ") as err:
        resolve_config([*BASE, *_pair(k, name), "--model_option", "no_such_option=1"])
    assert all(o.kwarg in str(err.value) for o in options_of(k.registry.get(name)) if o.to_builder)
    with pytest.raises(UserError, match=f"{k.key} {name} has no option 'no_such_option'; its options: "):
        resolve_config([*BASE, "--config", _write(tmp_path, {k.key: {"name": name, "no_such_option": 1}})])


def _builder_parameters(k: Kind, builder) -> dict[str, inspect.Parameter]:
    """The builder's keyword parameters a user sets (not the ones the framework fills in)."""
    fn = builder.func if isinstance(builder, functools.partial) else builder
    return {p.name: p for p in inspect.signature(fn).parameters.values()
            if p.name not in ("self", *k.skip) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@pytest.mark.parametrize("k, name", [(k, n) for k in MODEL_KINDS for n, _ in k.registry.items()],
                         ids=[f"{k.noun}-{n}" for k in MODEL_KINDS for n, _ in k.registry.items()])
def test_every_constructor_option_is_declared_with_the_constructors_default(k, name):
    builder = k.registry.get(_concrete(name))
    parameters = _builder_parameters(k, builder)
    declared_here = {o.kwarg: o for o in options_of(builder) if o.to_builder}
    assert sorted(parameters) == sorted(declared_here), "declare every constructor option (utils.options)"
    for kwarg, option in declared_here.items():
        # a flag's None leaves the constructor's default (several heads share one flag with their own defaults)
        expected = None if option.flag else parameters[kwarg].default
        assert option.default == expected, f"{name}.{kwarg}: declared {option.default!r}, constructor {expected!r}"


@pytest.mark.parametrize("name", [n for n, _ in kind("head").registry.items()])
def test_declared_head_options_reach_the_constructor(name):
    head_cls = kind("head").registry.get(name)
    options = {o.kwarg: _model_value(o) for o in options_of(head_cls) if not o.flag}
    in_channels = [8, 16] if head_cls.uses_intermediates else 16
    head = head_cls(in_channels=in_channels, **options)
    assert head.embedding_norm == options["embedding_norm"]
    embedding, _ = head([torch.randn(2, c, 4, 4) for c in in_channels] if head_cls.uses_intermediates
                        else torch.randn(2, 16, 4, 4))
    assert embedding.shape[0] == 2 and torch.isfinite(embedding).all()


# -- a top-level miner node ------------------------------------------------------------------------------------
MINER_CASES = [(name, option) for name, component in kind("miner").registry.items()
               for option in options_of(component) if option.low is not None]


@pytest.mark.parametrize("name, option", MINER_CASES, ids=[f"{n}-{o.name}" for n, o in MINER_CASES])
def test_a_top_level_yaml_miner_node_is_the_loss_terms_miner_and_is_checked(tmp_path, name, option):
    node = {"name": name, option.name: _valid(option)}
    cfg = resolve_config([*BASE, "--loss", "triplet+ls_ce", "--config", _write(tmp_path, {"miner": node})])
    assert [t.get("miner") for t in loss_terms(cfg)] == [node, None]  # ls_ce reads logits: no miner
    with pytest.raises(UserError, match=f"miner {name} option {option.name} must be"):
        resolve_config([*BASE, "--config", _write(tmp_path, {"miner": {**node, option.name: option.low - 1}})])
    with pytest.raises(UserError, match=f"miner {name} has no option 'no_such_option'; its options: ") as err:
        resolve_config([*BASE, "--config", _write(tmp_path, {"miner": {**node, "no_such_option": 1}})])
    assert option.name in str(err.value)


def test_a_top_level_miner_node_builds_the_miner_with_its_options(tmp_path):
    cfg = resolve_config([*BASE, "--loss", "triplet", "--config",
                          _write(tmp_path, {"miner": {"name": "semihard", "margin": 0.05}})])
    criterion = build_criterion(cfg, num_classes=4, class_counts=torch.ones(4))
    assert [m.margin for m in criterion.miners] == [0.05]


def test_preset_options_are_refused_for_a_preset_without_them():
    with pytest.raises(UserError, match="--hflip False works only for the augmentation presets that take it"):
        resolve_config([*BASE, "--transform", "cgd", "--no-hflip"])
    assert resolve_config([*BASE, "--transform", "strong", "--no-hflip", "--crop_scale", "0.5"])["hflip"] is False


# -- what an Option can declare beyond one bounded number -------------------------------------------------------
@pytest.mark.parametrize("option, value, message", [
    (Option("n", int, 0, low=0), -1, "--n must be >= 0, got -1"),
    (Option("n", int, 1, low=1), 0, "--n must be a positive integer, got 0"),
    (Option("f", float, 0.0, low=0.0, high=1.0, high_ok=False, expected="a fraction"), float("nan"),
     "--f must be a fraction in [0, 1), got nan"),
    (Option("f", float, 0.0, low=0.0, high=1.0, high_ok=False, expected="a fraction"), 1.0,
     "--f must be a fraction in [0, 1), got 1"),
    (Option("ks", str, None, item=int, low=1, expected="positive integers"), "1,0", "--ks must list positive "
     "integers, got '1,0'"),
    (Option("ks", str, None, item=int, low=1, expected="positive integers"), "1,x", "--ks must list positive "
     "integers, got '1,x'"),
    (Option("s", str, "1", item=float, low=0.0, low_ok=False), "", "--s must list comma-separated float values in "
     "range, got ''"),
    (Option("s", str, "1", item=float, low=0.0, low_ok=False), "1,inf", "--s must list comma-separated float "
     "values in range, got '1,inf'"),
])
def test_an_option_names_what_was_expected(option, value, message):
    assert option.problem(value) == message


def test_item_lists_within_range_and_repeatable_options_are_accepted():
    assert Option("ks", str, None, item=int, low=1).problem("1, 2,4") is None
    assert Option("ks", str, None, item=int, low=1).problem(None) is None
    parser = argparse.ArgumentParser()
    Option("kv", list, (), "repeatable, 100% of them", metavar="KEY=VALUE").add_to(parser.add_argument_group("g"))
    assert parser.parse_args(["--kv", "a=1", "--kv", "b=2"]).kv == ["a=1", "b=2"]
    assert parser.parse_args([]).kv == [] and "100% of them" in parser.format_help()
