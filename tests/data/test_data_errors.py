"""Broken dataset copies end in the documented messages: path + layout, file + line, bad-image lists."""
from __future__ import annotations

import os
import warnings

import pytest

from metric_retrieval import data
from metric_retrieval.data.common import SYNTH_MARKER


def _truncate(path, keep: float = 0.3) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def test_missing_root_and_files_name_path_and_layout(synth_copy, fast_tmp):
    with pytest.raises(data.DatasetError) as err:
        data.build_dataset("cub", fast_tmp / "nowhere", "train")
    assert "nowhere" in str(err.value) and "expected layout:" in str(err.value)
    assert "image_class_labels.txt" in str(err.value)

    root = synth_copy("cub")
    os.remove(root / "CUB_200_2011" / "image_class_labels.txt")
    with pytest.raises(data.DatasetError, match=r"missing file: .*CUB_200_2011/image_class_labels.txt\n"
                                                r"expected layout:\n<root>/CUB_200_2011/"):
        data.build_dataset("cub", root, "train")


def test_wrong_folder_shows_expected_tree(synth_root):
    # an In-shop root handed to the SOP reader, a CUB root to the CARS reader
    with pytest.raises(data.DatasetError) as err:
        data.build_dataset("sop", synth_root("inshop"), "train")
    message = str(err.value)
    assert "Ebay_train.txt" in message and "expected layout:" in message and "bicycle_final" in message
    with pytest.raises(data.DatasetError, match=r"cars_annos.mat(.|\n)*car_ims/"):
        data.build_dataset("cars", synth_root("cub"), "train")
    with pytest.raises(data.DatasetError, match="Eval/list_eval_partition.txt"):
        data.build_dataset("inshop", synth_root("sop"), "train")
    with pytest.raises(data.DatasetError, match="no train/, test/, query/ or gallery/"):
        data.build_dataset("folder", synth_root("sop"), "train")


def test_truncated_list_names_file_and_line(synth_copy):
    root = synth_copy("cub")
    images = root / "CUB_200_2011" / "images.txt"
    lines = images.read_text().splitlines()
    images.write_text("\n".join(lines[:41]) + "\n42")  # cut off mid-line
    with pytest.raises(data.DatasetError, match=r"images.txt line 42: expected '<image_id> <relative path>'"):
        data.build_dataset("cub", root, "train")

    root = synth_copy("sop")
    ebay = root / "Ebay_test.txt"
    text = ebay.read_text()
    last = text.splitlines()[-1]
    ebay.write_text(text[: len(text) - len(last) - 1] + " ".join(last.split()[:2]))  # truncated download
    with pytest.raises(data.DatasetError, match=r"Ebay_test.txt line 451: expected '<image_id> <class_id>"):
        data.build_dataset("sop", root, "test")


def test_inconsistent_lists(synth_copy):
    root = synth_copy("cub")
    labels = root / "CUB_200_2011" / "image_class_labels.txt"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-5]) + "\n")
    with pytest.raises(data.DatasetError, match="image_class_labels.txt has no line for image id 596"):
        data.build_dataset("cub", root, "test")
    root = synth_copy("inshop")
    part = root / "Eval" / "list_eval_partition.txt"
    part.write_text(part.read_text().replace(" gallery\n", " galery\n", 1))
    with pytest.raises(data.DatasetError, match=r"list_eval_partition.txt line \d+: status 'galery'"):
        data.build_dataset("inshop", root, "train")


def test_non_standard_counts_warn_with_both_numbers(synth_copy):
    root = synth_copy("cub")
    os.remove(root / SYNTH_MARKER)  # synthetic roots are exempt; this one now looks like a real, partial CUB
    with pytest.warns(data.DatasetWarning, match=r"found 300 images in the CUB train split, the standard split "
                                                 r"has 5,864: is the archive fully extracted\?"):
        data.build_dataset("cub", root, "train", verify_images=False)
    root = synth_copy("inshop")
    os.remove(root / SYNTH_MARKER)
    with pytest.warns(data.DatasetWarning, match="14,218"):
        data.build_dataset("inshop", root, "query", verify_images=False)


def test_corrupt_jpeg_is_reported_then_skippable(synth_copy):
    root = synth_copy("sop")
    train = data.build_dataset("sop", root, "train", verify_images=False)
    bad = [train.paths[3], train.paths[10]]
    for p in bad:
        _truncate(__import__("pathlib").Path(p))
    with pytest.raises(data.DatasetError) as err:
        data.build_dataset("sop", root, "train")
    message = str(err.value)
    assert "2 image(s) of the sop train split cannot be read" in message and "--skip_bad_images" in message
    assert all(p in message for p in bad)
    with pytest.warns(data.DatasetWarning, match="dropped 2 unreadable image"):
        kept = data.build_dataset("sop", root, "train", skip_bad_images=True)
    assert len(kept) == len(train) - 2 and not set(bad) & set(kept.paths)
    assert kept.num_classes == train.num_classes
    # without verification the broken files pass (they fail later, in the loader)
    assert len(data.build_dataset("sop", root, "train", verify_images=False)) == len(train)


def test_missing_image_files_are_bad_images_even_without_verification(synth_copy):
    root = synth_copy("folder", query_gallery=True)
    root_cub = synth_copy("cub")
    victim = data.build_dataset("cub", root_cub, "test", verify_images=False).paths[0]
    os.remove(victim)
    with pytest.raises(data.DatasetError, match="1 image\\(s\\) of the cub test split cannot be read"):
        data.build_dataset("cub", root_cub, "test", verify_images=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DatasetWarning)
        assert len(data.build_dataset("cub", root_cub, "test", skip_bad_images=True)) == 299
    with pytest.raises(data.DatasetError, match="query/ and gallery/ go together"):
        import shutil

        shutil.rmtree(root / "gallery")
        data.build_dataset("folder", root, "query")


def test_many_bad_images_are_listed_up_to_ten(synth_copy):
    root = synth_copy("folder")
    paths = data.build_dataset("folder", root, "train").paths
    for p in paths[:12]:
        with open(p, "wb") as f:
            f.write(b"not an image")
    with pytest.raises(data.DatasetError) as err:
        data.build_dataset("folder", root, "train")
    assert "12 image(s)" in str(err.value) and "... and 2 more" in str(err.value)


def test_damaged_cars_mat(synth_copy):
    root = synth_copy("cars")
    _truncate(root / "cars_annos.mat", 0.5)
    with pytest.raises(data.DatasetError, match="cars_annos.mat: cannot read the MATLAB file"):
        data.build_dataset("cars", root, "train")


def test_verification_cache_skips_unchanged_files(synth_copy, monkeypatch):
    import metric_retrieval.data.verify as verify

    root = synth_copy("folder")
    calls = []
    real = verify.check_image
    monkeypatch.setattr(verify, "check_image", lambda p: calls.append(p) or real(p))
    ds = data.build_dataset("folder", root, "train")
    assert len(calls) == len(ds) == 40
    calls.clear()
    data.build_dataset("folder", root, "train")
    assert calls == []  # unchanged: only stat() calls
    victim = ds.paths[7]
    raw = open(victim, "rb").read()
    with open(victim, "wb") as f:
        f.write(raw[: len(raw) // 4])
    os.utime(victim, ns=(1, 1))  # even a clock that does not move changes (size, mtime)
    with pytest.raises(data.DatasetError, match="1 image"):
        data.build_dataset("folder", root, "train")
    assert calls == [victim]
