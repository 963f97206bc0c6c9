"""A careless user's mistakes are refused by the config layer before any data is read or model built."""
import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metric_retrieval.training.config import get_args_parser, resolve_config
from metric_retrieval.training.validate import check_splits, default_run_dir, split_sizes
from metric_retrieval.utils.errors import UserError

REPO = Path(__file__).resolve().parents[2]
# never read: every check here runs before loading; --pretrained none: the parser defaults, no transfer recipe
DATA = ["--data_path", "/nowhere", "--data_name", "cub", "--pretrained", "none"]


@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--lr", "-0.01"], r"--lr must be in \(0, 10\], got -0.01"),
    (["--lr", "0"], r"--lr must be in \(0, 10\], got 0"),
    (["--lr", "1e30"], r"--lr must be in \(0, 10\], got 1e\+30"),
    (["--momentum", "1.5", "--optimizer", "sgd"], r"--momentum must be in \[0, 1\), got 1.5"),
    (["--weight_decay", "-1"], r"--weight_decay must be in \[0, inf\)"),
    (["--gamma", "0"], r"--gamma must be in \(0, inf\)"),
    (["--grad_clip", "inf"], "--grad_clip must be a finite number"),
    (["--val_classes", "nan"], r"--val_classes must be a fraction in \[0, 1\), got nan"),
    (["--warmup_epochs", "30"], "--warmup_epochs 30 exceeds --num_epochs 20"),
    (["--das", "--das_num_produce", "0"], "--das_num_produce must be a positive integer"),
    (["--eval_chunk_size", "0"], "--eval_chunk_size must be a positive integer"),
    (["--image_size", "0"], "--image_size must be a positive integer"),
    (["--stage3_stride", "3"], r"--stage3_stride must be in \[1, 2\], got 3"),
])
def test_absurd_numbers_are_refused(argv, message):
    with pytest.raises(UserError, match=message):
        resolve_config([*DATA, *argv])


@pytest.mark.parametrize("text, message", [
    ("lr: .inf\n", "--lr must be a finite number, got inf"),
    ("lr: -0.01\n", r"--lr must be in \(0, 10\]"),
    ("lr: nan\n", "--lr must be a finite number"),
    ("milestones: '30'\nnum_epochs: 1\n", "epoch 30 is not before the end of --num_epochs 1"),
])
def test_yaml_values_get_the_same_checks(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        resolve_config([*DATA, "--config", str(path)])


def test_every_problem_is_listed_at_once():
    with pytest.raises(UserError) as err:
        resolve_config([*DATA, "--lr", "-1", "--gamma", "inf", "--backbone_type", "resnet19"])
    text = str(err.value)
    assert "--lr" in text and "--gamma" in text and "unknown backbone 'resnet19'" in text


@pytest.mark.parametrize("argv, message", [
    (["--milestones", "30", "--num_epochs", "1"], "epoch 30 is not before the end of --num_epochs 1"),
    (["--milestones", "20", "--num_epochs", "20"], "epoch 20 is not before the end"),
    (["--milestones", "-0.5"], "--milestones must list positive numbers"),
])
def test_milestones_that_never_apply(argv, message):
    with pytest.raises(UserError, match=message):
        resolve_config([*DATA, *argv])


def test_milestones_given_to_another_scheduler_are_refused_as_unused_not_as_out_of_range():
    with pytest.raises(UserError) as err:
        resolve_config([*DATA, "--milestones", "30", "--num_epochs", "1", "--scheduler", "cosine"])
    assert str(err.value).splitlines()[1:] == [
        "  --milestones 30 works only for the learning-rate schedules that take it (multistep), not --scheduler "
        "cosine; drop it or choose one of those"]


@pytest.mark.parametrize("argv, flag, users, selection", [
    (["--optimizer", "adam", "--momentum", "0.5"], "--momentum 0.5", "optimisers that take it (sgd)",
     "--optimizer adam"),
    (["--sampler", "random", "--samples_per_class", "4"], "--samples_per_class 4",
     "batch samplers that take it (class_random, identity, m_per_class)", "--sampler random"),
    (["--backbone_type", "vgg16", "--stage3_stride", "1"], "--stage3_stride 1", "backbones that take it",
     "--backbone_type vgg16"),
    (["--head", "gem", "--pooling", "max"], "--pooling max", "heads that take it (baseline, clf)", "--head gem"),
])
def test_a_given_option_that_no_selected_component_takes_is_refused(argv, flag, users, selection):
    with pytest.raises(UserError, match=f"{re.escape(flag)} works only for the {re.escape(users)}.*, not "
                                        f"{re.escape(selection)}; drop it"):
        resolve_config([*DATA, *argv])


def test_an_option_taken_by_the_selected_component_or_left_at_its_default_is_accepted(tmp_path):
    assert resolve_config([*DATA, "--optimizer", "sgd", "--momentum", "0.5"])["momentum"] == 0.5
    assert resolve_config([*DATA, "--optimizer", "adam", "--weight_decay", "0.01"])["weight_decay"] == 0.01
    cfg = resolve_config([*DATA, "--optimizer", "adam"])  # --momentum keeps its default, unused and unsaid
    assert cfg["optimizer"] == "adam" and "momentum" in cfg
    config = tmp_path / "run.yaml"
    config.write_text("optimizer: adam\nmomentum: 0.5\n")  # a YAML key is given as much as a flag is
    with pytest.raises(UserError, match="--momentum 0.5 works only for the optimisers"):
        resolve_config([*DATA, "--config", str(config)])


@pytest.mark.parametrize("flag, value, kind", [
    ("--backbone_type", "resnet19", "backbone"), ("--head", "cdg", "head"), ("--loss", "triplet+tripletz", "loss"),
    ("--miner", "semi-hard", "miner"), ("--sampler", "m_per_clas", "batch sampler"),
    ("--transform", "cgdd", "transform preset"), ("--data_name", "cub201", "dataset"),
])
def test_unknown_component_names_before_loading(flag, value, kind):
    with pytest.raises(UserError, match=f"{flag}: unknown {kind} '{value.split('+')[-1]}'; choose one of"):
        resolve_config([*DATA, flag, value])


@pytest.mark.parametrize("metric, hint", [("recall@3x", ""), ("Recall@1", "did you mean 'recall@1'"),
                                          ("MAP@R", "did you mean 'map@r'"), ("accuracy", "")])
def test_select_metric_must_be_a_metric_name(metric, hint):
    with pytest.raises(UserError, match="--select_metric") as err:
        resolve_config([*DATA, "--select_metric", metric])
    assert hint in str(err.value)


def test_explicit_miner_with_losses_that_take_none():
    with pytest.raises(UserError, match="--miner semihard: no loss in --loss proxy_anchor takes a miner"):
        resolve_config([*DATA, "--loss", "proxy_anchor", "--miner", "semihard"])
    # the default miner is not the user's choice, and a loss that takes one uses it
    assert resolve_config([*DATA, "--loss", "proxy_anchor"])["miner"] == "semihard"
    assert resolve_config([*DATA, "--loss", "ls_ce+triplet", "--miner", "distance"])


def test_explicit_miner_in_yaml_counts(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss: ls_ce\nminer: semihard\n")
    with pytest.raises(UserError, match="no loss in --loss ls_ce takes a miner"):
        resolve_config([*DATA, "--config", str(path)])


def test_das_needs_an_embedding_loss():
    with pytest.raises(UserError, match="--das generates embeddings for embedding losses"):
        resolve_config([*DATA, "--das", "--loss", "ls_ce", "--miner", "none"])
    assert resolve_config([*DATA, "--das", "--loss", "ls_ce+triplet"])["das"]


# ---- run folders -------------------------------------------------------------------------------------------

def finished_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("model_best.pth", "database_best.pth", "checkpoint_latest.pth", "config.yaml", "train.log"):
        (folder / name).write_bytes(b"result")
    return folder


def test_a_folder_holding_a_run_is_refused(tmp_path):
    run = finished_run(tmp_path / "run")
    with pytest.raises(UserError, match="already holds a run .*--resume latest.*--overwrite"):
        resolve_config([*DATA, "--output_dir", str(run)])
    assert (run / "model_best.pth").read_bytes() == b"result"
    assert resolve_config([*DATA, "--output_dir", str(run), "--overwrite"])["output_dir"] == str(run)
    assert resolve_config([*DATA, "--output_dir", str(run), "--resume", "latest"])["output_dir"] == str(run)


def test_any_foreign_file_counts_but_a_failed_start_does_not(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"jpg")
    with pytest.raises(UserError, match=r"already holds a run \(holiday.jpg\)"):
        resolve_config([*DATA, "--output_dir", str(tmp_path / "photos")])
    failed = tmp_path / "failed"  # what a run that stopped at its start leaves: its records, no result
    failed.mkdir()
    (failed / "train.log").write_text("ERROR stopped: ...")
    (failed / "config.yaml").write_text("lr: 1\n")
    assert resolve_config([*DATA, "--output_dir", str(failed)])["output_dir"] == str(failed)


def test_default_run_folders_are_new_and_numbered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = Path(resolve_config([*DATA])["output_dir"])
    assert first.parent == Path("runs") and first.name.endswith("-resnet18-baseline")
    first.mkdir(parents=True)
    second = default_run_dir({"backbone_type": "resnet18", "head": "baseline"})
    assert second != first and not second.exists()
    assert not any(p.name.startswith("default") for p in Path("runs").iterdir())


def test_resume_latest_needs_a_folder():
    with pytest.raises(UserError, match="--resume latest needs --output_dir"):
        resolve_config([*DATA, "--resume", "latest"])


def test_output_dir_that_is_a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(UserError, match="is a file, not a folder"):
        resolve_config([*DATA, "--output_dir", str(path)])
    with pytest.raises(UserError, match="cannot write in"):
        resolve_config([*DATA, "--output_dir", str(path / "run")])
    assert path.read_text() == "keep me"


def without_permission_override() -> list[str]:
    """The launcher under which a process obeys folder permissions: none for a normal user; as root (which
    ignores them through CAP_DAC_OVERRIDE), ``setpriv`` dropping that capability and CAP_DAC_READ_SEARCH from
    the bounding set, so the process stays root (and can read the root-owned venv) but no longer writes
    into a folder without a write bit."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, which writes into read-only folders, and setpriv (util-linux) is not "
                    "installed to drop CAP_DAC_OVERRIDE")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


# resolve_config on each --output_dir given, in a process that obeys folder permissions (one import of torch)
RESOLVE_EACH = """import sys
from metric_retrieval.training.config import resolve_config
from metric_retrieval.utils.errors import UserError
for out in sys.argv[1:]:
    try:
        resolve_config([{data}, "--output_dir", out])
        print("accepted", out)
    except UserError as err:
        print(err)
""".format(data=", ".join(map(repr, DATA)))


def test_read_only_output_dir(tmp_path):
    launcher = without_permission_override()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    targets = [locked / "run", locked]  # a new run in a read-only folder; an existing read-only run folder
    try:
        result = subprocess.run([*launcher, sys.executable, "-c", RESOLVE_EACH, *map(str, targets)], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o700)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"--output_dir {out}: cannot write in {locked} (permission denied or not a "
                                          "folder)" for out in targets]
    assert list(locked.iterdir()) == []


# ---- degenerate data (labels only: no image is read) -----------------------------------------------------

class Labels:
    def __init__(self, labels):
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.num_classes = len(torch.unique(self.labels))

    def __len__(self):
        return len(self.labels)


CFG = {"select_metric": "recall@1", "val_classes": 0.0, "samples_per_class": 4, "sampler": "m_per_class"}


def splits(train, test=None, query=None, gallery=None, val=None):
    evals = {"test": Labels(test)} if test is not None else {"query": Labels(query), "gallery": Labels(gallery)}
    return {"train": Labels(train), "test": evals, "val": None if val is None else Labels(val)}


@pytest.mark.parametrize("data, message", [
    (splits([0] * 8, test=[0, 0, 1, 1]), "the training split has 1 class"),
    (splits([0, 0, 1, 1] * 2, test=[0, 1, 2, 3]), "every class of the test split has a single image"),
    (splits([0, 0, 1, 1] * 2, test=[]), "the test split has no images"),
    (splits([0, 0, 1, 1] * 2, query=[0, 1], gallery=[2, 3]), "no query class appears in the gallery"),
    (splits([0, 0, 1, 1] * 2, test=[0, 0], val=[5, 5]), "holds out 1 class"),
])
def test_degenerate_data_is_refused(data, message):
    with pytest.raises(UserError, match=message):
        check_splits({**CFG, "val_classes": 0.01}, data, [1])


def test_select_metric_k_must_be_computed():
    with pytest.raises(UserError, match=r"--select_metric recall@3 is not computed: --recalls gives K = \[1, 2\]"):
        check_splits({**CFG, "select_metric": "recall@3"}, splits([0, 0, 1, 1], test=[0, 0]), [1, 2])


def test_small_classes_warn_and_split_sizes_are_printed():
    data = splits([0, 0, 1, 1, 1, 1, 2, 2], test=[0, 0, 1], val=[3, 3, 4, 4])
    warnings = check_splits(CFG, data, [1])
    assert warnings == ["--samples_per_class 4: 2 of 3 training classes have fewer images (smallest 2); "
                        "their batches hold fewer positives than asked"]
    assert split_sizes(data) == ("train 8 images / 3 classes, val 4 images / 2 classes, "
                                 "test 3 images / 2 classes")


# -- the generic flags: one declaration (training/flags.py) gives the parser, the checks and the listing ---------
from metric_retrieval.training.flags import TEST_OPTIONS, train_flag_groups  # noqa: E402
from metric_retrieval.training.listing import describe_components  # noqa: E402
from metric_retrieval.training.validate import check_test_args  # noqa: E402
from metric_retrieval.utils.options import Option  # noqa: E402
from tests.e2e.cli import test_cli  # noqa: E402

GENERIC = [option for _, options in train_flag_groups() for option in options]
BOUNDED = [o for o in GENERIC if o.low is not None]


def _below(option: Option) -> str:
    """A command-line value just outside the option's lower bound (a list option: one bad item)."""
    value = option.low - 1 if option.low_ok else option.low
    return f"1,{value:g}" if option.item is not None else f"{value:g}"


@pytest.mark.parametrize("option", BOUNDED, ids=[o.name for o in BOUNDED])
def test_every_bounded_generic_flag_is_checked_from_its_declaration(tmp_path, option):
    bad = _below(option)
    expected = option.problem(bad if option.item is not None else option.type(bad))
    with pytest.raises(UserError) as err:
        resolve_config([*DATA, f"--{option.name}", bad])
    path = tmp_path / "run.yaml"
    path.write_text(f"{option.name}: {bad if option.item is None else repr(bad)}\n")
    with pytest.raises(UserError) as from_yaml:
        resolve_config([*DATA, "--config", str(path)])
    # the very sentence of the declaration, from the flag and the YAML key
    assert expected in str(err.value) and expected in str(from_yaml.value)


def test_generic_flags_are_parsed_listed_and_defaulted_as_declared():
    parser_defaults = vars(get_args_parser().parse_args([]))
    listing = describe_components()
    for option in GENERIC:
        assert parser_defaults[option.name] == (list(option.default) if option.type is list else option.default)
        assert f"option {'/'.join(option.spellings)}: {option.describe()}" in listing


def _test_args(**changes) -> argparse.Namespace:
    args = test_cli.get_args_parser().parse_args([])
    for key, value in changes.items():
        setattr(args, key, value)
    return args


@pytest.mark.parametrize("option", [o for o in TEST_OPTIONS if o.low is not None],
                         ids=[o.name for o in TEST_OPTIONS if o.low is not None])
def test_test_py_numbers_are_checked_from_the_same_declarations(option):
    bad = _below(option)
    value = bad if option.item is not None else option.type(bad)
    assert test_cli.get_args_parser().get_default(option.name) == option.default
    with pytest.raises(UserError) as err:
        check_test_args(_test_args(**{option.name: value}))
    assert option.problem(value) in str(err.value)
