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

SOURCES = ("real", "synthetic")


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
