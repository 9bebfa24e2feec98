"""Label and class numbers shared by every file, network and report (docs/design.md)."""

from __future__ import annotations

LABELS: dict[int, str] = {
    0: "background",
    1: "vertebra",
    2: "disc",
    3: "cord",
    4: "csf",
    5: "tumor",
}
NUM_LABELS = len(LABELS)
TUMOR_LABEL = 5

TUMOR_TYPES: dict[int, str] = {
    0: "none",
    1: "intramedullary",
    2: "intradural_extramedullary",
    3: "vertebral",
}
NUM_TUMOR_TYPES = len(TUMOR_TYPES)
# Named tumor types (TUMOR_TYPES): use these, not bare numbers.
NO_TUMOR, INTRAMEDULLARY, EXTRAMEDULLARY, VERTEBRAL = 0, 1, 2, 3

SOURCES = ("real", "synthetic")

# Named label numbers (LABELS): use these, not bare numbers.
BACKGROUND, VERTEBRA, DISC, CORD, CSF = 0, 1, 2, 3, 4
FOREGROUND = tuple(k for k in LABELS if k != BACKGROUND)
ANATOMY_LABELS = (VERTEBRA, DISC, CORD, CSF)  # the foreground less the tumor

# A partially annotated label map's background voxels become PARTIAL_BASE + a bit mask of the labels they may be
# (background and every unannotated label) in the batches the segmenter trains on (volgan.training.prepare_batch).
PARTIAL_BASE = 64


def label_number(name: str | int) -> int:
    """A label's number from its name (``"cord"`` → 3) or number.

    Parameters
    ----------
    name : str | int
        a label name of :data:`LABELS` or its number.

    Returns
    -------
    int
        the label, 0–5.

    Raises
    ------
    ValueError
        for anything else.
    """
    names = {v: k for k, v in LABELS.items()}
    if isinstance(name, str) and name.strip().lower() in names:
        return names[name.strip().lower()]
    if isinstance(name, int) and not isinstance(name, bool) and name in LABELS:
        return name
    raise ValueError(f"{name!r} is not a volgan label ({', '.join(LABELS.values())})")


def annotated_labels(names) -> tuple[str, ...] | None:
    """The annotated foreground labels as names, in label order; None when that is all of them (a full map).

    Parameters
    ----------
    names : iterable of str or int
        label names or numbers; background is implied and may be left out.

    Returns
    -------
    tuple[str, ...] | None
        the names, or None for all five foreground labels.

    Raises
    ------
    ValueError
        for a value that is not a label, or a list that names no foreground label.
    """
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise ValueError(f"{names!r} must be a list of label names")
    numbers = {label_number(n) for n in names} - {BACKGROUND}
    if not numbers:
        raise ValueError("names no foreground label")
    if set(FOREGROUND) <= numbers:
        return None
    return tuple(LABELS[k] for k in sorted(numbers))


def tumor_type_from_name(name: str) -> int:
    """Map a class name (``"vertebral"``), its prefix (``"intramed"``) or its number (``"3"``) to its number.

    Parameters
    ----------
    name : str
        a class name, a prefix of one, or a number (text).

    Returns
    -------
    int
        the tumor_type, 0–3.

    Raises
    ------
    ValueError
        for a name that matches no class, or more than one.
    """
    key = name.strip().lower().replace("-", "_")
    if key.isdigit() and int(key) in TUMOR_TYPES:
        return int(key)
    hits = [k for k, v in TUMOR_TYPES.items() if v == key] or [
        k for k, v in TUMOR_TYPES.items() if v.startswith(key)
    ]
    if len(hits) != 1:
        raise ValueError(f"unknown tumor type {name!r}; expected one of {', '.join(TUMOR_TYPES.values())}")
    return hits[0]
