"""The ``…,RFlatDisk`` refine stage (issue 28 item 2): the exact re-rank of a coarse index's candidates with the full
vectors read from a file of the index folder, not RAM. Exactness against brute force (ties, duplicates, k past the
gallery, too few candidates), agreement with faiss's in-RAM ``RFlat``, generations, damage, a killed writer, a
full disk, and no mapping of the file left in the process after a search."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from metric_retrieval.retrieval.index_store import DEFAULT_K_FACTOR, IndexStore
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.io import DiskFullError
from tests.fake_files import small_tmpfs

REPO = Path(__file__).resolve().parents[2]


def integer_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Small-integer vectors: every inner product and squared distance is exact in float32, so ties are real;
    a quarter of the rows repeat earlier ones (exact duplicates)."""
    x = np.random.default_rng(seed).integers(-2, 3, (n, dim)).astype(np.float32)
    x[3 * n // 4:] = x[: n - 3 * n // 4]
    return x


def fill(store: IndexStore, x: np.ndarray, start: int = 0) -> IndexStore:
    store.add(x, [f"{i}.jpg" for i in range(start, start + len(x))], [None] * len(x),
              [str(i) for i in range(start, start + len(x))])
    return store


def brute_force(q: np.ndarray, x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Best k by exact score (float64), ties by lower id."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    s = q64 @ x64.T if metric == "ip" else ((q64[:, None, :] - x64[None]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), s.shape), -s if metric == "ip" else s), axis=-1)[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_every_item_a_candidate_gives_exact_search_with_ties_and_duplicates(tmp_path, metric):
    x, q = integer_vectors(400), integer_vectors(30, seed=1)
    q[:5] = x[:5]  # queries that are gallery items (and their duplicates)
    store = fill(IndexStore.create(tmp_path, 16, "IVF4,Flat,RFlatDisk", metric, lambda: x), x)
    store.save()
    store = IndexStore.open(tmp_path)
    store.set_search_params(nprobe=4, k_factor=len(x))  # every list, every item: nothing left to the coarse stage
    for k in (1, 10, 400, 1000):  # 1000: past the gallery, capped at its size
        scores, ids = store.search(q, k)
        want_scores, want_ids = brute_force(q, x, min(k, len(x)), metric)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


def test_too_few_candidates_end_in_minus_one_like_faiss(tmp_path):
    x = integer_vectors(300, seed=2)
    store = fill(IndexStore.create(tmp_path, 16, "IVF8,Flat,RFlatDisk", "ip", lambda: x, k_factor=1), x)
    store.set_search_params(nprobe=1)
    q = x[:20]
    scores, ids = store.search(q, 250)  # one list of 8 holds fewer than 250 items
    coarse = store.index.search(q, 250)[1]
    for row in range(len(q)):
        found = coarse[row][coarse[row] >= 0]
        assert len(found) < 250 and (ids[row, len(found):] == -1).all()
        assert (scores[row, len(found):] == np.finfo(np.float32).min).all()
        want = brute_force(q[row:row + 1], x[np.sort(found)], len(found), "ip")[1][0]
        np.testing.assert_array_equal(ids[row, :len(found)], np.sort(found)[want])  # exact among the candidates


def test_same_results_as_faiss_rflat_with_only_the_coarse_index_in_ram(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(4000, 50, replace=False)] + 0.05 * rng.standard_normal((50, 64)).astype(np.float32)
    disk = fill(IndexStore.create(tmp_path / "disk", 64, "IVF16,PQ16x4fs,RFlatDisk", "ip", lambda: x), x)
    ram = fill(IndexStore.create(tmp_path / "ram", 64, "IVF16,PQ16x4fs,RFlat", "ip", lambda: x), x)
    assert disk.refines and disk.meta["k_factor"] == ram.meta["k_factor"] == DEFAULT_K_FACTOR
    for store in (disk, ram):
        store.set_search_params(nprobe=4)
    (ds, di), (rs, ri) = disk.search(q, 10), ram.search(q, 10)
    np.testing.assert_array_equal(di, ri)
    np.testing.assert_allclose(ds, rs, rtol=0, atol=1e-6)
    disk.save()
    ram_bytes, disk_bytes = (faiss.serialize_index(s.index).nbytes for s in (ram, disk))
    assert disk_bytes < 4000 * 64 * 4 / 8 < ram_bytes  # the full vectors are in the file, not the faiss index
    assert (tmp_path / "disk" / "vectors-1.f32").stat().st_size == 4000 * 64 * 4


def test_k_factor_round_trip_and_a_search_keeps_no_mapping_of_the_file(tmp_path):
    x = integer_vectors(500)
    fill(IndexStore.create(tmp_path, 16, "IVF4,Flat,RFlatDisk", "ip", lambda: x, k_factor=5), x).save()
    store = IndexStore.open(tmp_path)
    assert store.meta["k_factor"] == 5 and store.k_factor == 5 and store.search_params == {"k_factor": 5}
    store.set_search_params(k_factor=9)
    assert store.k_factor == 9 and IndexStore.open(tmp_path).k_factor == 5  # a run's override is not stored
    with pytest.raises(UserError, match="--k_factor must be >= 1"):
        store.set_search_params(k_factor=0)
    store.search(x[:10], 5)
    assert "vectors-1.f32" not in Path("/proc/self/maps").read_text()  # unmapped after the search
    with pytest.raises(UserError, match="RFlatDisk re-ranks the candidates of a coarse index"):
        IndexStore.create(tmp_path / "b", 16, "RFlatDisk", "ip")


def test_generations_damage_and_fallback(tmp_path, caplog):
    x = integer_vectors(600)
    store = fill(IndexStore.create(tmp_path, 16, "IVF4,Flat,RFlatDisk", "ip", lambda: x[:300]), x[:300])
    store.save()
    fill(store, x[300:], start=300).save()  # a new file for generation 2; generation 1's kept for meta-prev
    assert {p.name for p in tmp_path.glob("vectors-*")} == {"vectors-1.f32", "vectors-2.f32"}
    store.items["labels"][0] = "edited"  # a save that changes no vector keeps the file it has
    store.save()
    assert IndexStore.open(tmp_path).meta["files"]["vectors-2.f32"] == store.meta["files"]["vectors-2.f32"]
    assert {p.name for p in tmp_path.glob("vectors-*")} == {"vectors-2.f32"}  # generation 1 is no longer referenced

    raw = bytearray((tmp_path / "vectors-2.f32").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "vectors-2.f32").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="vectors-2.f32 does not match its checksum.*and the previous version too: "
                                        "vectors-2.f32 does not match"):
        IndexStore.open(tmp_path)  # both versions share the damaged file
    (tmp_path / "vectors-2.f32").write_bytes(bytes(raw[:-64]))
    with pytest.raises(UserError, match=r"vectors-2.f32 holds 38336 bytes, 600 vectors of 16 float32 need 38400"):
        IndexStore.open(tmp_path, fallback=False)


def test_a_damaged_new_file_falls_back_to_the_previous_version(tmp_path, caplog):
    x = integer_vectors(600)
    store = fill(IndexStore.create(tmp_path, 16, "IVF4,Flat,RFlatDisk", "ip", lambda: x[:300]), x[:300])
    store.save()
    fill(store, x[300:], start=300).save()
    with open(tmp_path / "vectors-2.f32", "r+b") as f:
        f.seek(300 * 16 * 4 + 8)
        f.write(b"\x00\x00\x80\x7f")  # +inf in an added row
    opened = IndexStore.open(tmp_path)
    assert len(opened) == 300 and opened.meta["generation"] == 1
    assert "vectors-2.f32 does not match" in caplog.text
    np.testing.assert_array_equal(opened.search(x[:3], 1)[1][:, 0], [0, 1, 2])


def test_a_writer_killed_before_its_save_leaves_the_index_as_it_was(tmp_path):
    x = integer_vectors(400)
    fill(IndexStore.create(tmp_path, 16, "IVF4,Flat,RFlatDisk", "ip", lambda: x[:200]), x[:200]).save()
    script = (f"import numpy as np, os\nfrom metric_retrieval.retrieval.index_store import IndexStore\n"
              f"s = IndexStore.open({str(tmp_path)!r})\nx = np.ones((200, 16), np.float32)\n"
              f"s.add(x, ['a'] * 200, [None] * 200, ['a'] * 200)\nos._exit(9)  # dies before save()\n")
    assert subprocess.run([sys.executable, "-c", script], cwd=REPO).returncode == 9
    assert len(list(tmp_path.glob(".vectors-*.tmp"))) == 1  # its staging file
    store = IndexStore.open(tmp_path)
    assert len(store) == 200
    fill(store, x[200:], start=200).save()
    assert not list(tmp_path.glob(".vectors-*.tmp"))  # the next writer removes it
    reopened = IndexStore.open(tmp_path)
    reopened.set_search_params(nprobe=4, k_factor=400)
    np.testing.assert_array_equal(reopened.search(x[200:210], 1)[0][:, 0], (x[200:210] ** 2).sum(1))


def test_keep_items_rewrites_the_file_from_the_kept_vectors(tmp_path):
    x = integer_vectors(400, seed=4)
    store = fill(IndexStore.create(tmp_path, 16, "IVF4,Flat,RFlatDisk", "l2", lambda: x), x)
    store.save()
    keep = list(range(0, 400, 3))
    store.keep_items(keep, (x[keep][s:s + 50] for s in range(0, len(keep), 50)))
    store.save()
    store = IndexStore.open(tmp_path)
    store.set_search_params(nprobe=4, k_factor=400)
    assert len(store) == len(keep) == store.vectors.count
    np.testing.assert_array_equal(store.search(x[:40], 7)[1], brute_force(x[:40], x[keep], 7, "l2")[1])


def test_an_unwritable_folder_is_one_clear_error(tmp_path):
    x = integer_vectors(100)
    store = IndexStore.create(tmp_path, 16, "IVF4,Flat,RFlatDisk", "ip", lambda: x)
    store.root = store.vectors.root = tmp_path / "a_file" / "idx"  # below a file: nothing can be created there
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"cannot write .*a_file/idx/\.vectors-\*\.tmp: Not a directory"):
        fill(store, x)


def test_a_full_disk_is_one_clear_error_and_the_previous_version_stays(tmp_path):
    with small_tmpfs(tmp_path / "small", "1m", "tests/engine/test_safe_files.py patches a write") as mount:
        x = integer_vectors(2000, dim=64)  # 512 KB a copy: the second add's staging copy does not fit
        store = fill(IndexStore.create(mount, 64, "IVF4,PQ8x4fs,RFlatDisk", "ip", lambda: x), x)
        store.save()
        with pytest.raises(DiskFullError, match=rf"no space left in {mount} while writing \.vectors-.*free some "
                                                "space and rerun"):
            fill(store, x, start=2000)
        assert not list(mount.glob(".vectors-*.tmp")) and len(IndexStore.open(mount)) == 2000
