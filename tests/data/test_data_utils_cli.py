"""``data_utils.py``: check (text and --json), prepare round trip, synth, user errors → exit code 2."""
from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest

import data_utils
from metric_retrieval import data

REPO = Path(__file__).resolve().parents[2]


def run_main(argv: list[str]) -> int:
    return data_utils.run(data_utils.get_args_parser().parse_args(argv))


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


def cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """``python data_utils.py ARGV`` as a user runs it: exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["data_utils.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "data_utils.py"), run_name="__main__")
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--size", "0"], "--size must be a positive number of pixels, got 0"),
    (["--size", "-5"], "--size must be a positive number of pixels, got -5"),
])
def test_prepare_refuses_a_bad_size(synth_root, fast_tmp, monkeypatch, capsys, args, message):
    code, err = cli(["prepare", "--data_name", "folder", "--data_path", str(synth_root("folder")), "--out",
                     str(fast_tmp / "out"), *args], monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (fast_tmp / "out").exists()


def test_prepare_out_inside_the_data_is_refused(synth_copy, monkeypatch, capsys):
    root = synth_copy("folder")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    code, err = cli(["prepare", "--data_name", "folder", "--data_path", str(root), "--out", str(root / "small")],
                    monkeypatch, capsys)
    assert code == 2 and "is inside the dataset root" in err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the user's data is untouched


def test_prepare_out_that_is_a_file(synth_root, fast_tmp, monkeypatch, capsys):
    target = fast_tmp / "notes.txt"
    target.write_text("keep")
    code, err = cli(["prepare", "--data_name", "folder", "--data_path", str(synth_root("folder")), "--out",
                     str(target)], monkeypatch, capsys)
    assert code == 2 and "is a file, not a folder" in err and target.read_text() == "keep"


@pytest.mark.parametrize("args, message", [
    (["--images_per_class", "0"], "--images_per_class must be a positive integer, got 0"),
    (["--image_size", "0", "0"], "--image_size must be two positive sizes W H, got 0 0"),
])
def test_synth_refuses_bad_numbers_and_writes_nothing(fast_tmp, monkeypatch, capsys, args, message):
    code, err = cli(["synth", "--layout", "folder", "--out", str(fast_tmp / "s"), *args], monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (fast_tmp / "s").exists()


def test_check_bad_image_hint_names_commands_that_take_it(synth_copy, monkeypatch, capsys):
    root = synth_copy("folder")
    next((root / "train").rglob("*.jpg")).write_bytes(b"not a jpeg")
    code, err = cli(["check", "--data_name", "folder", "--data_path", str(root), "--verify"], monkeypatch, capsys)
    assert code == 2 and "cannot be read" in err
    assert "train.py and data_utils.py prepare drop them with --skip_bad_images" in err


def test_folder_with_two_evaluation_layouts_is_refused(synth_copy):
    root = synth_copy("folder")
    for split in ("query", "gallery"):
        shutil.copytree(root / "test", root / split)
    with pytest.raises(data.DatasetError, match="test/ and query/ \\+ gallery/ are two evaluation layouts"):
        data.build_dataset("folder", root, "test")


def test_warnings_are_plain_lines(synth_copy, fast_tmp, monkeypatch, capsys):
    root = synth_copy("folder")
    next((root / "train").rglob("*.jpg")).write_bytes(b"not a jpeg")
    monkeypatch.setattr(sys, "argv", ["data_utils.py", "prepare", "--data_name", "folder", "--data_path", str(root),
                                      "--out", str(fast_tmp / "out"), "--skip_bad_images"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "data_utils.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_info.value.code == 0
    assert "warning: dropped 1 unreadable image(s) from the folder dataset (--skip_bad_images)\n" in err
    assert "DatasetWarning" not in err and "warnings.warn" not in err and ".py:" not in err
