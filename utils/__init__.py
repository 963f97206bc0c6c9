"""Small shared plumbing: registries, user-facing errors, atomic file writes."""
from utils.errors import UnknownOptionError, UserError
from utils.registry import Registry

__all__ = ["Registry", "UnknownOptionError", "UserError"]
