"""Small shared plumbing: registries, user-facing errors, atomic file writes."""
from metric_retrieval.utils.errors import UnknownOptionError, UserError
from metric_retrieval.utils.registry import Registry

__all__ = ["Registry", "UnknownOptionError", "UserError"]
