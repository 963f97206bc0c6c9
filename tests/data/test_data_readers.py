"""Readers on synthetic data in the real layouts: counts, splits, labels, boxes, shared label maps."""
from __future__ import annotations

import shutil

import pytest
import scipy.io
import torch

from metric_retrieval import data
from metric_retrieval.data.common import class_sort_key, label_map
from metric_retrieval.data.synth_render import attributes
from metric_retrieval.utils.errors import UnknownOptionError


def test_registry_names_and_aliases():
    assert data.list_datasets() == ["cars", "cub", "folder", "inshop", "oxford5k", "paris6k", "roxford5k",
                                    "rparis6k", "sop"]
    for alias, name in [("cub200", "cub"), ("CUB_200_2011", "cub"), ("car", "cars"), ("cars196", "cars"),
                        ("online_products", "sop"), ("isc", "inshop"), ("in-shop", "inshop")]:
        assert data.DATASETS.canonical(alias) == name
    with pytest.raises(UnknownOptionError, match="unknown dataset 'imagenet'; choose one of: cars, cub"):
        data.get_benchmark("imagenet")


def test_benchmarks():
    cub = data.get_benchmark("cub200")
    assert cub == data.BenchmarkInfo("cub", "leave_one_out", (1, 2, 4, 8), "train", ("test",), 100, True, "CUB200")
    assert data.get_benchmark("cars").num_train_classes == 98
    assert data.datasets_with_boxes() == ["cars", "cub"]
    assert not data.get_benchmark("sop").has_boxes and data.get_benchmark("inshop").title == "In-shop"
    assert data.get_benchmark("sop").recall_ks == (1, 10, 100, 1000)
    inshop = data.get_benchmark("isc")
    assert (inshop.protocol, inshop.recall_ks, inshop.eval_splits) == ("query_gallery", (1, 10, 20, 30, 40, 50),
                                                                       ("query", "gallery"))
    assert data.get_benchmark("oxford5k").protocol == "landmark"
    with pytest.raises(AttributeError):
        cub.name = "x"  # frozen


def test_cub_official_layout(synth_root):
    root = synth_root("cub")
    train = data.build_dataset("cub", root, "train")
    with pytest.warns(data.DatasetWarning, match="5,924"):  # the marker is one level up
        test = data.build_dataset("cub", root / "CUB_200_2011", "test", verify_images=False)
    assert (len(train), len(test)) == (300, 300)
    assert train.num_classes == test.num_classes == 100
    assert train.labels.dtype == torch.long and train.labels.min() == 0 and train.labels.max() == 99
    assert train.classes[0] == "001.Black_footed_Albatross" and test.classes[0].startswith("101.")
    assert all("/001." in p for p in train.paths[:3]) and "/200." in test.paths[-1]
    # boxes: x, y, w, h in bounding_boxes.txt → (x, y, x + w, y + h)
    line = (root / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines()[0].split()
    x, y, w, h = map(float, line[1:])
    cropped = data.build_dataset("cub", root, "train", crop=True, verify_images=False)
    assert cropped.boxes[0] == (x, y, x + w, y + h)
    img, label, index = cropped[0]
    assert img.size == (round(x + w) - round(x), round(y + h) - round(y)) and (label, index) == (0, 0)


def test_cub_and_cars_class_folder_layout(synth_root):
    for layout, n in (("cub", 200), ("cars", 196)):
        root = synth_root(layout, folders=True, images_per_class=1)
        train = data.build_dataset(layout, root, "train", verify_images=False)
        test = data.build_dataset(layout, root, "test", verify_images=False)
        assert (train.num_classes, test.num_classes) == (n // 2, n // 2)
        assert not set(train.classes) & set(test.classes)
        assert train.classes == sorted(train.classes) and max(train.classes) < min(test.classes)
        with pytest.raises(data.DatasetError, match="no bounding boxes"):
            data.build_dataset(layout, root, "train", crop=True)


def test_cars_reads_mat_by_field_name(synth_root):
    root = synth_root("cars")
    mat = scipy.io.loadmat(str(root / "cars_annos.mat"))
    assert mat["annotations"].shape == (1, 588) and mat["class_names"].shape == (1, 196)
    train = data.build_dataset("cars", root, "train", crop=True)
    test = data.build_dataset("cars", root, "test", verify_images=False)
    assert (len(train), len(test), train.num_classes, test.num_classes) == (294, 294, 98, 98)
    first = mat["annotations"][0, 0]
    assert train.paths[0].endswith(str(first["relative_im_path"][0]))
    assert train.boxes[0] == tuple(float(first[f"bbox_{k}"][0, 0]) for k in ("x1", "y1", "x2", "y2"))
    assert train.classes[0] == str(mat["class_names"][0, 0][0])


def test_sop_both_layouts(synth_root):
    for kw in ({}, {"info_files": True}):
        root = synth_root("sop", **kw)
        train = data.build_dataset("online_products", root, "train", verify_images=False)
        test = data.build_dataset("sop", root, "test", verify_images=False)
        assert (len(train), len(test), train.num_classes, test.num_classes) == (450, 450, 150, 150)
        assert train.paths[0].endswith("_0.JPG") and (("/images/" in train.paths[0]) == bool(kw))
    with pytest.raises(data.DatasetError, match="crop is only for"):
        data.build_dataset("sop", root, "train", crop=True)


def test_inshop_query_gallery_share_one_label_map(synth_root):
    root = synth_root("inshop", gallery_only_items=3)
    train = data.build_dataset("inshop", root, "train", verify_images=False)
    query = data.build_dataset("isc", root, "query", verify_images=False)
    gallery = data.build_dataset("in-shop", root, "gallery", verify_images=False)
    assert (len(train), train.num_classes) == (120, 30)
    assert query.classes == gallery.classes and query.num_classes == 33  # union of query and gallery items

    def item(path):
        return path.split("/")[-2]

    for i in range(len(query)):
        for j in range(len(gallery)):
            same_item = item(query.paths[i]) == item(gallery.paths[j])
            assert same_item == bool(query.labels[i] == gallery.labels[j])
    # the seed code's per-split numbering would disagree here: the gallery has 3 items the queries lack
    per_split_q = label_map(item(p) for p in query.paths)
    per_split_g = label_map(item(p) for p in gallery.paths)
    assert any(per_split_q[k] != per_split_g[k] for k in per_split_q)


def test_labels_sorted_numerically_not_lexicographically():
    assert label_map([10, 2, 100, 1]) == {1: 0, 2: 1, 10: 2, 100: 3}
    assert label_map(["10", "2", "1"]) == {"1": 0, "2": 1, "10": 2}  # seed code: "1", "10", "2"
    assert sorted(["id_00000010", "id_00000002"], key=class_sort_key) == ["id_00000002", "id_00000010"]


def test_folder_layouts(synth_root, fast_tmp):
    root = synth_root("folder")
    info = data.get_benchmark("folder", root)
    assert (info.protocol, info.eval_splits, info.num_train_classes) == ("leave_one_out", ("test",), 10)
    train = data.build_dataset("folder", root, "train")
    assert len(train) == 40 and any(p.endswith(".png") for p in train.paths)
    qg = synth_root("folder", query_gallery=True)
    info = data.get_benchmark("folder", qg)
    assert (info.protocol, info.eval_splits) == ("query_gallery", ("query", "gallery"))
    query = data.build_dataset("folder", qg, "query")
    gallery = data.build_dataset("folder", qg, "gallery")
    assert query.classes == gallery.classes == [f"class_{c:03d}" for c in range(10, 20)]
    with pytest.raises(data.DatasetError, match="no split 'test'"):
        data.build_dataset("folder", qg, "test")
    # any extension PIL reads
    bmp = fast_tmp / "bmp"
    shutil.copytree(root / "test", bmp / "test")
    img = data.load_image(train.paths[0])
    img.save(bmp / "test" / "class_010" / "extra.bmp")
    assert len(data.build_dataset("folder", bmp, "test")) == 41


def test_dataset_item_and_transform(synth_root):
    ds = data.build_dataset("cub", synth_root("cub"), "test", verify_images=False,
                            transform=data.build_transform("cgd", train=False, image_size=32))
    image, label, index = ds[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert (label, index) == (int(ds.labels[5]), 5)
    ds.transform = None
    assert ds[5][0].mode == "RGB"


def test_synthetic_classes_share_attributes_across_splits():
    train = {attributes(c) for c in range(100)}
    test = {attributes(c) for c in range(100, 200)}
    assert len(train) == 100 and not train & test
    for k in range(3):  # every attribute value of the test classes also occurs in training
        assert {a[k] for a in test} <= {a[k] for a in train}


@pytest.mark.parametrize("name", data.DATASETS.names())
def test_every_registered_dataset_reads_its_synthetic_layout(name, synth_root):
    """A new reader is covered here without editing the test: it needs a synthetic layout (data/synth.py)."""
    report = data.describe_dataset(name, synth_root(name), verify_images=True)
    assert report["dataset"] == name and report["splits"]
    assert all(s["images"] > 0 for s in report["splits"].values())
    expected = ["excluded 2 known-corrupt"] if name == "paris6k" else []
    assert [w[: len(e)] for w, e in zip(report["warnings"], expected)] == expected
    assert len(report["warnings"]) == len(expected)


def test_loader_workers_can_pickle_the_dataset(synth_root):
    ds = data.build_dataset("cub", synth_root("cub"), "train", verify_images=False,
                            transform=data.build_transform("abir", train=True, image_size=32))
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)
    images, labels, index = next(iter(loader))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.long and index.tolist() == list(range(8))


def test_load_image_box_and_draft(fast_tmp):
    from PIL import Image

    path = fast_tmp / "big.jpg"
    Image.new("RGB", (800, 600), (10, 200, 30)).save(path)
    assert data.load_image(str(path)).size == (800, 600)
    assert data.load_image(str(path), box=(100, 50, 300.4, 250)).size == (200, 200)
    assert data.load_image(str(path), box=(-5, -5, 900, 700)).size == (800, 600)  # clamped to the image
    small = data.load_image(str(path), max_size=100)
    assert small.size == (200, 150)  # DCT scale 1/4 keeps both sides >= 100
    assert data.load_image(str(path), box=(100, 50, 300, 250), max_size=100).size == (50, 50)


def test_inshop_images_one_level_deeper(synth_copy):
    root = synth_copy("inshop")
    (root / "Img").mkdir()
    (root / "img").rename(root / "Img" / "img")
    query = data.build_dataset("inshop", root, "query")
    assert "/Img/img/" in query.paths[0] and len(query) == 60
    (root / "Img").rename(root / "elsewhere")
    with pytest.raises(data.DatasetError, match=r"image listed in .*list_eval_partition.txt not found"):
        data.build_dataset("inshop", root, "query")
