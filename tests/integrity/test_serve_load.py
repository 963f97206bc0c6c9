"""Issue 26's bounded load test, smaller: benchmarks/bench_serve_load.py with 6 clients (one uploading 12000 x 12000
PNGs throughout) and 60 searches against a real serve.py process on 127.0.0.1."""
from __future__ import annotations

import pytest

from benchmarks import bench_serve_load


@pytest.mark.slow
def test_searches_succeed_and_rss_stays_bounded_while_a_client_uploads_huge_images(tmp_path):
    args = bench_serve_load.get_args_parser().parse_args(["--clients", "6", "--requests", "60",
                                                          "--phases", "hostile"])
    [row] = bench_serve_load.load_test(args, tmp_path)
    assert (row["ok"], row["failed"]) == (60, 0), row["failures"]
    assert set(row["hostile_uploads"]) == {413} and sum(row["hostile_uploads"].values()) >= 1
    assert row["rss_peak_mb"] < 2048
    # a decoded 12000 x 12000 upload would take 137 MB (L) to 412 MB (RGB) at once
    assert row["rss_peak_mb"] - row["rss_idle_mb"] < 100, row
