"""BIDS trees as the spinal-cord community ships them (spine-generic, the Spinal Cord Toolbox's data, OpenNeuro):
raw images under ``sub-*/[ses-*/]anat/``, masks under ``derivatives/*/sub-*/[ses-*/]anat/`` named by the image's
entities plus a mask tail (``sub-01_T2w_seg-manual.nii.gz``, ``sub-01_T2w_label-SC_seg.nii.gz``…), and
participants' attributes in ``participants.tsv``.

The tree is read with the standard library: the BIDS layout needs a few globs, and pybids would add a dependency
and an index database for them.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from volgan.data.io import NIFTI_SUFFIXES, strip_nifti_suffix
from volgan.data.masks import DERIVATIVE_LABELS, mask_owner, mask_stem, normal_tail
from volgan.errors import VolganInputError
from volgan.labels import tumor_type_from_name


@dataclass
class BidsCase:
    """One raw image of the tree: its ``name`` (the file's stem: ``sub-01_ses-1_T2w``), ``image``, ``subject``
    (``sub-01``) and the derivative ``masks`` found for it, each with the label it holds."""

    name: str
    image: Path
    subject: str
    masks: list[tuple[Path, int]] = field(default_factory=list)


def is_bids(src: str | os.PathLike) -> bool:
    """Whether ``src`` is a BIDS tree: a folder with ``dataset_description.json`` or ``sub-*`` folders.

    Parameters
    ----------
    src : str | os.PathLike
        a folder.

    Returns
    -------
    bool
        True for a BIDS tree.
    """
    src = Path(src)
    return src.is_dir() and ((src / "dataset_description.json").is_file()
                             or any(p.is_dir() and p.name.startswith("sub-") for p in src.iterdir()))


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)
                  and not p.name.startswith("."))


def _anat_folders(root: Path) -> list[Path]:
    return sorted({*root.glob("sub-*/anat"), *root.glob("sub-*/ses-*/anat")})


def find_bids_cases(src: str | os.PathLike, suffix: str | None = None,
                    masks: dict[str, int] | None = None) -> list[BidsCase]:
    """The raw images of one contrast in a BIDS tree, each with its derivative masks.

    Parameters
    ----------
    src : str | os.PathLike
        the tree's root.
    suffix : str | None
        the contrast's suffix (``T2w``, ``T1w``, ``T2star``…); None: the tree's only one.
    masks : dict[str, int] | None
        the masks to take, {normalised tail: label} (:func:`volgan.data.masks.parse_mask_choices`); None: every mask
        of a known name (:data:`volgan.data.masks.DERIVATIVE_LABELS`).

    Returns
    -------
    list[BidsCase]
        the images in subject and session order.

    Raises
    ------
    VolganInputError
        naming the tree, when it has no image of ``suffix`` (the suffixes found are listed), several suffixes and
        none was asked for; naming a mask, when it matches no image or has a name whose label is unknown and it was
        asked for.
    """
    root = Path(src)
    images = [p for folder in _anat_folders(root) for p in _nifti_files(folder)]
    suffixes = Counter(strip_nifti_suffix(p.name).rsplit("_", 1)[-1] for p in images)
    if not images:
        raise VolganInputError(root, "BIDS tree without NIfTI images under sub-*/anat or sub-*/ses-*/anat")
    if suffix is None:
        if len(suffixes) > 1:
            raise VolganInputError(root, "BIDS tree with several contrasts (" + ", ".join(
                f"{s} {n}" for s, n in sorted(suffixes.items())) + "); pick one with --suffix")
        suffix = next(iter(suffixes))
    if suffix not in suffixes:
        raise VolganInputError(root, f"BIDS tree has no image with suffix {suffix!r} (found: "
                                     + ", ".join(f"{s} {n}" for s, n in sorted(suffixes.items())) + ")")
    cases = {}
    for path in images:
        stem = strip_nifti_suffix(path.name)
        if stem.rsplit("_", 1)[-1] == suffix:
            cases[stem] = BidsCase(stem, path, stem.split("_", 1)[0])
    wanted = masks if masks is not None else DERIVATIVE_LABELS
    derivatives = root / "derivatives"
    for folder in sorted(_anat_folders(d) for d in sorted(derivatives.iterdir()) if d.is_dir()) \
            if derivatives.is_dir() else []:
        for anat in folder:
            for path in _nifti_files(anat):
                _attach_mask(path, cases, wanted)
    return sorted(cases.values(), key=lambda c: c.name)


def _attach_mask(path: Path, cases: dict[str, BidsCase], wanted: dict[str, int]) -> None:
    stem = strip_nifti_suffix(path.name)
    owner = mask_owner(stem, set(cases), separators="_")
    if owner is None:
        image_stem = mask_stem(stem, separators="_")
        if image_stem != stem and image_stem.rsplit("_", 1)[-1] in {c.rsplit("_", 1)[-1] for c in cases} \
                and normal_tail(stem[len(image_stem) + 1:]) in wanted:
            raise VolganInputError(path, f"mask matches no image: no raw image {image_stem!r} in the tree")
        return  # another contrast's mask, or not a mask
    tail = normal_tail(stem[len(owner) + 1:])
    if tail in wanted:
        cases[owner].masks.append((path, wanted[tail]))


def read_participant_classes(src: str | os.PathLike, column: str) -> dict[str, int | None]:
    """``tumor_type`` per subject from the tree's ``participants.tsv``.

    Parameters
    ----------
    src : str | os.PathLike
        the tree's root.
    column : str
        the column holding the class (a number 0–3 or a name such as ``intramedullary``; ``n/a`` or empty: unknown).

    Returns
    -------
    dict[str, int | None]
        {``sub-XX``: tumor_type or None}.

    Raises
    ------
    VolganInputError
        naming the file, when it is missing, lacks ``participant_id`` or ``column``, or names an unknown class.
    """
    path = Path(src) / "participants.tsv"
    if not path.is_file():
        raise VolganInputError(path, "no participants.tsv for --classes-column")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "participant_id" not in rows[0] or column not in rows[0]:
        raise VolganInputError(path, f"expected columns participant_id and {column}")
    classes: dict[str, int | None] = {}
    for n, row in enumerate(rows, start=2):
        text = (row[column] or "").strip()
        try:
            classes[row["participant_id"].strip()] = None if text.lower() in ("", "n/a") else tumor_type_from_name(text)
        except ValueError as exc:
            raise VolganInputError(path, f"line {n}: {exc}") from None
    return classes
