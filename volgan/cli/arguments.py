"""The command line's argument types and its parser, whose usage errors are one line (exit status 2)."""

from __future__ import annotations

import argparse

from volgan.errors import VolganInputError
from volgan.labels import tumor_type_from_name


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit status 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def triple(kind: type, name: str):
    """An argument type for one number or three (``2``, ``1.5,1.5,3`` or ``16x64x128``).

    Parameters
    ----------
    kind : type
        ``int`` or ``float``.
    name : str
        the option's name, for the error message.

    Returns
    -------
    Callable[[str], tuple]
        text → three numbers (one repeated three times).
    """

    def parse(text: str):
        parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
        try:
            values = [kind(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number or three numbers, got {text!r}") from None
        if len(values) == 1:
            values *= 3
        if len(values) != 3:
            raise argparse.ArgumentTypeError(f"{name} must be a number or three numbers, got {text!r}")
        return tuple(values)

    return parse


def seed_number(text: str) -> int:
    """A seed: a whole number from 0 to 2³²−1 (numpy's generators refuse negatives).

    Parameters
    ----------
    text : str
        the argument.

    Returns
    -------
    int
        the seed.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed must be a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed must be from 0 to {2**32 - 1}, got {value}")
    return value


def tumor_types(values: list[str]) -> tuple[int, ...]:
    """The tumor classes that ``--types`` names (names or numbers, comma-separated, repeatable).

    Parameters
    ----------
    values : list[str]
        the option's values.

    Returns
    -------
    tuple[int, ...]
        the tumor_type numbers (1–3), sorted.

    Raises
    ------
    VolganInputError
        for an unknown name, or for "none" (tumor-free cases come from ``--tumor-fraction``).
    """
    names = [v for text in values for v in text.split(",") if v.strip()]
    try:
        types = tuple(sorted({tumor_type_from_name(n) for n in names}))
    except ValueError as exc:
        raise VolganInputError(None, f"--types: {exc}") from None
    if 0 in types:
        raise VolganInputError(None, "--types names tumor classes (1–3); use --tumor-fraction for tumor-free cases")
    return types
