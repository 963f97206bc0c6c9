"""Evaluation: exact kNN, retrieval metrics, landmark mAP, whitening/QE, feature databases, visual output."""
from evaluation.database import load_database, query_database, save_database, search_database
from evaluation.embed import embed
from evaluation.knn import KNN_BACKENDS, available_backends, knn
from evaluation.landmark import evaluate_landmarks, extract_landmark_descriptors
from evaluation.landmark_metrics import compute_ap, compute_map, landmark_map
from evaluation.metrics import default_recall_ks, normalized_mutual_info, retrieval_metrics
from evaluation.query_expansion import alpha_qe, average_qe, database_augmentation
from evaluation.visualize import write_html, write_montage
from evaluation.whitening import (
    learned_whitening_fit,
    load_whitening,
    pca_whitening_fit,
    save_whitening,
    whiten_apply,
)

__all__ = [
    "KNN_BACKENDS", "alpha_qe", "available_backends", "average_qe", "compute_ap", "compute_map",
    "database_augmentation", "default_recall_ks", "embed", "evaluate_landmarks", "extract_landmark_descriptors",
    "knn", "landmark_map", "learned_whitening_fit", "load_database", "load_whitening", "normalized_mutual_info",
    "pca_whitening_fit", "query_database", "retrieval_metrics", "save_database", "save_whitening",
    "search_database", "whiten_apply", "write_html", "write_montage",
]
