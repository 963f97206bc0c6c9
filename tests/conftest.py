"""Suite-wide set-up: caches (image verification, decoded images) go to a scratch folder, never ~/.cache."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cache_in_scratch(tmp_path_factory):
    old = os.environ.get("METRIC_RETRIEVAL_CACHE")
    os.environ["METRIC_RETRIEVAL_CACHE"] = str(tmp_path_factory.mktemp("metric-retrieval-cache"))
    yield
    if old is None:
        os.environ.pop("METRIC_RETRIEVAL_CACHE", None)
    else:
        os.environ["METRIC_RETRIEVAL_CACHE"] = old
