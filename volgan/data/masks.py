"""Masks as the spinal-cord community names them: which file is whose mask, what label a derivative mask holds,
and several binary masks of one image merged into one volgan label map.

The names are those of the Spinal Cord Toolbox and of BIDS derivatives (spine-generic, OpenNeuro sets):
``t2_seg-manual`` (the cord), ``sub-01_T2w_label-SC_seg`` (the cord), ``_label-CSF_seg`` (CSF),
``_label-lesion`` and ``_lesion-manual`` (a lesion: volgan's tumor label); and the generic ``_seg``, ``_dseg``,
``_mask``, ``_gt``, ``_label`` and ``_labels``, whose values are label numbers (translated by ``--label-map``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from volgan.data.io import Volume, check_same_grid, integer_labels, read_array
from volgan.errors import VolganInputError
from volgan.labels import CORD, CSF, LABELS, TUMOR_LABEL, annotated_labels, label_number

# NAME<sep><tail>: what follows an image's stem in its mask's file name (sep "_" or "-")
MASK_TAIL = re.compile(r"(seg([-_]manual)?|dseg|mask|gt|labels?|label[-_][A-Za-z0-9]+([-_]seg)?|lesion[-_]manual)",
                       re.IGNORECASE)

# Binary derivative masks whose structure is known by name: normalised tail (lower case, "_" as "-") → label.
DERIVATIVE_LABELS: dict[str, int] = {
    "seg-manual": CORD,
    "label-sc-seg": CORD,
    "label-sc": CORD,
    "label-csf-seg": CSF,
    "label-csf": CSF,
    "label-lesion": TUMOR_LABEL,
    "lesion-manual": TUMOR_LABEL,
    "label-lesion-seg": TUMOR_LABEL,
}
# Painting order when several masks of one image overlap: a lesion lies inside the cord (or CSF), so it is painted
# last and wins; any other overlap is a disagreement and is refused.
PAINT_LAST = (TUMOR_LABEL,)


def normal_tail(tail: str) -> str:
    """A mask tail in the form :data:`DERIVATIVE_LABELS` is keyed by: ``"label-SC_seg"`` → ``"label-sc-seg"``.

    Parameters
    ----------
    tail : str
        what follows the image's stem and its separator.

    Returns
    -------
    str
        lower case, ``_`` written ``-``.
    """
    return tail.lower().replace("_", "-")


def mask_owner(name: str, stems: set[str], separators: str = "_-") -> str | None:
    """The stem in ``stems`` whose mask ``name`` is (``name`` = stem + ``_`` or ``-`` + a tail of :data:`MASK_TAIL`),
    the longest such; None when ``name`` is no other file's mask.

    Parameters
    ----------
    name : str
        a file's stem.
    stems : set[str]
        the stems of the folder's files.
    separators : str
        the characters that may join stem and tail (BIDS: ``"_"`` alone).

    Returns
    -------
    str | None
        the image's stem, or None.
    """
    owners = [stem for stem in stems if stem != name and len(name) > len(stem) + 1 and name.startswith(stem)
              and name[len(stem)] in separators and MASK_TAIL.fullmatch(name[len(stem) + 1:])]
    return max(owners, key=len) if owners else None


def mask_stem(name: str, separators: str = "_-") -> str:
    """``name`` less its mask tail (``"t2_seg-manual"`` → ``"t2"``), or ``name`` when it has none.

    Parameters
    ----------
    name : str
        a file's stem.
    separators : str
        the characters that may join stem and tail (BIDS: ``"_"`` alone).

    Returns
    -------
    str
        the stem of the image it would be the mask of.
    """
    for i, char in enumerate(name):
        if i and char in separators and MASK_TAIL.fullmatch(name[i + 1:]):
            return name[:i]
    return name


def parse_mask_choices(choices: list[str] | None) -> dict[str, int] | None:
    """``--mask`` values → {normalised tail: label}: ``seg-manual`` (a known name) or ``label-rootlets_seg=cord``
    (any tail, with the label it holds).

    Parameters
    ----------
    choices : list[str] | None
        the option's values; None: every mask of a known name.

    Returns
    -------
    dict[str, int] | None
        the masks to use and their labels, or None for the default.

    Raises
    ------
    VolganInputError
        for a tail without a known label and no ``=LABEL``, or an unknown label.
    """
    if not choices:
        return None
    chosen = {}
    for choice in (c for text in choices for c in text.split(",") if c.strip()):
        tail, _, label = choice.strip().partition("=")
        key = normal_tail(tail)
        if label:
            try:
                chosen[key] = label_number(label)
            except ValueError as exc:
                raise VolganInputError(None, f"--mask {choice}: {exc}") from None
        elif key in DERIVATIVE_LABELS:
            chosen[key] = DERIVATIVE_LABELS[key]
        else:
            raise VolganInputError(None, f"--mask {choice}: not a known mask name ({', '.join(DERIVATIVE_LABELS)}); "
                                         "say which label it holds, as NAME=LABEL (e.g. label-rootlets_seg=cord)")
        if chosen[key] == 0:
            raise VolganInputError(None, f"--mask {choice}: a mask must hold a foreground label")
    return chosen


def read_binary_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A binary mask file: (True where the structure is (X, Y, Z), RAS affine (4×4, mm)).

    Parameters
    ----------
    path : Path
        the mask file.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        the boolean mask and its affine.

    Raises
    ------
    VolganInputError
        naming the file, when it holds more than one non-zero value (not a binary mask) or non-integer values.
    """
    array, affine = read_array(path)
    if np.issubdtype(array.dtype, np.floating) and array.size and float(array.max()) <= 1.0 \
            and float(array.min()) >= 0.0 and not np.array_equal(array, np.rint(array)):
        array = array >= 0.5  # a soft mask (a resampled binary one): the usual 0.5 cut
    values = np.unique(integer_labels(path, array))
    if len(values[values != 0]) > 1:
        raise VolganInputError(path, f"expected a binary mask (0 and one other value), got values "
                                     f"{values[:8].tolist()}; a multi-label map is named NAME_seg or NAME_dseg and "
                                     "translated with --label-map")
    return array != 0, affine


def merge_masks(image: Volume, masks: list[tuple[Path, int]]) -> tuple[Volume, tuple[str, ...] | None]:
    """Several binary masks of one image as one label map, and the labels it annotates.

    Rule: each mask paints its label; a lesion (tumor) mask is painted last and wins where it overlaps another (a
    lesion lies inside the cord or CSF); any other overlap of two masks is refused.

    Parameters
    ----------
    image : Volume
        the image the masks belong to (their grid must be its grid).
    masks : list[tuple[Path, int]]
        each mask file and the volgan label it holds.

    Returns
    -------
    tuple[Volume, tuple[str, ...] | None]
        the label map (X, Y, Z) uint8 on the image's grid, and the annotated labels' names (None: all of them).

    Raises
    ------
    VolganInputError
        naming a mask, when it is not binary, not on the image's grid, or disagrees with another where they overlap.
    """
    labels = np.zeros(image.shape, dtype=np.uint8)
    owner: dict[int, Path] = {}
    for path, label in sorted(masks, key=lambda m: m[1] in PAINT_LAST):
        mask, affine = read_binary_mask(path)
        check_same_grid(image, Volume(mask, affine, str(path)))
        if label not in PAINT_LAST:
            clash = mask & (labels != 0) & (labels != label)
            if clash.any():
                theirs = int(labels[clash][0])
                raise VolganInputError(path, f"disagrees with {owner[theirs].name} in {int(clash.sum())} voxels: both "
                                             f"mark them ({LABELS[label]} and {LABELS[theirs]}); masks of one image "
                                             "may overlap only where a lesion lies inside another structure")
        labels[mask] = label
        owner[label] = path
    return Volume(labels, image.affine, str(masks[0][0])), annotated_labels({label for _, label in masks})
