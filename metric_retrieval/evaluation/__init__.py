"""Evaluation: exact kNN, retrieval metrics, landmark mAP, whitening and query expansion."""
from metric_retrieval.evaluation.embed import embed
from metric_retrieval.evaluation.knn import KNN_BACKENDS, available_backends, knn
from metric_retrieval.evaluation.landmark import evaluate_landmarks, extract_landmark_descriptors, landmark_resize
from metric_retrieval.evaluation.landmark_metrics import compute_ap, compute_map, landmark_map
from metric_retrieval.evaluation.metrics import default_recall_ks, normalized_mutual_info, retrieval_metrics
from metric_retrieval.evaluation.query_expansion import alpha_qe, average_qe, database_augmentation
from metric_retrieval.evaluation.whitening import (
    learned_whitening_fit,
    load_whitening,
    pca_whitening_fit,
    save_whitening,
    whiten_apply,
)

__all__ = [
    "KNN_BACKENDS", "alpha_qe", "available_backends", "average_qe", "compute_ap", "compute_map",
    "database_augmentation", "default_recall_ks", "embed", "evaluate_landmarks", "extract_landmark_descriptors",
    "knn", "landmark_map", "landmark_resize", "learned_whitening_fit", "load_whitening", "normalized_mutual_info",
    "pca_whitening_fit", "retrieval_metrics", "save_whitening",
    "whiten_apply",
]
