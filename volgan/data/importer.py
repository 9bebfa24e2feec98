"""``volgan import``: a spine data set as published (SPIDER, VerSe, TotalSpineSeg, nnU-Net, MSD, or a folder of
image/label pairs; NIfTI, MetaImage, NRRD or DICOM series anywhere in a tree) → NIfTI and a datalist with
volgan's labels (``volgan.labels``).

Every volume is read through :func:`volgan.data.io.read_array` (nibabel for NIfTI, SimpleITK for the rest) and
written with the same array and affine. Label values are translated by a label map: a preset that carries a
public data set's published label table, or a JSON file ``{their value: volgan label}``. Values not in the map
are refused with their voxel and case counts unless ``unmapped="background"``. Everything is read and mapped in
a hidden staging folder; nothing appears in the output folder until every case has passed.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from volgan.data.datalist import (
    DATASET_FILE,
    Case,
    balanced_test_split,
    check_case_name,
    check_unique_names,
    layout_paths,
    read_datalist,
    write_datalist,
)
from volgan.data.files import staged_output_dir
from volgan.data.io import (
    DicomSeries,
    Volume,
    check_same_grid,
    find_volumes,
    integer_labels,
    read_array,
    read_volume,
    write_nifti,
)
from volgan.data.label_mapping import load_label_map, map_labels, mapped_labels
from volgan.data.masks import DERIVATIVE_LABELS, mask_owner, mask_stem, merge_masks, normal_tail
from volgan.errors import VolganInputError
from volgan.labels import (  # noqa: E402  (named label numbers)
    TUMOR_LABEL,
    tumor_type_from_name,
)

MASK_LIKE_VALUES = 8  # an "image" with at most this many distinct whole values, on another image's grid, is a mask
UNMAPPED_CHOICES = ("refuse", "background")
OUTPUT_ENTRIES = (DATASET_FILE, "imagesTr", "labelsTr", "imagesTs", "labelsTs")


@dataclass
class SourceCase:
    """One case as found in the source: an image (a file, or a DICOM ``series``), an optional label map, its
    tumor_type (None: unknown) and split; or, instead of the label map, binary ``masks`` each holding one label
    (merged by :func:`volgan.data.masks.merge_masks`), and the labels a source datalist says it ``annotated``."""

    name: str
    image: Path
    label: Path | None = None
    tumor_type: int | None = None
    split: str = "training"
    series: DicomSeries | None = None
    masks: list[tuple[Path, int]] = field(default_factory=list)
    annotated: tuple[str, ...] | None = None

    @property
    def labeled(self) -> bool:
        return self.label is not None or bool(self.masks)


def find_source_cases(src: str | os.PathLike, suffix: str | None = None, masks: dict[str, int] | None = None,
                      classes_column: str | None = None) -> tuple[list[SourceCase], str]:
    """The cases of ``src`` and the kind of source it is.

    ``src`` is a datalist (MSD ``dataset.json`` or nnU-Net raw folder, any ``file_ending``), a SPIDER-style
    folder (``images/`` with ``masks/`` or ``labels/`` of matching names), or a folder of pairs (``NAME.ext``
    with ``NAME_label.ext``, ``_seg``, ``_mask``, ``_labels`` or ``_gt``; images without a label are kept,
    unlabeled, in the test split).

    Parameters
    ----------
    src : str | os.PathLike
        the source: a datalist file or folder, a BIDS tree, a SPIDER-style folder or a folder of image/label pairs.
    suffix : str | None
        a BIDS tree's contrast (``T2w``…); None: its only one.
    masks : dict[str, int] | None
        the derivative masks to take ({normalised tail: label}); None: those of known names.
    classes_column : str | None
        a BIDS tree's ``participants.tsv`` column holding ``tumor_type``.

    Returns
    -------
    tuple[list[SourceCase], str]
        the cases (name, image, label map and tumor_type where known, split, DICOM series) and the source's kind in
        words (``"msd datalist"``, ``"images/ and masks/ folders"``, ``"folder of image/label pairs"``…).

    Raises
    ------
    VolganInputError
        naming ``src``, when it does not exist or a label map has no image of its name.
    """
    src = Path(src)
    if not src.exists():
        raise VolganInputError(src, "no such file or folder")
    if src.is_file() or (src / DATASET_FILE).is_file():
        datalist = read_datalist(src)
        return [SourceCase(c.name, c.image, c.label, c.tumor_type, c.split, annotated=c.annotated)
                for c in datalist.cases], f"{datalist.format} datalist"
    from volgan.data.bids import find_bids_cases, is_bids, read_participant_classes

    if is_bids(src):
        classes = read_participant_classes(src, classes_column) if classes_column else {}
        found = find_bids_cases(src, suffix, masks)
        return [SourceCase(c.name, c.image, None, classes.get(c.subject), "training" if c.masks else "test",
                           masks=c.masks) for c in found], "BIDS tree"
    if suffix is not None or classes_column is not None:
        raise VolganInputError(src, "--suffix and --classes-column are for BIDS trees (sub-*/anat/…), and this is "
                                    "not one")
    if (src / "images").is_dir():
        masks = next((src / d for d in ("masks", "labels") if (src / d).is_dir()), None)
        labels = {name: path for name, path, _ in find_volumes(masks)} if masks else {}
        cases = []
        for name, path, series in find_volumes(src / "images"):
            label = labels.pop(name, None)
            cases.append(SourceCase(name, path, label, None, "training" if label else "test", series))
        if labels:
            raise VolganInputError(masks, f"{len(labels)} label map(s) have no image of the same name in "
                                          f"{src / 'images'} (first: {sorted(labels)[0]!r})")
        return cases, "images/ and masks/ folders"
    entries = find_volumes(src)
    stems = {name for name, _, _ in entries}
    found_masks: dict[str, list[tuple[Path, str]]] = {}
    images = []
    for name, path, series in entries:
        owner = mask_owner(name, stems)
        if owner is not None:
            found_masks.setdefault(owner, []).append((path, normal_tail(name[len(owner) + 1:])))
        elif mask_stem(name) != name:
            raise VolganInputError(path, f"named like a label map ({name!r}) but no image {mask_stem(name)!r} is "
                                         f"in {src}")
        else:
            images.append((name, path, series))
    cases = []
    for name, path, series in images:
        case = SourceCase(name, path, None, None, "test", series)
        pairs = found_masks.get(name, [])
        wanted = masks if masks is not None else DERIVATIVE_LABELS
        derived = [(mask, wanted[tail]) for mask, tail in pairs if tail in wanted]
        generic = [mask for mask, tail in pairs if tail not in DERIVATIVE_LABELS and (masks is None
                                                                                     or tail not in masks)]
        if generic and (derived or len(generic) > 1):
            shown = ", ".join(m.name for m, _ in pairs)
            raise VolganInputError(src, f"{len(pairs)} label maps for {name!r} ({shown}); keep one label map, or "
                                        "binary masks of known names only (seg-manual, label-SC_seg, label-CSF_seg, "
                                        "label-lesion), which are merged")
        case.label, case.masks = (generic[0] if generic else None), derived
        case.split = "training" if case.labeled else "test"
        cases.append(case)
    return cases, "folder of image/label pairs"


def read_classes(path: str | os.PathLike) -> dict[str, int | None]:
    """A CSV with columns ``name`` and ``tumor_type`` (a number or a class name; empty for unknown).

    Parameters
    ----------
    path : str | os.PathLike
        the CSV file.

    Returns
    -------
    dict[str, int | None]
        {case name: tumor_type 0–3, or None where the cell is empty}.

    Raises
    ------
    VolganInputError
        naming the file, when it is missing, unreadable, lacks a column, or names an unknown class.
    """
    path = Path(path)
    if not path.is_file():
        raise VolganInputError(path, "no such class table")
    try:
        rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise VolganInputError(path, f"unreadable CSV ({exc})") from None
    if not rows or not {"name", "tumor_type"} <= set(rows[0]):
        raise VolganInputError(path, "expected a CSV with columns name and tumor_type")
    table: dict[str, int | None] = {}
    for n, row in enumerate(rows, start=2):
        text = (row["tumor_type"] or "").strip()
        try:
            table[row["name"].strip()] = tumor_type_from_name(text) if text else None
        except ValueError as exc:
            raise VolganInputError(path, f"line {n}: {exc}") from None
    return table


def _read_label(path: Path, mapping) -> tuple[Volume, Counter]:
    array, affine = read_array(path)
    labels, missing = map_labels(integer_labels(path, array), mapping)
    return Volume(labels, affine, str(path)), missing


@dataclass
class ImportResult:
    """What :func:`import_dataset` wrote: the ``datalist`` file, its ``cases`` (paths in the output folder), their
    ``stats`` (:func:`volgan.data.summary.case_stats`), the ``kind`` of source and the DICOM ``series`` it read
    ({case name: (series folder, number of files)})."""

    datalist: Path
    cases: list[Case]
    stats: list[dict]
    kind: str
    series: dict[str, tuple[Path, int]]


def import_dataset(src: str | os.PathLike, out: str | os.PathLike, label_map: str | os.PathLike | None = None,
                   fmt: str = "msd", unmapped: str = "refuse", classes: str | os.PathLike | None = None,
                   test_fraction: float = 0.0, seed: int = 0, overwrite: bool = False,
                   progress: bool = False, allow_mask_like: bool = False, suffix: str | None = None,
                   masks: dict[str, int] | None = None, classes_column: str | None = None) -> ImportResult:
    """Import ``src`` (:func:`find_source_cases`) into ``out`` as NIfTI with volgan's labels and a datalist.

    Parameters
    ----------
    label_map : preset name, JSON file or None
        How label values translate (:func:`load_label_map`).
    fmt : ``"msd"`` or ``"nnunet"``
        The output layout and datalist.
    unmapped : ``"refuse"`` or ``"background"``
        What to do with label values the map lacks.
    classes : CSV path, optional
        tumor_type per case name (:func:`read_classes`); otherwise a source datalist's, or unknown.
    test_fraction : float
        Share of the labeled cases moved to a class-balanced test split (with ``seed``), when the source has none.
    allow_mask_like : bool
        Import images that look like label maps (:func:`refuse_mask_like_images`) all the same.
    suffix, masks, classes_column
        For a BIDS tree: the contrast, the derivative masks to take and the ``participants.tsv`` column of
        ``tumor_type`` (:func:`find_source_cases`).

    Returns
    -------
    ImportResult
    """
    from tqdm import tqdm

    from volgan.data.summary import case_stats

    if unmapped not in UNMAPPED_CHOICES:
        raise VolganInputError(None, f"--unmapped must be one of {', '.join(UNMAPPED_CHOICES)}, got {unmapped!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise VolganInputError(None, f"--test-fraction must be at least 0 and below 1, got {test_fraction}")
    mapping = load_label_map(label_map)
    found, kind = find_source_cases(src, suffix, masks, classes_column)
    if not found:
        raise VolganInputError(src, "holds no volumes (NIfTI, .mha, .mhd, .nrrd, .nhdr or DICOM series)")
    for case in found:
        check_case_name(case.name, src)
    check_unique_names(found, src)
    names = [c.name for c in found]
    if classes is not None:
        table = read_classes(classes)
        unknown = sorted(set(table) - set(names))
        if unknown:
            raise VolganInputError(classes, f"{len(unknown)} name(s) match no case of {src} (first: {unknown[0]!r})")
        for case in found:
            case.tumor_type = table.get(case.name)
    if test_fraction > 0 and not any(c.split == "test" and c.labeled for c in found):
        labeled = [i for i, c in enumerate(found) if c.labeled]
        chosen = balanced_test_split([found[i].tumor_type for i in labeled], round(test_fraction * len(labeled)), seed)
        for n in chosen:
            found[labeled[n]].split = "test"
    staged, stats, missing, missing_cases, grids = [], [], Counter(), 0, []
    with staged_output_dir(out, OUTPUT_ENTRIES, overwrite) as staging:
        for case in tqdm(found, desc="import", unit="case", disable=not progress):
            image = read_volume(case.image, series=case.series)
            grids.append((image, looks_like_mask(image.array)))
            image_path, label_path = layout_paths(staging, case.name, case.split, fmt)
            labels = np.zeros(image.shape, dtype=np.uint8)
            annotated = case.annotated
            if case.labeled:
                if case.masks:
                    label, annotated = merge_masks(image, case.masks)
                else:
                    label, lost = _read_label(case.label, mapping)
                    check_same_grid(image, label)
                    missing.update(lost)
                    missing_cases += bool(lost)
                    annotated = annotated if mapping is None else mapped_labels(mapping)
                has_tumor = bool((label.array == TUMOR_LABEL).any())
                tumor_known = annotated is None or "tumor" in annotated
                if case.tumor_type is not None and tumor_known and has_tumor != (case.tumor_type != 0):
                    raise VolganInputError(label.path, f"tumor_type {case.tumor_type} but the mapped label map "
                                                       f"{'holds' if has_tumor else 'has no'} tumor label 5")
                labels = label.array
                write_nifti(label, label_path)
            write_nifti(image, image_path)
            staged.append(Case(case.name, image_path, label_path if case.labeled else None,
                               case.tumor_type, "real", case.split, annotated if case.labeled else None))
            stats.append({"orientation": image.orientation, **case_stats(image.array, labels, image.spacing)})
        if missing and unmapped == "refuse":
            shown = ", ".join(f"{v} ({n} voxels)" for v, n in sorted(missing.items())[:6])
            raise VolganInputError(label_map or src, f"label values not in the label map, in {missing_cases} case(s): "
                                                     f"{shown}{' …' if len(missing) > 6 else ''}; add them to the map "
                                                     "or pass --unmapped background")
        if not allow_mask_like:
            refuse_mask_like_images(grids)
        info = {"imported_from": str(Path(src).resolve()), "label_map": str(label_map or "identity"),
                "unmapped": unmapped, "unmapped_voxels": {str(k): v for k, v in missing.items()}}
        write_datalist(staged, staging, fmt, meta=info if fmt == "nnunet" else {"volgan": info})
        cases = [replace(c, image=out_path(out, staging, c.image),
                         label=None if c.label is None else out_path(out, staging, c.label)) for c in staged]
    series = {c.name: (c.series.folder, len(c.series.files)) for c in found if c.series is not None}
    return ImportResult(Path(out) / DATASET_FILE, cases, stats, kind, series)


def looks_like_mask(array: np.ndarray) -> bool:
    """Whether an image's voxels look like a label map's: whole numbers of at most :data:`MASK_LIKE_VALUES` distinct
    values (a binary or multi-label mask), where an MRI image holds hundreds.

    Parameters
    ----------
    array : np.ndarray
        the image (X, Y, Z).

    Returns
    -------
    bool
        True for such an array.
    """
    sample = array.ravel()[:: max(1, array.size // 200_000)]
    if not np.array_equal(sample, np.rint(sample)) or len(np.unique(sample)) > MASK_LIKE_VALUES:
        return False
    return len(np.unique(array)) <= MASK_LIKE_VALUES and np.array_equal(array, np.rint(array))


def refuse_mask_like_images(images: list[tuple[Volume, bool]]) -> None:
    """Refuse an "image" that looks like a label map (:func:`looks_like_mask`) and lies on the grid of another image
    of the source: a mask that its file name did not reveal, which would be imported as a second image.

    Parameters
    ----------
    images : list[tuple[Volume, bool]]
        each image read, and whether it looks like a mask.

    Raises
    ------
    VolganInputError
        naming both files.
    """
    for mask, mask_like in images:
        if not mask_like:
            continue
        for other, other_mask_like in images:
            if other is not mask and not other_mask_like and other.shape == mask.shape \
                    and np.allclose(other.affine, mask.affine, atol=1e-4):
                raise VolganInputError(mask.path, f"looks like a label map of {other.path} (whole numbers of "
                                                  f"{len(np.unique(mask.array))} values, on its grid), not an image; "
                                                  "name it like a mask (NAME_seg, NAME_label-SC_seg…), or pass "
                                                  "--allow-mask-like-images if it is an image")


def out_path(out: str | os.PathLike, staging: Path, path: Path) -> Path:
    """Where a file written at ``path`` inside the staging folder lies once the output folder is in place.

    Parameters
    ----------
    out : str | os.PathLike
        the output folder.
    staging : Path
        the staging folder it is built in.
    path : Path
        a path inside ``staging``.

    Returns
    -------
    Path
        the same path under ``out`` (absolute).
    """
    return Path(out).resolve() / path.relative_to(staging)
