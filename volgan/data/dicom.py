"""DICOM series: found in a tree (:func:`find_dicom_series`), their slice positions checked
(:func:`check_slice_positions`) and read through SimpleITK (:func:`read_dicom_series`), with ITK's LPS geometry
converted to volgan's RAS affine (:func:`from_sitk`, which :mod:`volgan.data.io` uses for every ITK format).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volgan.data.files import first_line
from volgan.errors import VolganInputError

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a tree: its ``uid``, the ``folder`` holding it and its ``files`` (sorted by
    slice position, as GDCM orders them)."""

    uid: str
    folder: Path
    files: tuple[str, ...]


def find_dicom_series(root: str | os.PathLike) -> list[DicomSeries]:
    """Every DICOM series in ``root`` and the folders below it (patient/study/series trees included), in
    folder order, then series UID order.

    Parameters
    ----------
    root : str | os.PathLike
        the top folder.

    Returns
    -------
    list[DicomSeries]
        the series found (uid, folder, files in slice order); empty when there is none.
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    found = []
    warnings = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # GDCM warns on stderr about every folder without a series
    try:
        for folder, dirs, _files in os.walk(root):  # top-down, children in sorted order
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            try:
                uids = reader.GetGDCMSeriesIDs(folder)
            except RuntimeError:
                uids = ()
            for uid in sorted(uids):
                found.append(DicomSeries(uid, Path(folder), tuple(reader.GetGDCMSeriesFileNames(folder, uid))))
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(warnings)
    return found


def read_dicom_series(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """Array (X, Y, Z) and RAS affine of one series found by :func:`find_dicom_series`.

    Parameters
    ----------
    series : DicomSeries
        the series.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        the array (X, Y, Z) and its voxel-to-RAS affine (4×4, mm).

    Raises
    ------
    VolganInputError
        naming the series' folder, when its slices cannot be read as one volume.
    """
    import SimpleITK as sitk

    check_slice_positions(series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    warnings = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # what ITK would warn about was checked above
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolganInputError(series.folder, f"unreadable DICOM series ({first_line(exc)})") from None
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(warnings)
    return from_sitk(image)


SLICE_GAP_TOLERANCE = 0.01  # share of the median slice step by which a step may differ before it is refused


def check_slice_positions(series: DicomSeries) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced along their normal: a missing slice or irregular
    positions would otherwise be read with one even, wrong spacing (ITK only warns).

    The positions are each file's ImagePositionPatient (0020,0032) projected on the normal of its
    ImageOrientationPatient (0020,0037). A series of one or two slices, or one without those tags, is not checked.

    Parameters
    ----------
    series : DicomSeries
        the series, its files in slice order.

    Raises
    ------
    VolganInputError
        naming the series' folder, with the smallest and largest step in mm, when the steps differ by more than 1%
        of their median, when two slices share a position, or when the slices' orientations differ.
    """
    import SimpleITK as sitk

    if len(series.files) < 3:
        return
    positions, orientations = [], set()
    reader = sitk.ImageFileReader()
    for file in series.files:
        reader.SetFileName(file)
        try:
            reader.ReadImageInformation()
            position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
            orientation = tuple(round(float(v), 4) for v in reader.GetMetaData("0020|0037").split("\\"))
        except (RuntimeError, ValueError):
            return  # no usable geometry tags: ITK's own reading decides
        positions.append(position)
        orientations.add(orientation)
    if len(orientations) > 1:
        raise VolganInputError(series.folder, f"the series' slices have {len(orientations)} different orientations; "
                                              "expected one stack")
    row, col = np.asarray(next(iter(orientations))[:3]), np.asarray(next(iter(orientations))[3:])
    depth = np.sort(np.asarray(positions) @ np.cross(row, col))
    steps = np.diff(depth)
    median = float(np.median(steps))
    if median <= 0 or steps.min() <= 0:
        raise VolganInputError(series.folder, "two slices of the series share one position; expected one stack of "
                                              "distinct slices")
    if float(steps.max() - steps.min()) > SLICE_GAP_TOLERANCE * median:
        raise VolganInputError(series.folder, f"slices are not evenly spaced (steps from {steps.min():.3f} to "
                                              f"{steps.max():.3f} mm along the slice normal: a missing slice or "
                                              "irregular positions); reading it with one spacing would be wrong, so "
                                              "export the full series or resample it first")


def from_sitk(image) -> tuple[np.ndarray, np.ndarray]:
    """A SimpleITK image (LPS geometry) as volgan's array and RAS affine.

    Parameters
    ----------
    image : SimpleITK.Image
        a 3D scalar image.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        the (X, Y, Z) array in voxel order and its 4×4 RAS affine (mm).
    """
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (i, j, k)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return array, LPS_FROM_RAS @ affine
