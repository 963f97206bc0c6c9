"""metric_retrieval.models.profile (thop MACs + exact params) and the ``python -m metric_retrieval.models.profile``
table."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metric_retrieval import models

ROOT = Path(__file__).resolve().parents[2]


def test_profile_counts_and_leaves_model_untouched():
    model = models.build_model("resnet18", "clf", 1536, 98)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params, macs = models.profile(model, image_size=224)
    assert params == 12_116_544
    assert abs(macs / 1e9 - 4.29) < 0.06  # README 4.29G; newer thop counts BN/pool slightly higher
    after = model.state_dict()
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(hasattr(m, "total_ops") for m in model.modules())
    assert model.training


def test_profile_table_in_process(capsys):
    from metric_retrieval.models.profile import get_args_parser, main

    args = get_args_parser().parse_args(["--backbone_type", "resnet18", "--head", "clf", "--feature_dim", "1536",
                                         "--data_name", "cars", "--image_size", "32"])
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| Backbone | CARS196 | CUB200 | SOP | In-shop |"
    row = lines[2]
    assert row.startswith("| ResNet18 | 12.12M \\| ")
    assert "29.35M \\| " in row and "18.11M \\| " in row
    assert "12,116,544 params" in lines[3]


def test_python_m_models_profile_runs():
    done = subprocess.run([sys.executable, "-m", "metric_retrieval.models.profile", "--help"], cwd=ROOT,
    capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--backbone_type" in done.stdout
    assert "RuntimeWarning" not in done.stderr


@pytest.mark.slow
def test_python_m_models_profile_readme_row():
    """The brief's command at 224 px: the CLF README ResNet18 row (params exact, MACs within thop drift)."""
    cmd = [sys.executable, "-m", "metric_retrieval.models.profile", "--backbone_type", "resnet18", "--head", "clf",
           "--feature_dim", "1536", "--data_name", "cars"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    row = done.stdout.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[0] == "ResNet18"
    params = [c.split(" \\| ")[0] for c in cells[1:]]
    macs = [float(c.split(" \\| ")[1].rstrip("G")) for c in cells[1:]]
    assert params == ["12.12M", "12.12M", "29.35M", "18.11M"]
    assert all(abs(m - r) <= 0.05 for m, r in zip(macs, [4.29, 4.29, 4.32, 4.30]))


def test_profile_cli_reports_user_errors(capsys):
    from metric_retrieval.models.profile import get_args_parser, main

    args = get_args_parser().parse_args(["--backbone_type", "resnet18", "--head", "cgd", "--gd_config", "XX"])
    assert main(args) == 2
    assert "gd_config" in capsys.readouterr().err
    assert main(get_args_parser().parse_args(["--data_name", "mnist"])) == 2
    assert "cars, cub, sop, inshop" in capsys.readouterr().err
