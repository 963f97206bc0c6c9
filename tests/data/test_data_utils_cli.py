"""``data_utils.py``: check (text and --json), prepare round trip, synth, user errors → exit code 2."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

import data
import data_utils

REPO = Path(__file__).resolve().parents[2]


def run_main(argv: list[str]) -> int:
    return data_utils.main(data_utils.get_args_parser().parse_args(argv))


def test_check_json(synth_root, capsys):
    assert run_main(["check", "--data_name", "in-shop", "--data_path", str(synth_root("inshop")), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "inshop" and report["protocol"] == "query_gallery"
    assert report["splits"] == {"train": {"images": 120, "classes": 30}, "query": {"images": 60, "classes": 30},
                                "gallery": {"images": 60, "classes": 30}}
    assert report["warnings"] == []


def test_check_text_reports_landmark_queries_and_warnings(synth_root, capsys):
    assert run_main(["check", "--data_name", "paris6k", "--data_path", str(synth_root("paris6k"))]) == 0
    out, err = capsys.readouterr()
    assert "query" in out and "55 images" in out and "database" in out
    assert "warning: excluded 2 known-corrupt paris6k image(s)" in err


def test_check_json_warns_on_non_standard_counts(synth_copy, capsys):
    root = synth_copy("cub")
    (root / data.SYNTH_MARKER).unlink()
    run_main(["check", "--data_name", "cub200", "--data_path", str(root), "--json", "--verify"])
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["train"] == {"images": 300, "classes": 100}
    assert any("the standard split has 5,864" in w for w in report["warnings"])


def test_prepare_round_trip(synth_root, fast_tmp, capsys):
    src = synth_root("cub", image_size=(160, 120), images_per_class=1)
    out = fast_tmp / "cub_cropped"
    assert run_main(["prepare", "--data_name", "cub", "--data_path", str(src), "--out", str(out),
                     "--size", "40", "--crop"]) == 0
    assert "wrote 200 images" in capsys.readouterr().out
    before = data.build_dataset("cub", src, "test", crop=True)
    after = data.build_dataset("cub", out, "test", crop=True)
    assert after.paths == [p.replace(str(src), str(out)) for p in before.paths]
    assert after.labels.tolist() == before.labels.tolist() and after.classes == before.classes
    image = after[0][0]
    assert min(image.size) <= 40 and after.boxes[0] == (0.0, 0.0, float(image.width), float(image.height))
    # uncropped cache of CARS: boxes rescaled with the image
    cars = synth_root("cars")
    out2 = fast_tmp / "cars_small"
    run_main(["prepare", "--data_name", "cars196", "--data_path", str(cars), "--out", str(out2), "--size", "32"])
    a = data.build_dataset("cars", cars, "train", crop=True)
    b = data.build_dataset("cars", out2, "train", crop=True)
    assert len(a) == len(b) and b[0][0].size[0] <= a[0][0].size[0]
    assert b.boxes[0] == pytest.approx(tuple(round(v / 2) for v in a.boxes[0]), abs=1)
    with pytest.raises(data.DatasetError, match="crop is only for"):
        run_main(["prepare", "--data_name", "sop", "--data_path", str(synth_root("sop")), "--out",
                  str(fast_tmp / "x"), "--crop"])


def test_synth_subcommand(fast_tmp, capsys):
    out = fast_tmp / "ox"
    assert run_main(["synth", "--layout", "oxford5k", "--out", str(out), "--image_size", "48", "40",
                     "--images_per_class", "6", "--seed", "1"]) == 0
    lm = data.load_landmark_dataset("oxford5k", out)
    assert len(lm.db_paths) == 11 * 6 + 40 and data.load_image(lm.db_paths[0]).size == (48, 40)


def test_user_error_exit_code_and_message(fast_tmp, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["data_utils.py", "check", "--data_name", "sop", "--data_path", str(fast_tmp)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "data_utils.py"), run_name="__main__")
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err.startswith("error: missing file: ") and "Ebay_train.txt" in err
    assert "expected layout:" in err and "Traceback" not in err
