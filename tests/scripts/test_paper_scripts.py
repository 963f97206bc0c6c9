"""Every paper-table script: --dry-run prints the papers' settings; --smoke runs every row on synthetic data."""
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ["cgd", "clf", "abir", "das_table1", "das_table2", "regional_attention", "vit"]
# Rows per script (the scripts' loops): a change in the table is a change in this test.
ROWS = {"cgd": 12, "clf": 18, "abir": 8, "das_table1": 6, "das_table2": 42, "regional_attention": 4, "vit": 10}
# Every row trains a ResNet-50 / VGG16 / ResNet-101 for two steps: minutes per script on 2 cores, so all of
# them are slow; test_tables_smoke.py checks the smoke machinery itself by default.


def bash(*args):
    return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_every_row_with_its_settings(script):
    result = bash(f"scripts/{script}.sh", "/data", "--dry-run")
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("python ")]
    assert len(commands) == ROWS[script]
    assert all("/data/" in c for c in commands)


def test_dry_run_shows_the_papers_hyper_parameters():
    out = bash("scripts/cgd.sh", "/data", "--dry-run").stdout
    assert "gd_config=SG" in out and "gd_config=MG" in out and "feature_dim=1536" in out and "lr=0.0001" in out
    assert "milestones=12,16" in out and "batch_size=128" in out and "samples_per_class=4" in out
    out = bash("scripts/das_table2.sh", "/data", "--dry-run").stdout
    assert "das_dfs_scale_left=0.99" in out and "das_mts_scale=0.1" in out and "lr=1e-05" in out
    assert "weight_decay=0.0004" in out and "gamma=0.3" in out and "batch_size=112" in out
    out = bash("scripts/das_table1.sh", "/data", "--dry-run").stdout
    cars_lines = [line for line in out.splitlines() if line.startswith("python") and "cars" in line]
    assert all("--data_name cars" in line for line in cars_lines)  # the original's cub200 slip is fixed


def test_missing_data_root_is_a_usage_error():
    result = bash("scripts/cgd.sh")
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_runs_every_row(script):
    result = bash(f"scripts/{script}.sh", "--smoke")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"{ROWS[script]} passed, 0 failed" in result.stdout
