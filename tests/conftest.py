"""Suite-wide set-up: caches (image verification, decoded images) go to a scratch folder, never ~/.cache."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cache_in_scratch(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # subprocesses (CLI tests) inherit it
        mp.setenv("METRIC_RETRIEVAL_CACHE", str(tmp_path_factory.mktemp("metric-retrieval-cache")))
        yield
