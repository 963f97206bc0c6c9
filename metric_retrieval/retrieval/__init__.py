"""Retrieval: feature databases, persistent indexes, catalogue embedding, queries, the search server, visual output."""
from metric_retrieval.retrieval.database import load_database, query_database, save_database, search_database
from metric_retrieval.retrieval.index import Hit, Index
from metric_retrieval.retrieval.visualize import write_html, write_montage

__all__ = ["Hit", "Index", "load_database", "query_database", "save_database", "search_database", "write_html",
           "write_montage"]
