"""Feature database format, search semantics, montage PNG and HTML page."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from metric_retrieval import models
from metric_retrieval.models.backbones.base import IMAGENET_RGB
from metric_retrieval.models.recipe import InferenceRecipe
from metric_retrieval.retrieval.database import (
    find_path,
    load_database,
    query_database,
    save_database,
    search_database,
)
from metric_retrieval.retrieval.visualize import BORDER, COLORS, TEXT_HEIGHT, write_html, write_montage
from metric_retrieval.utils.errors import UserError


def _recipe(d=6, metric="ip"):
    return InferenceRecipe(32, "cgd", IMAGENET_RGB, d, metric, metric == "ip")


def _split(n=12, d=6, seed=0, prefix="q"):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return {"embeddings": torch.from_numpy(emb), "labels": torch.arange(n) // 3,
            "paths": [f"/data/{prefix}/img_{i:03d}.jpg" for i in range(n)]}


def test_round_trip_and_format(tmp_path):
    path = tmp_path / "db" / "features.pth"
    save_database(path, _split(), None, recipe=_recipe(), checkpoint="runs/x/best.pth", config={"lr": 1e-4})
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"version", "metric", "recipe", "query", "gallery", "checkpoint", "config"}  # checksum: zip
    assert raw["version"] == 1 and raw["metric"] == "ip" and raw["gallery"] is None
    assert raw["recipe"] == _recipe().to_dict() and load_database(path)["recipe"] == _recipe()
    assert raw["query"]["embeddings"].dtype == torch.float32 and raw["query"]["labels"].dtype == torch.int64
    db = load_database(path)
    assert db["query"]["paths"] == _split()["paths"] and db["config"] == {"lr": 1e-4}
    torch.testing.assert_close(db["query"]["embeddings"], _split()["embeddings"])


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_database(tmp_path / "missing.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"PK\x03\x04garbage")  # a torn zip archive
    with pytest.raises(UserError, match="not readable"):
        load_database(tmp_path / "corrupt.pth")
    (tmp_path / "config.yaml").write_text("lr: 0.1\n")
    with pytest.raises(UserError, match="is not a PyTorch file written by torch.save: it holds text"):
        load_database(tmp_path / "config.yaml")
    torch.save({"version": 1, "query": {}}, tmp_path / "keys.pth")
    with pytest.raises(UserError, match="lacks the keys"):
        load_database(tmp_path / "keys.pth")
    bad = {"version": 1, "metric": "ip", "query": {"embeddings": torch.zeros(2, 3), "labels": torch.zeros(3),
                                                  "paths": ["a", "b"]}, "gallery": None, "checkpoint": None,
           "config": {}}
    torch.save(bad, tmp_path / "sizes.pth")
    with pytest.raises(UserError, match="inconsistent"):
        load_database(tmp_path / "sizes.pth")
    with pytest.raises(ValueError, match="disagree"):
        save_database(tmp_path / "x.pth", (torch.zeros(2, 3), [0, 1, 2], ["a", "b"]), recipe=_recipe(3))
    with pytest.raises(ValueError, match="the recipe's 4"):
        save_database(tmp_path / "x.pth", (torch.zeros(2, 3), [0, 1], ["a", "b"]), recipe=_recipe(4))


def test_search_excludes_own_index_only_when_asked(tmp_path):
    save_database(tmp_path / "db.pth", _split(), recipe=_recipe())
    db = load_database(tmp_path / "db.pth")
    emb = db["query"]["embeddings"]
    d, i = search_database(db, emb[4], 5)
    assert i[0].item() == 4 and d[0].item() == pytest.approx(0.0, abs=1e-3)
    d, i = search_database(db, emb[4], 5, exclude_index=4)
    assert 4 not in i.tolist() and i.shape == (5,)
    expected = torch.cdist(emb[4:5], emb)[0]
    expected[4] = float("inf")
    torch.testing.assert_close(d, expected.sort().values[:5], atol=1e-5, rtol=1e-5)
    assert torch.all(d[1:] >= d[:-1])
    d, i = search_database(db, emb[:3], 4, exclude_index=[0, 1, 2])
    assert d.shape == (3, 4) and all(r not in i[r].tolist() for r in range(3))
    assert search_database(db, emb[0], 100, exclude_index=0)[1].shape == (11,)  # k clamped


def test_query_database_by_path_and_external(tmp_path):
    save_database(tmp_path / "db.pth", _split(9, prefix="q"), _split(15, seed=1, prefix="g"), recipe=_recipe())
    db = load_database(tmp_path / "db.pth")
    res = query_database(db, "/data/q/img_002.jpg", k=4)
    assert res.query_label == 0 and len(res.paths) == 4 and all(p.startswith("/data/g/") for p in res.paths)
    assert res.correct == [lab == 0 for lab in res.labels]
    assert find_path(db, "img_002.jpg") is None  # ambiguous file name (in query and gallery)
    res = query_database(db, db["gallery"]["embeddings"][3] * 2.0, k=3)
    assert res.indices[0] == 3 and res.correct == [None, None, None]
    with pytest.raises(UserError, match="not in the feature database"):
        query_database(db, "/elsewhere/x.jpg")


def _images(tmp_path, n):
    paths = []
    for i in range(n):
        p = tmp_path / f"im{i}.jpg"
        Image.new("RGB", (60 + 10 * i, 40), (40 * i % 255, 100, 150)).save(p)
        paths.append(str(p))
    return paths


def test_montage_size_and_border_colours(tmp_path):
    paths = _images(tmp_path, 5)
    tile = 96
    correct = [True, False, None, True]
    out = write_montage(paths[0], paths[1:], [0.1, 0.2, 0.3, 0.4], correct, tmp_path / "out" / "m.png",
                        tile=tile, query_box=(5, 5, 30, 30))
    im = Image.open(out).convert("RGB")
    assert im.size == ((len(correct) + 1) * tile, tile + TEXT_HEIGHT)
    assert im.getpixel((2, tile // 2)) == COLORS["query"]
    for r, c in enumerate(correct, start=1):
        for xy in ((r * tile + 2, tile // 2), (r * tile + tile // 2, BORDER - 1), (r * tile + tile - 3, 3)):
            assert im.getpixel(xy) == COLORS[c], (r, xy)
        assert im.getpixel((r * tile + tile // 2, tile // 2)) != COLORS[c]  # image content inside


def test_montage_unreadable_image_and_length_check(tmp_path):
    paths = _images(tmp_path, 2)
    out = write_montage(paths[0], [paths[1], str(tmp_path / "missing.jpg")], [0.5, 0.6], [False, True],
                        tmp_path / "m.png", tile=64)
    assert Image.open(out).size == (3 * 64, 64 + TEXT_HEIGHT)
    with pytest.raises(ValueError, match="same length"):
        write_montage(paths[0], paths, [0.1], [True], tmp_path / "x.png")


def test_html_is_self_contained(tmp_path):
    paths = _images(tmp_path, 4)
    out = write_html(paths[0], paths[1:], [0.1, 0.2, 0.3], [True, False, None], tmp_path / "r.html", tile=64)
    text = open(out, encoding="utf-8").read()
    imgs = re.findall(r"<img ", text)
    assert len(imgs) == 4
    assert text.count('src="data:image/jpeg;base64,') == 4
    assert "#00c800" in text and "#dc0000" in text and "#808080" in text
    assert "#1" in text and "0.3000" in text


def test_class_names_travel_with_the_database(tmp_path):
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    split = {"embeddings": emb, "labels": torch.tensor([0, 0, 1]), "paths": ["a.jpg", "b.jpg", "c.jpg"],
             "classes": ["class_012", "class_013"]}
    save_database(tmp_path / "db.pth", query=split, recipe=_recipe(2))
    res = query_database(load_database(tmp_path / "db.pth"), "a.jpg", k=2)
    assert res.query_class == "class_012" and res.classes == ["class_012", "class_013"]
    with pytest.raises(ValueError, match="2 class names for labels up to 2"):
        save_database(tmp_path / "bad.pth", query={**split, "labels": torch.tensor([0, 0, 2])}, recipe=_recipe(2))


# Un-normalised: b is the nearest to q in Euclidean distance, c (10x longer, same direction as q) by cosine.
UNNORMALISED = torch.tensor([[1.0, 0.0], [1.0, 0.3], [10.0, 0.0], [-1.0, 0.0]])


def test_an_l2_database_ranks_by_euclidean_distance_of_the_stored_embeddings(tmp_path):
    split = {"embeddings": UNNORMALISED, "labels": torch.tensor([0, 0, 1, 1]), "paths": ["q", "b", "c", "d"]}
    save_database(tmp_path / "db.pth", split, recipe=_recipe(2, "l2"))
    db = load_database(tmp_path / "db.pth")
    d, i = search_database(db, UNNORMALISED[0], 3, exclude_index=0)
    brute = torch.cdist(UNNORMALISED[:1], UNNORMALISED)[0]  # 0, 0.3, 9, 2
    assert i.tolist() == [1, 3, 2]  # by cosine it would be c (cos 1) first
    torch.testing.assert_close(d, brute[[1, 3, 2]])
    save_database(tmp_path / "ip.pth", split, recipe=_recipe(2, "ip"))
    assert search_database(load_database(tmp_path / "ip.pth"), UNNORMALISED[0], 1, exclude_index=0)[1].item() == 2


def test_a_database_that_predates_recipes_gets_the_one_its_model_config_derives(tmp_path):
    """Old files (no "recipe"): derived from the run config + the model its model config rebuilds; a file with
    neither is refused with its name."""
    mc = {"backbone": "resnet18", "head": "baseline", "feature_dim": 2, "num_classes": 0,
          "options": {"embedding_norm": False}}
    split = {"embeddings": UNNORMALISED, "labels": torch.tensor([0, 0, 1, 1]), "paths": ["q", "b", "c", "d"]}
    old = {"version": 1, "metric": "ip", "query": split, "gallery": None, "checkpoint": None,
           "config": {"image_size": 48, "transform": "cgd"}, "model": {"config": mc, "sha256": "x"}}
    torch.save(old, tmp_path / "old.pth")
    db = load_database(tmp_path / "old.pth")
    model = models.build_model("resnet18", "baseline", 2, embedding_norm=False)
    assert db["recipe"] == InferenceRecipe(48, "cgd", model.input_spec, 2, "l2", False)
    assert search_database(db, UNNORMALISED[0], 1, exclude_index=0)[1].item() == 1  # ranked by distance
    torch.save({**old, "model": None}, tmp_path / "older.pth")
    with pytest.raises(UserError, match=r"older\.pth.*predates inference recipes"):
        load_database(tmp_path / "older.pth")
    torch.save({**old, "config": {}}, tmp_path / "noconfig.pth")
    with pytest.raises(UserError, match=r"noconfig\.pth.*lacks image_size, transform"):
        load_database(tmp_path / "noconfig.pth")
