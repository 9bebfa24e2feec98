"""The errors the command line reports on one line: bad user input (status 2), training that stopped being finite and a
study stage whose worker kept dying (status 1)."""

from __future__ import annotations

import os


class VolganInputError(ValueError):
    """Bad input: ``path`` names the file (or folder) at fault, ``what`` says what is wrong with it."""

    def __init__(self, path: str | os.PathLike | None, what: str):
        self.path = None if path is None else os.fspath(path)
        self.what = what
        super().__init__(f"{self.path}: {what}" if self.path else what)

    def __reduce__(self):  # rebuilt from (path, what) when it crosses from a study's worker process
        return type(self), (self.path, self.what)


class NonFiniteTraining(SystemExit):
    """Training stopped because a loss term, a gradient or weights to be saved are not finite. The message is one
    line; it derives from SystemExit so that ``python -m monai.bundle run`` ends with that line and exit status 1
    instead of a traceback, and the ``volgan`` command line reports it the same way."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class StageLost(RuntimeError):
    """A study stage whose worker (or node) was lost on every attempt the executor made: one line, exit status 1."""
