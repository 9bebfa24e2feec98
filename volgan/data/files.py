"""Files written whole or not at all: atomic files (:func:`atomic_path`, :func:`write_text`), output folders built
in a staging folder and moved into place (:func:`staged_output_dir`), the checks before writing
(:func:`check_writable_dir`), strict JSON (:func:`strict_json`) and one-line messages (:func:`first_line`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from volgan.errors import VolganInputError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error remove it.

    Parameters
    ----------
    path : str | os.PathLike
        the file to write.
    suffix : str
        appended to the temporary file's name, for writers that pick the format by the suffix.

    Yields
    ------
    Path
        the temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide outputs from the user's group
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically.

    Parameters
    ----------
    path : str | os.PathLike
        the file.
    text : str
        its content, written as UTF-8.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def first_line(exc: BaseException) -> str:
    """An exception's message as one line of at most 120 characters (its type name when it has no message).

    Parameters
    ----------
    exc : BaseException
        the exception.

    Returns
    -------
    str
        the message's first line, cut to 120 characters.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."


def check_writable_dir(out: str | os.PathLike) -> None:
    """Raise :class:`VolganInputError` naming ``out`` unless it is a folder (or can become one) that this process
    can write: not a file, not under a file, not in a read-only place. Creates nothing but ``out``'s parents.

    Parameters
    ----------
    out : str | os.PathLike
        the output folder.

    Raises
    ------
    VolganInputError
        naming ``out``, when it is a file, under a file, or cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VolganInputError(out, "output path exists and is not a folder")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise VolganInputError(out, f"cannot be a folder: {blocker} is a file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VolganInputError(out, f"cannot be created ({exc.strerror or first_line(exc)})") from None
    target = out if out.exists() else out.parent
    try:  # a real write, not os.access: root passes access checks on read-only file systems
        os.rmdir(tempfile.mkdtemp(prefix=".volgan-probe-", dir=target))
    except OSError as exc:
        raise VolganInputError(out, f"cannot be written ({exc.strerror or first_line(exc)} in {target})") from None


@contextmanager
def staged_output_dir(out: str | os.PathLike, names: tuple[str, ...], overwrite: bool = False) -> Iterator[Path]:
    """Build an output folder's entries ``names`` in a hidden staging folder, then move them in.

    Raises before any work if ``out`` already holds one of ``names`` (unless ``overwrite``) or cannot be written
    (a file, a path under a file, a read-only place). On an error the staging folder is removed and ``out`` is
    left as it was; other files in ``out`` are never touched. An OS error while writing (a full disk, say)
    becomes a :class:`VolganInputError` naming ``out``.

    Parameters
    ----------
    out : str | os.PathLike
        the output folder (made if missing).
    names : tuple[str, ...]
        the entries the run will write.
    overwrite : bool
        replace entries of ``names`` already in ``out``.

    Yields
    ------
    Path
        the staging folder to write the entries into.

    Raises
    ------
    VolganInputError
        naming ``out``, before any work, when an entry exists without ``overwrite`` or ``out`` cannot be written.
    """

    out = Path(out)
    check_writable_dir(out)
    taken = [n for n in names if (out / n).exists()]
    if taken and not overwrite:
        raise VolganInputError(out, f"already holds {', '.join(taken)}; pass --overwrite to replace")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise VolganInputError(out, f"cannot be written ({exc.strerror or first_line(exc)})") from None
    try:
        try:
            yield staging
        except OSError as exc:
            raise VolganInputError(out, f"could not be written ({exc.strerror or first_line(exc)}); nothing was "
                                        "changed there") from None
        out.mkdir(exist_ok=True)
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        for name in taken:
            os.replace(out / name, trash / name)
        for item in staging.iterdir():
            os.replace(item, out / item.name)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def strict_json(value):
    """NaN and ±Inf → None, numpy scalars → Python, keys starting with '_' dropped (strict JSON).

    Parameters
    ----------
    value : object
        any nesting of dicts, lists, tuples, numbers, numpy scalars, strings and None.

    Returns
    -------
    object
        the same structure (tuples as lists), fit for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
