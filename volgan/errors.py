"""The one error type for bad user input: the CLI prints it on one line and exits with status 2."""

from __future__ import annotations

import os


class VolganInputError(ValueError):
    """Bad input: ``path`` names the file (or folder) at fault, ``what`` says what is wrong with it."""

    def __init__(self, path: str | os.PathLike | None, what: str):
        self.path = None if path is None else os.fspath(path)
        self.what = what
        super().__init__(f"{self.path}: {what}" if self.path else what)
