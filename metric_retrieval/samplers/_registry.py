"""The batch-sampler registry (apart from ``samplers/__init__.py`` so sampler modules can import it)."""
from metric_retrieval.utils.registry import Registry

SAMPLERS = Registry("batch sampler")

__all__ = ["SAMPLERS"]
