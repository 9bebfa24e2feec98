"""Datalists: MSD-style ``dataset.json`` and the nnU-Net raw layout, read into one list of :class:`Case`.

MSD form (what ``monai.data.load_decathlon_datalist`` reads)::

    {"training": [{"image": "imagesTr/case_0000.nii.gz", "label": "labelsTr/case_0000.nii.gz",
                   "tumor_type": 2, "source": "real"}, ...],
     "test": [...], "labels": {"0": "background", ...}, ...}

nnU-Net raw form: ``imagesTr/CASE_0000.nii.gz``, ``labelsTr/CASE.nii.gz`` (``imagesTs``/``labelsTs`` for
the test split) and a v2 ``dataset.json``; volgan keeps each case's ``tumor_type`` and ``source`` under
its ``"volgan"`` key, which nnU-Net ignores. Paths in both files are relative to the file's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volgan.data.files import write_text
from volgan.data.io import volume_stem
from volgan.errors import VolganInputError
from volgan.labels import LABELS, SOURCES, TUMOR_TYPES, annotated_labels

SPLITS = ("training", "test")  # MSD keys; a validation split is drawn from "training" by the trainer
DATASET_FILE = "dataset.json"
FORMATS = ("msd", "nnunet")


@dataclass
class Case:
    """One labeled volume. ``image``/``label`` are absolute paths; ``tumor_type`` is None when unknown.

    ``annotated`` names the labels the label map annotates (``("cord",)`` for a cord-only mask); None means all
    six. Where a partially annotated map says 0, the voxel is one of the unannotated labels or background: unknown,
    not background (:func:`volgan.labels.annotated_labels`)."""

    name: str
    image: Path
    label: Path | None
    tumor_type: int | None
    source: str = "real"
    split: str = "training"
    annotated: tuple[str, ...] | None = None

    def as_dict(self) -> dict:
        """Absolute-path dict in the form MONAI and torchio loaders take."""
        out = {"name": self.name, "image": str(self.image), "source": self.source, "split": self.split}
        if self.label is not None:
            out["label"] = str(self.label)
        if self.tumor_type is not None:
            out["tumor_type"] = self.tumor_type
        if self.annotated is not None:
            out["annotated"] = list(self.annotated)
        return out


@dataclass
class Datalist:
    cases: list[Case]
    path: Path | None = None
    format: str = "msd"
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Case]:
        return [c for c in self.cases if c.split == name]


MAX_NAME_LENGTH = 200


def check_case_name(name: object, where: str | os.PathLike | None = None) -> str:
    """``name`` if it can name a case's files, else :class:`VolganInputError` naming ``where``.

    This is the one check every case name passes before it becomes part of a path (datalists, imports, the study's
    data stage, synthesis): a case name is a plain file name, so nothing built from it can leave its folder.

    Parameters
    ----------
    name : object
        the name as found (a datalist's ``name``, a file's stem, a DICOM folder's path).
    where : str | os.PathLike | None
        the file or folder it came from, named in the error.

    Returns
    -------
    str
        ``name``, unchanged.

    Raises
    ------
    VolganInputError
        naming ``where``, when ``name`` is not a string, is empty, is ``.`` or ``..``, starts with a dot, holds a path
        separator, a control character or a NUL, or is longer than 200 characters.
    """
    shown = repr(name) if not isinstance(name, str) else repr(name[:60] + ("…" if len(name) > 60 else ""))
    if not isinstance(name, str):
        raise VolganInputError(where, f"case name {shown} is a {type(name).__name__}; expected a string")
    if not name.strip():
        raise VolganInputError(where, "a case name is empty")
    if "/" in name or "\\" in name or name.startswith(".") or os.path.isabs(name):
        raise VolganInputError(where, f"case name {shown} is a path, not a plain name (it holds '/' or '\\' or "
                                      "starts with '.'); files are named by case names, so it could write outside "
                                      "the output folder")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise VolganInputError(where, f"case name {shown} holds a control character")
    if len(name) > MAX_NAME_LENGTH:
        raise VolganInputError(where, f"case name {shown} is {len(name)} characters long; at most "
                                      f"{MAX_NAME_LENGTH}")
    return name


def check_unique_names(cases: list[Case], where: str | os.PathLike | None = None) -> None:
    """Refuse two cases of one name (their files would overwrite each other).

    Parameters
    ----------
    cases : list[Case]
        the cases.
    where : str | os.PathLike | None
        the datalist or folder they came from, named in the error.

    Raises
    ------
    VolganInputError
        naming ``where`` and the first name used twice.
    """
    seen: set[str] = set()
    for case in cases:
        if case.name in seen:
            raise VolganInputError(where, f"two cases are both named {case.name!r}; case names must be unique")
        seen.add(case.name)


def dataset_file(path: str | os.PathLike) -> Path:
    """The ``dataset.json`` that ``path`` names, or the one inside the folder ``path``.

    Parameters
    ----------
    path : str | os.PathLike
        a ``dataset.json`` file, or a folder holding one (an MSD data set or an nnU-Net raw folder).

    Returns
    -------
    Path
        the ``dataset.json`` file; it need not exist.
    """
    path = Path(path)
    return path / DATASET_FILE if path.is_dir() else path


def read_datalist(path: str | os.PathLike, *, check_files: bool = True) -> Datalist:
    """Read an MSD or nnU-Net ``dataset.json`` (or the folder holding it).

    Parameters
    ----------
    path : str | os.PathLike
        the ``dataset.json`` or its folder.
    check_files : bool
        raise when a listed image or label file is missing.

    Returns
    -------
    Datalist
        The :class:`Datalist`: its path, form and cases (image and label paths, ``tumor_type``, ``source``,
        ``split``).

    Raises
    ------
    VolganInputError
        naming the file, when it is missing, not JSON, or not a datalist volgan reads.
    """
    file = dataset_file(path)
    if not file.is_file():
        raise VolganInputError(file, "no such datalist")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VolganInputError(file, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise VolganInputError(file, "expected a JSON object with a 'training' list or an nnU-Net dataset")
    if "training" in doc or "test" in doc:
        cases = _read_msd(file, doc)
        fmt = "msd"
    elif "file_ending" in doc or "channel_names" in doc:
        cases = _read_nnunet(file, doc)
        fmt = "nnunet"
    else:
        raise VolganInputError(file, "neither an MSD datalist ('training' key) nor an nnU-Net dataset.json")
    if not cases:
        raise VolganInputError(file, "datalist holds no cases")
    if check_files:
        for case in cases:
            for key in ("image", "label"):
                target = getattr(case, key)
                if target is not None and not target.exists():
                    raise VolganInputError(file, f"case {case.name!r}: {key} {target} does not exist")
    return Datalist(cases, file, fmt, {k: v for k, v in doc.items() if k not in SPLITS})


def _read_msd(file: Path, doc: dict) -> list[Case]:
    base = file.parent
    cases = []
    for split in SPLITS:
        entries = doc.get(split, [])
        if not isinstance(entries, list):
            raise VolganInputError(file, f"'{split}' must be a list")
        for n, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, dict) or "image" not in entry:
                raise VolganInputError(file, f"{split} entry {n} has no 'image'")
            for key in ("image", "label"):
                if entry.get(key) is not None and not isinstance(entry[key], str):
                    raise VolganInputError(file, f"{split} entry {n}: '{key}' is a {type(entry[key]).__name__}; "
                                                 "expected a path string")
            image = (base / entry["image"]).resolve()
            label = (base / entry["label"]).resolve() if entry.get("label") else None
            name = check_case_name(entry["name"] if "name" in entry else volume_stem(image.name), file)
            cases.append(
                Case(name, image, label, _tumor_type(file, name, entry.get("tumor_type")),
                     _source(file, name, entry.get("source", "real")), split,
                     _annotated(file, name, entry.get("annotated")))
            )
    return cases


def _read_nnunet(file: Path, doc: dict) -> list[Case]:
    base = file.parent
    ending = doc.get("file_ending", ".nii.gz")
    extra = doc.get("volgan", {}).get("cases", {})
    cases = []
    for split, images_dir, labels_dir in (("training", "imagesTr", "labelsTr"), ("test", "imagesTs", "labelsTs")):
        folder = base / images_dir
        if not folder.is_dir():
            continue
        for image in sorted(folder.glob(f"*_0000{ending}")):
            name = check_case_name(image.name[: -len(f"_0000{ending}")], file)
            label = base / labels_dir / f"{name}{ending}"
            info = extra.get(name, {}) if isinstance(extra, dict) else {}
            if not isinstance(info, dict):
                raise VolganInputError(file, f"case {name!r}: its 'volgan' entry is not an object")
            cases.append(
                Case(name, image.resolve(), label.resolve() if label.exists() or split == "training" else None,
                     _tumor_type(file, name, info.get("tumor_type")), _source(file, name, info.get("source", "real")),
                     split, _annotated(file, name, info.get("annotated")))
            )
    return cases


def _tumor_type(file: Path, name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in TUMOR_TYPES:
        raise VolganInputError(file, f"case {name!r}: tumor_type {value!r} is not one of {sorted(TUMOR_TYPES)}")
    return value


def _annotated(file: Path, name: str, value) -> tuple[str, ...] | None:
    if value is None:
        return None
    try:
        return annotated_labels(value)
    except ValueError as exc:
        raise VolganInputError(file, f"case {name!r}: annotated {exc}") from None


def _source(file: Path, name: str, value) -> str:
    if value not in SOURCES:
        raise VolganInputError(file, f"case {name!r}: source {value!r} is not one of {list(SOURCES)}")
    return value


def msd_document(cases: list[Case], root: Path, meta: dict | None = None) -> dict:
    """The MSD ``dataset.json`` for ``cases`` with paths relative to ``root``.

    Parameters
    ----------
    cases : list[Case]
        the cases, each with its image, label map, split and ``tumor_type``.
    root : Path
        the folder the file paths are written relative to (the datalist's own folder).
    meta : dict | None
        extra top-level keys (name, description, the phantom configuration…), or None.

    Returns
    -------
    dict
        the MSD document: name, description, modality, the label and tumor_type tables, ``numTraining``/``numTest`` and
        the ``training``/``test`` entries (name, image, label, tumor_type where known, source).
    """
    doc = {
        "name": "volgan",
        "description": "Labeled spinal MRI volumes (volgan)",
        "tensorImageSize": "3D",
        "modality": {"0": "MR"},
        "labels": {str(k): v for k, v in LABELS.items()},
        "tumor_types": {str(k): v for k, v in TUMOR_TYPES.items()},
        **(meta or {}),
    }
    for split in SPLITS:
        rows = [c for c in cases if c.split == split]
        doc[f"num{split.capitalize()}"] = len(rows)
        doc[split] = [_msd_entry(c, root) for c in rows]
    return doc


def _msd_entry(case: Case, root: Path) -> dict:
    entry = {"name": case.name, "image": _rel(case.image, root)}
    if case.label is not None:
        entry["label"] = _rel(case.label, root)
    if case.tumor_type is not None:
        entry["tumor_type"] = case.tumor_type
    if case.annotated is not None:
        entry["annotated"] = list(case.annotated)
    entry["source"] = case.source
    return entry


def nnunet_document(cases: list[Case], meta: dict | None = None) -> dict:
    """The nnU-Net v2 ``dataset.json`` for ``cases`` (files laid out by :func:`nnunet_paths`).

    Parameters
    ----------
    cases : list[Case]
        the cases, laid out by :func:`layout_paths` with ``fmt="nnunet"``.
    meta : dict | None
        extra top-level keys, or None.

    Returns
    -------
    dict
        the nnU-Net v2 document: ``channel_names``, ``labels``, ``numTraining``, ``file_ending``, and under ``volgan``
        the tumor_type table and each case's tumor_type, source and split.
    """
    return {
        "channel_names": {"0": "MR"},
        "labels": {v: k for k, v in LABELS.items()},
        "numTraining": sum(c.split == "training" for c in cases),
        "file_ending": ".nii.gz",
        "volgan": {
            **(meta or {}),
            "tumor_types": {str(k): v for k, v in TUMOR_TYPES.items()},
            "cases": {c.name: {"tumor_type": c.tumor_type, "source": c.source, "split": c.split,
                               **({"annotated": list(c.annotated)} if c.annotated is not None else {})}
                      for c in cases},
        },
    }


def layout_paths(root: Path, name: str, split: str, fmt: str) -> tuple[Path, Path]:
    """Where a case's image and label go under ``root`` in format ``fmt`` (``msd`` or ``nnunet``).

    Parameters
    ----------
    root : Path
        the data set's folder.
    name : str
        the case name.
    split : str
        ``"training"`` or ``"test"``.
    fmt : str
        ``"msd"`` (``imagesTr/NAME.nii.gz``) or ``"nnunet"`` (``imagesTr/NAME_0000.nii.gz``).

    Returns
    -------
    tuple[Path, Path]
        the image path and the label map path.

    Raises
    ------
    ValueError
        for a format other than ``msd`` and ``nnunet``.
    """
    check_case_name(name, root)
    suffix = "Tr" if split == "training" else "Ts"
    if fmt == "nnunet":
        return root / f"images{suffix}" / f"{name}_0000.nii.gz", root / f"labels{suffix}" / f"{name}.nii.gz"
    if fmt == "msd":
        return root / f"images{suffix}" / f"{name}.nii.gz", root / f"labels{suffix}" / f"{name}.nii.gz"
    raise ValueError(f"unknown datalist format {fmt!r}; expected one of {FORMATS}")


def write_datalist(cases: list[Case], root: str | os.PathLike, fmt: str = "msd", meta: dict | None = None) -> Path:
    """Write ``root/dataset.json`` for cases whose files already lie under ``root``.

    Parameters
    ----------
    cases : list[Case]
        the cases, their paths under ``root``.
    root : str | os.PathLike
        the dataset folder.
    fmt : str
        ``"msd"`` or ``"nnunet"``.
    meta : dict | None
        extra entries of the document (such as ``{"volgan": {...}}``).

    Returns
    -------
    Path
        The path written (atomically).
    """
    root = Path(root)
    doc = msd_document(cases, root, meta) if fmt == "msd" else nnunet_document(cases, meta)
    return write_text(root / DATASET_FILE, json.dumps(doc, indent=2) + "\n")


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(root).resolve())


def balanced_test_split(tumor_types: list[int | None], n_test: int, seed: int) -> set[int]:
    """Indices of a test set with the same number of cases of every class present (``n_test // classes``
    each, fewer if a class is short), drawn with ``seed``; the rest is the training pool.

    Parameters
    ----------
    tumor_types : list[int | None]
        each case's ``tumor_type`` (0–3), None where unknown.
    n_test : int
        the test set's size asked for.
    seed : int
        fixes the draw.

    Returns
    -------
    set[int]
        the indices of the test cases.
    """
    classes = sorted({t for t in tumor_types}, key=lambda t: -1 if t is None else t)
    if n_test <= 0 or not classes:
        return set()
    per_class = n_test // len(classes)
    rng = np.random.default_rng([seed, 0x5E1])
    chosen: set[int] = set()
    for cls in classes:
        members = [i for i, t in enumerate(tumor_types) if t == cls]
        take = min(per_class, max(len(members) - 1, 0))  # keep at least one of each class for training
        chosen.update(int(i) for i in rng.permutation(members)[:take])
    return chosen


def check_cases(cases: list[Case], datalist: Path | None = None) -> list[dict]:
    """Open every case and check it: a finite 3D image, a label map of values 0–5 on the same grid, and
    label 5 present exactly when ``tumor_type`` ≠ 0. Returns :func:`volgan.data.summary.case_stats` per case.

    Parameters
    ----------
    cases : list[Case]
        the cases to open.
    datalist : Path | None
        the datalist file, named in error messages (None: the case files are named).

    Returns
    -------
    list[dict]
        one dict per case, in order: its ``orientation`` (axis codes), ``ras_spacing_mm`` (mm along R, A, S) and
        :func:`volgan.data.summary.case_stats`.

    Raises
    ------
    VolganInputError
        naming the file and what is wrong, at the first case that fails a check.
    """
    from volgan.data.io import check_same_grid, read_volume
    from volgan.data.summary import case_stats, ras_spacing
    from volgan.labels import TUMOR_LABEL

    check_unique_names(cases, datalist)
    stats = []
    for case in cases:
        image = read_volume(case.image)
        row = {"orientation": image.orientation, "ras_spacing_mm": ras_spacing(image.affine)}
        label_array = np.zeros(image.shape, dtype=np.uint8)
        if case.label is not None:
            label = read_volume(case.label, label=True)
            check_same_grid(image, label)
            label_array = label.array
            if case.annotated is not None:
                from volgan.labels import label_number

                allowed = {0, *(label_number(n) for n in case.annotated)}
                stray = sorted(set(np.unique(label_array).tolist()) - allowed)
                if stray:
                    raise VolganInputError(case.label, f"holds label value(s) {stray} that its datalist entry does "
                                                       f"not list as annotated ({', '.join(case.annotated)})")
            has_tumor = bool((label.array == TUMOR_LABEL).any())
            if case.tumor_type is not None and has_tumor != (case.tumor_type != 0):
                raise VolganInputError(case.label, f"tumor_type {case.tumor_type} in {datalist} but the label map "
                                                   f"{'holds' if has_tumor else 'has no'} tumor label 5")
        row.update(case_stats(image.array, label_array, image.spacing))
        stats.append(row)
    return stats
