"""The error type for invalid model option values (bad ``gd_config``, ``stage3_stride``, ``feature_dim``...).

It is a :class:`metric_retrieval.utils.errors.UserError` (CLIs print it without a traceback) and a ``ValueError``.
Unknown option *names* are ``TypeError`` (see :func:`models.build_model`); unknown backbone/head names are
:class:`metric_retrieval.utils.errors.UnknownOptionError`.
"""
from metric_retrieval.utils.errors import UserError

__all__ = ["ModelConfigError"]


class ModelConfigError(UserError, ValueError):
    """An invalid model option value; the message names the option and the valid values."""
