"""Suite-wide set-up: caches (image verification, decoded images) go to a scratch folder, never ~/.cache;
tests marked ``cuda`` are skipped on a machine without a CUDA GPU."""
from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker cuda)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _cache_in_scratch(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # subprocesses (CLI tests) inherit it
        mp.setenv("METRIC_RETRIEVAL_CACHE", str(tmp_path_factory.mktemp("metric-retrieval-cache")))
        yield
