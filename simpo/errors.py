"""Errors the user can fix.

``UserError`` is the base of every error whose message names its cause and the config key to change; the entry
points print such an error as one line, and any other exception, being a bug, keeps its traceback. It derives from
``ValueError`` so that callers catching ``ValueError`` still catch it.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the command, the config or an input file: the message says what to change."""


class ConfigError(UserError):
    """A configuration value that cannot work; the message names the key (every ``simpo.core.value_checks`` check
    raises it, wherever the value arrives)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or resumed from; the message names the file and the alternatives."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory named by a config key does not exist (still a ``FileNotFoundError`` for callers)."""


class RunDirError(UserError):
    """The run directory cannot be used as asked; the message says what to change."""


class ExportError(UserError):
    """The trained policy could not be written where ``callbacks.hf_export.dirpath`` says; the training is saved."""


class NoSpaceError(UserError, OSError):
    """A file could not be written for want of room (a full disk, a quota, a file-size limit); the previous version
    of the file is kept. Still an ``OSError`` (with its ``errno``) for callers; its text is the message alone."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno, self.strerror = code, message

    def __str__(self) -> str:
        return str(self.strerror)
