"""Exceptions for mistakes a user can fix (bad path, wrong layout, unknown option).

CLIs catch :class:`UserError` and print its message without a traceback; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message names the culprit and what was expected."""


class UnknownOptionError(UserError, ValueError):
    """A name that no registry knows; the message lists the valid names."""


def plain_warnings() -> None:
    """Print Python warnings as ``warning: message`` lines (no category, file or source line), for the CLIs."""
    import sys
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
