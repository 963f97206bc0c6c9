"""Datasets: readers for CUB, CARS196, SOP, In-shop, Oxford/Paris (+ revisited) and plain folders.

``build_dataset(name, root, split)`` gives a map-style dataset of ``(image, label, index)``;
``get_benchmark(name)`` its evaluation protocol; ``load_landmark_dataset(name, root)`` the landmark ground
truth; ``build_transform(preset, train)`` the papers' augmentation; ``write_synthetic`` / ``ensure_synthetic``
miniature copies of every layout. Importing the package registers every reader in ``DATASETS``.
"""
from metric_retrieval.data import cars, cub, folder, inshop, oxford_paris, revisitop, sop  # noqa: F401  (registration)
from metric_retrieval.data.builder import (
    build_dataset,
    describe_dataset,
    get_benchmark,
    get_reader,
    list_datasets,
    load_landmark_dataset,
)
from metric_retrieval.data.common import SYNTH_MARKER
from metric_retrieval.data.dataset import DECODERS, RetrievalDataset
from metric_retrieval.data.errors import DatasetError, DatasetWarning
from metric_retrieval.data.image_io import load_image
from metric_retrieval.data.landmark import LandmarkData, LandmarkImageDataset
from metric_retrieval.data.registry import DATASETS, BenchmarkInfo, datasets_with_boxes
from metric_retrieval.data.synth import ensure_default_dataset, ensure_synthetic, write_synthetic
from metric_retrieval.data.transforms import (
    DEFAULT_TRANSFORM,
    TRANSFORMS,
    build_normalize,
    build_transform,
    list_transforms,
)

__all__ = ["DATASETS", "DECODERS", "DEFAULT_TRANSFORM", "SYNTH_MARKER", "TRANSFORMS", "BenchmarkInfo", "DatasetError",
           "DatasetWarning", "LandmarkData", "LandmarkImageDataset", "RetrievalDataset", "build_dataset",
           "build_normalize", "build_transform", "datasets_with_boxes", "describe_dataset", "ensure_default_dataset",
           "ensure_synthetic", "get_benchmark", "get_reader", "list_datasets", "list_transforms", "load_image",
           "load_landmark_dataset", "write_synthetic"]
