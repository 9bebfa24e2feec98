"""The real-MRI check: a trained segmenter-classifier run on real scans, scored on the labels each scan's
reference annotates, with the tumor probability it gives the healthy ones.

Phantom test sets say how a model does on phantoms; this says whether that carries over to real MRI. volgan
ships two real T2 scans with cord masks (``data/real``, the Spinal Cord Toolbox's testing data, MIT); a user adds
their own (``volgan study --real-check DIR|DATALIST``): any datalist, or any folder ``volgan import`` reads (pairs,
BIDS). A reference that annotates the cord alone is scored on the cord alone: the rest of it is unlabeled, not
background.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from volgan.data.datalist import read_datalist
from volgan.data.files import strict_json, write_text
from volgan.data.io import read_volume, write_volume
from volgan.errors import VolganInputError
from volgan.labels import LABELS, label_number

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "real"  # the repository's data/real
# the shipped scans and their masks (file names in data/real); both healthy, cord annotated
SHIPPED = (("t2", "t2.nii.gz", "t2_seg-manual.nii.gz"),
           ("pam50_t2", "PAM50_small_t2.nii.gz", "PAM50_small_cord.nii.gz"))
HEALTHY_CUTOFF = 0.5  # a healthy scan called a tumor: tumor probability at or above this


@dataclass(frozen=True)
class RealScan:
    """One real scan for the check: its ``name``, ``image``, reference ``label`` map (None: none), the labels the
    reference ``annotated`` (None: all) and its ``tumor_type`` (0: healthy; None: unknown)."""

    name: str
    image: Path
    label: Path | None
    annotated: tuple[str, ...] | None
    tumor_type: int | None


def shipped_scans(folder: Path = SHIPPED_DIR) -> list[RealScan]:
    """The real scans shipped in ``data/real`` (an empty list where the folder is missing, as in an installed wheel).
    Their masks are binary (1 = cord), as the Spinal Cord Toolbox ships them; :func:`check_model` reads a binary
    mask of one annotated label as that label.

    Parameters
    ----------
    folder : Path
        the folder holding them.

    Returns
    -------
    list[RealScan]
        the scans, healthy, with their cord masks.
    """
    scans = []
    for name, image, label in SHIPPED:
        if (folder / image).is_file() and (folder / label).is_file():
            scans.append(RealScan(name, folder / image, folder / label, ("cord",), 0))
    return scans


def real_check_datalist(source: str | os.PathLike, folder: Path) -> Path:
    """The datalist of the user's real scans: ``source`` itself when it is a datalist, otherwise ``source`` (a folder
    ``volgan import`` reads: pairs, BIDS) imported into ``folder``, so that masks named the community's way are
    merged and mapped and partial annotation is recorded.

    Parameters
    ----------
    source : str | os.PathLike
        a ``dataset.json``, the folder holding one, or a folder of scans and masks.
    folder : Path
        where a folder source is imported to (replaced).

    Returns
    -------
    Path
        the datalist.

    Raises
    ------
    VolganInputError
        naming the source, when it cannot be read or holds no scan.
    """
    source = Path(source)
    if source.is_file() or (source / "dataset.json").is_file():
        return read_datalist(source).path
    from volgan.data.importer import import_dataset

    return import_dataset(source, folder, overwrite=True).datalist


def user_scans(datalist: str | os.PathLike) -> list[RealScan]:
    """Every case of a datalist as a real scan for the check.

    Parameters
    ----------
    datalist : str | os.PathLike
        the datalist (:func:`real_check_datalist`).

    Returns
    -------
    list[RealScan]
        the scans.
    """
    return [RealScan(c.name, Path(c.image), None if c.label is None else Path(c.label), c.annotated, c.tumor_type)
            for c in read_datalist(datalist).cases]


def scan_digest(scans: list[RealScan]) -> list[list[str]]:
    """What identifies the scans for a study stage's hash: each name with the SHA-256 of its image and label files.

    Parameters
    ----------
    scans : list[RealScan]
        the scans.

    Returns
    -------
    list[list[str]]
        [name, digest] per scan.
    """
    out = []
    for scan in scans:
        digest = hashlib.sha256()
        for path in (scan.image, scan.label):
            if path is not None:
                digest.update(Path(path).read_bytes())
        digest.update(json.dumps([scan.annotated, scan.tumor_type]).encode())
        out.append([scan.name, digest.hexdigest()[:16]])
    return out


def check_model(model_path: Path, scans: list[RealScan], predictions: Path | None = None,
                precision: str = "fp32") -> list[dict]:
    """Run one trained model on real scans.

    Parameters
    ----------
    model_path : Path
        a spine_segcls checkpoint with its model card.
    scans : list[RealScan]
        the scans.
    predictions : Path | None
        a folder to write each scan's predicted label map into (``NAME_seg.nii.gz``, the scan's own grid), for the
        report's figure.
    precision : str
        ``"fp32"`` or ``"bf16"``.

    Returns
    -------
    list[dict]
        per scan: ``scan``, ``annotated`` (label names scored), ``dice`` ({label name: Dice} over the annotated
        labels only; None where both masks are empty), ``tumor_probability``, what it is read from
        (``tumor_evidence_mm3``, the largest predicted tumor component's mass, and ``tumor_contrast``, that
        component against the tissue around it, None without a tumor voxel;
        :func:`volgan.segcls.pipeline.tumor_call`), ``tumor_type`` (0 healthy, None unknown) and
        ``healthy_called_tumor`` (None unless healthy).
    """
    from volgan.evaluation.metrics import confusion_counts, dice_iou
    from volgan.segcls.predict import load_model, predict

    model = load_model(model_path)
    rows = []
    for scan in scans:
        image = read_volume(scan.image)
        prediction = predict(model, image, precision=precision)
        if predictions is not None:
            write_volume(prediction.label, predictions / f"{scan.name}_seg.nii.gz")
        dice = {}
        if scan.label is not None:
            reference = read_volume(scan.label, label=True)
            if scan.annotated is not None and len(scan.annotated) == 1 and reference.array.max() <= 1:
                reference.array = reference.array * np.uint8(label_number(scan.annotated[0]))  # a binary mask of it
            if reference.shape != image.shape or not np.allclose(reference.affine, image.affine, atol=1e-4):
                raise VolganInputError(scan.label, f"reference is not on the grid of {scan.image}")
            scored = [k for k in LABELS if k] if scan.annotated is None else \
                [label_number(n) for n in scan.annotated]
            counts = confusion_counts(prediction.label.array, reference.array, scored)
            dice = {LABELS[k]: dice_iou(counts[k])[0] for k in scored}
        p_tumor = float(prediction.tumor_probability)
        rows.append({"scan": scan.name, "annotated": list(scan.annotated) if scan.annotated else
                     [LABELS[k] for k in LABELS if k], "dice": dice, "tumor_probability": round(p_tumor, 6),
                     "tumor_evidence_mm3": round(float(prediction.tumor_evidence_mm3), 3),
                     "tumor_contrast": round(float(prediction.tumor_contrast), 3), "tumor_type": scan.tumor_type,
                     "healthy_called_tumor": None if scan.tumor_type != 0 else p_tumor >= HEALTHY_CUTOFF})
    return strict_json(rows)


def write_check(folder: Path, model_path: Path, scans: list[RealScan], precision: str = "fp32") -> list[dict]:
    """A study stage's real-MRI check: :func:`check_model` into ``folder/real_mri.json``, with the predictions in
    ``folder/predictions``.

    Parameters
    ----------
    folder : Path
        the stage's fresh folder.
    model_path : Path
        the trained model.
    scans : list[RealScan]
        the scans.
    precision : str
        ``"fp32"`` or ``"bf16"``.

    Returns
    -------
    list[dict]
        the rows written.
    """
    rows = check_model(model_path, scans, folder / "predictions", precision)
    write_text(folder / "real_mri.json", json.dumps({"scans": [asdict(s) | {"image": str(s.image), "label": str(
        s.label) if s.label else None} for s in scans], "rows": rows}, indent=1) + "\n")
    return rows
