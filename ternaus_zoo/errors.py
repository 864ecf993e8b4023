"""The errors a user can cause and fix: a path that does not exist, a file of the wrong kind, a bad value.

The command line catches :class:`UserError` once, at the top (:func:`ternaus_zoo.cli.main`), and ends with
exit status 2 and the message on one line; ``--debug`` or ``TERNAUS_ZOO_DEBUG=1`` shows the traceback
instead. Any other exception is a bug and keeps its traceback. The subclasses also derive from the built-in
type a caller of the Python API would catch (``FileNotFoundError``, ``KeyError``...).
"""

from __future__ import annotations

__all__ = ["BadValueError", "MissingPathError", "UnknownNameError", "UserError"]


class UserError(Exception):
    """An error in what the user gave (a file, a folder, a key, a value); the message names it."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class BadValueError(UserError, ValueError):
    """An option out of its range, or given where it does not apply; the message names the option."""


class UnknownNameError(UserError, KeyError):
    """A name (a model, a loss ...) that is not registered; the message lists the known ones."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument (quotes and escapes); show the message as written
        return str(self.args[0]) if self.args else ""
