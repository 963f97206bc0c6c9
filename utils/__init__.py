"""Small shared plumbing: registries, user-facing errors, atomic file writes."""
from utils.errors import UserError
from utils.registry import Registry

__all__ = ["Registry", "UserError"]
