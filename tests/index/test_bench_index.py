"""benchmarks/bench_index.py on tiny sizes: its rows are what the README table reports."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench():
    spec = importlib.util.spec_from_file_location("_bench_index", REPO / "benchmarks" / "bench_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_part_measures_every_type_against_flat():
    b = bench()
    args = b.get_args_parser().parse_args(["--n", "3000", "--dim", "32", "--clusters", "30", "--queries", "20",
                                           "--nlist", "8", "--nprobe", "2,8", "--pq", "8np,16x4fs",
                                           "--train_size", "1000", "--refine_base", "PQ8x4fs",
                                           "--refine", "RFlat,Refine(SQ8),RFlatDisk", "--k_factor", "1,16"])
    rows = b.bench_index(args)
    assert [(r["index"], r.get("nprobe"), r.get("k_factor")) for r in rows] == [
        ("Flat", None, None), ("IVF8,Flat", 2, None), ("IVF8,Flat", 8, None), ("IVF8,PQ8np", 2, None),
        ("IVF8,PQ8np", 8, None), ("IVF8,PQ16x4fs", 2, None), ("IVF8,PQ16x4fs", 8, None),
        *[(f"IVF8,PQ8x4fs,{r}", n, f) for r in ("RFlat", "Refine(SQ8)", "RFlatDisk") for n in (2, 8) for f in (1, 16)]]
    refine = {(r["index"], r["nprobe"], r["k_factor"]): r for r in rows if "k_factor" in r}
    assert refine[("IVF8,PQ8x4fs,RFlat", 8, 16)]["recall@10"] > refine[("IVF8,PQ8x4fs,RFlat", 8, 1)]["recall@10"]
    assert refine[("IVF8,PQ8x4fs,Refine(SQ8)", 8, 16)]["bytes_per_vector"] < rows[0]["bytes_per_vector"] / 2
    disk, ram = refine[("IVF8,PQ8x4fs,RFlatDisk", 8, 16)], refine[("IVF8,PQ8x4fs,RFlat", 8, 16)]
    assert disk["recall@10"] == ram["recall@10"]  # the same re-rank, its vectors read from the file
    assert disk["disk_bytes_per_vector"] == 32 * 4 and disk["bytes_per_vector"] < ram["bytes_per_vector"] / 2
    assert rows[0]["recall@10"] == 1 and rows[0]["qps_vs_flat"] == 1
    assert rows[2]["recall@10"] >= 0.99  # every list probed: exact up to float rounding
    assert all(r["memory_vs_flat"] < 0.25 for r in rows[3:7])  # 8 bytes (and 16 x 4 bits) instead of 128


@pytest.mark.slow
def test_stream_part_reports_interleaved_median_ratios():
    b = bench()
    args = b.get_args_parser().parse_args(["--parts", "stream", "--stream_images", "12", "--stream_shard", "5",
                                           "--stream_batch", "4", "--stream_rounds", "2", "--stream_workers", "0"])
    row = b.bench_stream(args)
    assert row["images"] == 12 and row["rounds"] == 2
    for name in ("stream", "build"):
        assert 0 < row[f"{name}_ratio_min"] <= row[f"{name}_ratio"]
