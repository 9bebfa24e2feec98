"""What a ``python -m monai.bundle run`` of volgan's bundles checks before it starts, and how it fails.

MONAI's runner is the entry point, so volgan cannot wrap it in a ``try``. Each config's ``initialize`` list instead
calls :func:`one_line_errors` first, which installs an exception hook: an error whose chain holds a
:class:`~volgan.errors.VolganInputError` (MONAI wraps what a config expression raises in a ``RuntimeError``) ends
the run with volgan's one line on stderr and exit status 1, as the ``volgan`` command line does, instead of a
50-line traceback. Anything else (a bug) keeps its traceback. :func:`check_settings` then refuses bad overrides
(``--max_epochs abc``, ``--learning_rate nan``…) before anything is built or written.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from volgan.errors import VolganInputError


def input_error_in(exc: BaseException | None) -> VolganInputError | None:
    """The first :class:`VolganInputError` in ``exc``'s chain of causes and contexts, or None.

    Parameters
    ----------
    exc : BaseException | None
        the exception raised.

    Returns
    -------
    VolganInputError | None
        the input error behind it, if any.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, VolganInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def one_line_errors(bundle: str) -> None:
    """Make an input error end this process with ``"BUNDLE: error: FILE: what is wrong"`` on stderr (exit status 1)
    and no traceback; other exceptions print as before.

    Parameters
    ----------
    bundle : str
        the bundle's name, the line's prefix.
    """
    previous = sys.excepthook

    def hook(kind, exc, traceback) -> None:
        cause = input_error_in(exc)
        if cause is None:
            previous(kind, exc, traceback)
            return
        print(f"{bundle}: error: {cause}", file=sys.stderr)

    sys.excepthook = hook


def _whole(minimum: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"a whole number of at least {minimum}"
        return None

    return check


def _grid(value: object) -> str | None:
    from volgan.gan.networks import grid_shape

    try:
        grid_shape(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        return f"one side or three [X, Y, Z] that the generators build ({error})"
    return None


def _number(low: float, high: float = math.inf, high_open: bool = False, low_open: bool = False):
    def check(value: object) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            low_text = f"above {low:g}" if low_open else f"at least {low:g}"
            high_text = "" if high == math.inf else f" and {'below' if high_open else 'at most'} {high:g}"
            return f"a finite number {low_text}{high_text}"
        return None

    return check


# the settings of both bundles, by name: what each must be
RULES: dict[str, Callable[[object], str | None]] = {
    "max_epochs": _whole(1),
    "val_interval": _whole(1),
    "batch_size": _whole(1),
    "save_interval": _whole(1),
    "monitor_interval": _whole(1),
    "num_workers": _whole(0),
    "patch_samples": _whole(0),
    "seed": _whole(0),
    "size": _grid,
    "base": _whole(1),
    "z_label": _whole(1),
    "z_image": _whole(1),
    "training_cases": _whole(1),
    "learning_rate": _number(0, low_open=True),
    "g_lr": _number(0, low_open=True),
    "d_lr": _number(0, low_open=True),
    "val_fraction": _number(0, 1, high_open=True),
    "ema_decay": _number(0, 1, high_open=True),
    "cls_weight": _number(0),
    "tumor_weight": _number(0),
    "rec_weight": _number(0),
    "rec_blur": _number(0),
    "r1_weight": _number(0),
}


def check_settings(dataset_dir: str | os.PathLike | None = None, **settings: object) -> None:
    """Refuse a bundle setting that cannot work, naming it, before anything is built or written.

    Parameters
    ----------
    dataset_dir : str | os.PathLike | None
        the data set the run reads, named in the error when it has no training case.
    **settings : object
        settings by their config names (:data:`RULES`): ``max_epochs``, ``learning_rate``… and
        ``training_cases``, the number of cases the run trains on; ``spacing`` (three positive mm) too.

    Raises
    ------
    VolganInputError
        naming the setting (as ``--NAME``) and what it must be.
    """
    for name, value in settings.items():
        if name == "spacing":
            if not (isinstance(value, (list, tuple)) and len(value) == 3
                    and all(_number(0, low_open=True)(v) is None for v in value)):
                raise VolganInputError(None, f"--spacing {value!r} must be three finite numbers of mm above 0")
            continue
        must = RULES[name](value)
        if must is None:
            continue
        if name == "training_cases":
            raise VolganInputError(dataset_dir, "the datalist's training split holds no case to train on")
        raise VolganInputError(None, f"--{name} {value!r} must be {must}")


def require_file(path: str | os.PathLike, what: str) -> str:
    """``path`` if it is a file, else :class:`VolganInputError` naming it and ``what`` is missing.

    Parameters
    ----------
    path : str | os.PathLike
        the file a run needs (a trained checkpoint, say).
    what : str
        what the file is and how to get it, for the message.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    VolganInputError
        naming ``path``, when it is not a file.
    """
    if not Path(path).is_file():
        raise VolganInputError(path, f"no such file: {what}")
    return str(path)


def bundles_root() -> Path:
    """The folder holding ``spine_segcls`` and ``spine_cgan`` (``$VOLGAN_BUNDLES``, else beside the package).

    Returns
    -------
    Path
        the folder.
    """
    root = Path(os.environ.get("VOLGAN_BUNDLES", Path(__file__).resolve().parents[1] / "bundles"))
    if not (root / "spine_segcls" / "configs" / "train.json").is_file():
        raise VolganInputError(root, "no spine_segcls bundle here; set VOLGAN_BUNDLES to volgan's bundles/ folder")
    return root


def bundle_object(bundle: str, config: str, key: str, **overrides: object) -> object:
    """The object a bundle config defines under ``key`` (``#`` for a nested key), instantiated from that file with
    ``overrides`` (name → value) set first: how volgan's own code runs the very definitions the bundle lists.

    Parameters
    ----------
    bundle : str
        ``"spine_segcls"`` or ``"spine_cgan"``.
    config : str
        the config file's name in the bundle's ``configs/`` (``"train.json"``).
    key : str
        the config key, such as ``"preprocessing"`` or ``"augmentations#light"``.
    **overrides : object
        config values to set before parsing, such as ``spacing=[1.5, 1.5, 1.5]``.

    Returns
    -------
    object
        the instantiated object (None where the config says null).
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundles_root() / bundle / "configs" / config))
    for name, value in overrides.items():
        parser[name] = value
    return parser.get_parsed_content(key, instantiate=True)


def require_layers(layers: list[str], one_of: list[str], how: str) -> None:
    """Refuse a config run without a config it extends: each config file names itself in ``layers`` (a base sets
    it, a config over it adds with MONAI's ``+layers``), so a config run alone sees only its own name.

    Parameters
    ----------
    layers : list[str]
        the names the loaded config files gave.
    one_of : list[str]
        the configs this one may extend (``inference``: the evaluation workflow; ``train``: a federated client's
        evaluation over the training config).
    how : str
        how to run it instead, for the message.

    Raises
    ------
    VolganInputError
        when none of them was loaded.
    """
    if not any(name in layers for name in one_of):
        raise VolganInputError(None, f"this config extends configs/{one_of[0]}.json; {how}")
