"""Volume I/O: NIfTI, MetaImage (``.mha``/``.mhd``), NRRD and DICOM series in; atomic NIfTI, ``.mha`` or
``.nrrd`` out; one :class:`Volume` in between.

Arrays are indexed (i, j, k) in voxel order as stored; ``affine`` maps (i, j, k, 1) to RAS+ world
coordinates in mm, as in NIfTI and nibabel. ITK's (LPS) geometry, that of DICOM, MetaImage and NRRD, is
converted to that convention on reading and back on writing. NIfTI goes through nibabel, everything else
through SimpleITK.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from volgan.data.dicom import LPS_FROM_RAS, DicomSeries, find_dicom_series, from_sitk, read_dicom_series
from volgan.data.files import atomic_path, first_line
from volgan.errors import VolganInputError
from volgan.labels import NUM_LABELS

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")  # read through SimpleITK
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")  # single-file formats volgan writes
AFFINE_TOLERANCE = 1e-4  # mm; two affines closer than this describe the same grid


@dataclass
class Volume:
    """A 3D array with its voxel-to-RAS affine (4×4, mm) and the file it came from."""

    array: np.ndarray
    affine: np.ndarray
    path: str | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array's three axes."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def orientation(self) -> str:
        """Axis codes of the array, such as ``"RAS"`` or ``"LPS"``."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``, any case), by its name alone.

    Parameters
    ----------
    path : str | os.PathLike
        a file name or path.

    Returns
    -------
    bool
        True for a NIfTI name.
    """
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"case_001.nii.gz"`` → ``"case_001"``.

    Parameters
    ----------
    name : str
        a file name.

    Returns
    -------
    str
        the name without ``.nii.gz`` or ``.nii`` (unchanged without either).
    """
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_volume_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a volume file volgan reads (:data:`VOLUME_SUFFIXES`), by its name alone.

    Parameters
    ----------
    path : str | os.PathLike
        a file name or path.

    Returns
    -------
    bool
        True when its suffix is one of :data:`VOLUME_SUFFIXES`.
    """
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def volume_suffix(name: str | os.PathLike) -> str:
    """The volume suffix of a file name (``".nii.gz"``, ``".mha"``…), ``""`` for anything else.

    Parameters
    ----------
    name : str | os.PathLike
        a file name or path.

    Returns
    -------
    str
        the suffix, lower case.
    """
    lower = str(name).lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), "")


def volume_stem(name: str) -> str:
    """A volume file's name without its suffix: ``"case_001.nii.gz"`` → ``"case_001"``, ``"t2.mha"`` → ``"t2"``.

    Parameters
    ----------
    name : str
        a file name.

    Returns
    -------
    str
        the stem.
    """
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else name


def volume_files(folder: str | os.PathLike) -> list[Path]:
    """The volume files directly in ``folder``, sorted, hidden files and ``.raw`` companions left out; a missing
    folder raises :class:`VolganInputError` naming it.

    Parameters
    ----------
    folder : str | os.PathLike
        the folder to list (not its subfolders).

    Returns
    -------
    list[Path]
        the volume files' paths.
    """
    if not Path(folder).is_dir():
        raise VolganInputError(folder, "no such folder")
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_volume_file(p) and not p.name.startswith("."))


def read_volume(path: str | os.PathLike, *, label: bool = False, series: DicomSeries | None = None) -> Volume:
    """Read a volume file (NIfTI, ``.mha``, ``.mhd``, ``.nrrd``) or a folder holding one DICOM series (at any
    depth) into a :class:`Volume`.

    Parameters
    ----------
    path : str or PathLike
        The file, or the folder.
    label : bool
        Read a label map: uint8, values checked to lie in 0–5. Otherwise an image: float32, finite.
    series : DicomSeries, optional
        Read this series (:func:`find_dicom_series`) of the folder ``path``, which may hold several.

    Returns
    -------
    Volume
        Array (X, Y, Z) in stored voxel order, affine (4×4, mm, RAS). A 4D array with one channel is squeezed.
        Anything that is not one finite 3D volume raises :class:`VolganInputError` naming the file.
    """
    path = Path(path)
    array, affine = read_array(path) if series is None else read_dicom_series(series)
    if label:
        return Volume(_as_label_map(path, array), affine, str(path))
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise VolganInputError(path, f"{bad} voxels are NaN or Inf")
    return Volume(array, affine, str(path))


def read_array(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The stored array (X, Y, Z, any numeric type) and RAS affine (4×4, mm) of a volume file or of the one
    DICOM series in a folder, checked to be 3D with a usable affine; values are not checked.

    Parameters
    ----------
    path : str | os.PathLike
        a volume file, or a folder holding one DICOM series.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        the array (X, Y, Z) as stored and its voxel-to-RAS affine (4×4, mm).

    Raises
    ------
    VolganInputError
        naming the file, when it is unreadable, not 3D, or its affine is singular or not finite.
    """
    path = Path(path)
    if not path.exists():
        raise VolganInputError(path, "no such file or folder")
    if path.is_dir():
        array, affine = _read_dicom_folder(path)
    elif is_nifti(path):
        array, affine = _read_nifti(path)
    elif is_volume_file(path):
        array, affine = _read_itk(path)
    else:
        raise VolganInputError(path, "not a volume: expected a .nii, .nii.gz, .mha, .mhd, .nrrd or .nhdr file or a "
                                     "DICOM series folder")
    array = _as_3d(path, array)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolganInputError(path, "the header's affine is singular or not finite")
    return array, affine


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for files that are not NIfTI
        raise VolganInputError(path, f"not a readable NIfTI volume ({first_line(exc)})") from None
    try:
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # EOFError, zlib.error, OSError, ValueError on truncated data
        raise VolganInputError(path, f"truncated or corrupt voxel data ({first_line(exc)})") from None
    return np.asarray(array), np.asarray(img.affine, dtype=np.float64)


def find_volumes(folder: str | os.PathLike) -> list[tuple[str, Path, DicomSeries | None]]:
    """(name, path, series) of every volume file directly in ``folder`` (series None) and of every DICOM series
    at any depth below it (path: the series' folder). A file is named by its stem; a series by its folder's path
    from ``folder`` with ``/`` written ``_`` (``folder``'s own name for a series in ``folder`` itself), numbered
    when one folder holds several series.

    Parameters
    ----------
    folder : str | os.PathLike
        the folder to search.

    Returns
    -------
    list[tuple[str, Path, DicomSeries | None]]
        (name, path, series) per volume, files first, then series.
    """
    folder = Path(folder)
    found: list[tuple[str, Path, DicomSeries | None]] = [(volume_stem(p.name), p, None) for p in volume_files(folder)]
    series = find_dicom_series(folder)
    per_folder = Counter(s.folder for s in series)
    seen: Counter = Counter()
    for s in series:
        name = "_".join(s.folder.relative_to(folder).parts) or folder.resolve().name
        seen[s.folder] += 1
        found.append((f"{name}_{seen[s.folder]}" if per_folder[s.folder] > 1 else name, s.folder, s))
    return found


def _read_dicom_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    series = find_dicom_series(path)
    if not series:
        files = volume_files(path)
        if files:
            kinds = ", ".join(sorted({volume_suffix(f.name) for f in files}))
            raise VolganInputError(path, f"folder holds no DICOM series but {len(files)} volume file(s) ({kinds}); "
                                         "name the files themselves, or import the folder with volgan import")
        raise VolganInputError(path, "folder holds no DICOM series and no volume files")
    if len(series) > 1:
        where = "; ".join(f"{os.path.relpath(s.folder, path)} ({len(s.files)} files)" for s in series[:4])
        more = " …" if len(series) > 4 else ""
        raise VolganInputError(path, f"folder holds {len(series)} DICOM series ({where}{more}); name one series "
                                     "folder, or import them all with volgan import")
    return read_dicom_series(series[0])


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolganInputError(path, f"not a readable {volume_suffix(path.name)} volume ({first_line(exc)})") from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise VolganInputError(path, f"expected a 3D volume, got {image.GetDimension()}D of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolganInputError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected "
                                     "one number per voxel")
    return from_sitk(image)


def _to_sitk(array: np.ndarray, affine: np.ndarray):
    """(array (X, Y, Z), RAS affine) → SimpleITK image (LPS), the inverse of :func:`_from_sitk`."""
    import SimpleITK as sitk

    lps = LPS_FROM_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def _as_3d(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype.fields is not None or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise VolganInputError(path, f"voxels of type {array.dtype} (RGB or another non-scalar type); expected one "
                                     "number per voxel")
    if np.iscomplexobj(array):
        raise VolganInputError(path, "complex-valued voxels; expected one real number per voxel")
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 4:
        raise VolganInputError(path, f"has {array.shape[3]} channels (shape {array.shape}); expected one")
    if array.ndim != 3:
        raise VolganInputError(path, f"expected a 3D volume, got a {array.ndim}D array of shape {array.shape}")
    if min(array.shape) < 2:
        raise VolganInputError(path, f"expected a 3D volume, got shape {array.shape}")
    return array


def integer_labels(path: str | os.PathLike, array: np.ndarray) -> np.ndarray:
    """A label array's values as int64, refused (naming ``path``) when any is NaN, Inf or not an integer.

    Parameters
    ----------
    path : str | os.PathLike
        the file the array came from, named in the error.
    array : np.ndarray
        the label values (any shape, any numeric type).

    Returns
    -------
    np.ndarray
        the values as int64, same shape.

    Raises
    ------
    VolganInputError
        naming ``path``, for a NaN, an infinity or a fractional value.
    """
    if not np.isfinite(array).all():
        raise VolganInputError(path, "label map holds NaN or Inf voxels")
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise VolganInputError(path, "label map holds non-integer values")
    return rounded.astype(np.int64)


def _as_label_map(path: Path, array: np.ndarray) -> np.ndarray:
    rounded = integer_labels(path, array)
    low, high = int(rounded.min()), int(rounded.max())
    if low < 0 or high >= NUM_LABELS:
        bad = sorted(set(np.unique(rounded).tolist()) - set(range(NUM_LABELS)))
        raise VolganInputError(path, f"label values {bad[:6]} outside 0–{NUM_LABELS - 1}")
    return rounded.astype(np.uint8)


def check_same_grid(image: Volume, label: Volume) -> None:
    """Raise if an image and its label map do not share shape and affine.

    Parameters
    ----------
    image : Volume
        the image.
    label : Volume
        its label map.

    Raises
    ------
    VolganInputError
        naming the label map, when the shapes differ or the affines differ by more than 1e-4 mm.
    """
    if image.shape != label.shape:
        raise VolganInputError(label.path, f"label shape {label.shape} differs from image shape {image.shape}")
    if not np.allclose(image.affine, label.affine, atol=AFFINE_TOLERANCE):
        raise VolganInputError(label.path, f"label affine differs from the image's ({image.path})")


def write_nifti(volume: Volume | np.ndarray, path: str | os.PathLike, affine: np.ndarray | None = None) -> Path:
    """Write a volume to ``path`` (``.nii.gz`` or ``.nii``) atomically: a temporary file, then a rename.

    Parameters
    ----------
    volume : Volume | np.ndarray
        The array (X, Y, Z) with its affine, or a bare array with ``affine``. uint8 arrays (label maps) are
        stored as uint8, everything else as float32.
    path : str | os.PathLike
        The file to write; its folder is made when missing.
    affine : np.ndarray | None
        4×4 voxel-to-world matrix (mm, RAS), for a bare array.

    Returns
    -------
    Path
        The path written.
    """
    if isinstance(volume, Volume):
        array, affine = volume.array, volume.affine
    else:
        array = volume
    if affine is None:
        raise ValueError("write_nifti needs an affine")
    path = Path(path)
    if not is_nifti(path):
        raise VolganInputError(path, "output name must end in .nii.gz or .nii")
    dtype = np.uint8 if array.dtype == np.uint8 else np.float32
    finite = np.isfinite(np.asarray(array, dtype=dtype))
    if not finite.all():
        raise VolganInputError(path, f"not written: {int((~finite).sum())} voxels are NaN or Inf")
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return path


def write_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write a volume atomically in the format its name ends in: NIfTI (:func:`write_nifti`), ``.mha`` or
    ``.nrrd`` (SimpleITK, LPS geometry converted from ``volume.affine``). uint8 arrays stay uint8, everything
    else is written as float32; non-finite voxels are refused.

    Parameters
    ----------
    volume : Volume
        the array (X, Y, Z) and its voxel-to-RAS affine (4×4, mm).
    path : str | os.PathLike
        the output file; its suffix picks the format.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    VolganInputError
        naming ``path``, for an unknown suffix or non-finite voxels.
    """
    import SimpleITK as sitk

    path = Path(path)
    if is_nifti(path):
        return write_nifti(volume, path)
    suffix = volume_suffix(path.name)
    if suffix not in OUTPUT_SUFFIXES:
        raise VolganInputError(path, f"output name must end in one of {', '.join(OUTPUT_SUFFIXES)}")
    dtype = np.uint8 if volume.array.dtype == np.uint8 else np.float32
    array = np.asarray(volume.array, dtype=dtype)
    finite = np.isfinite(array)
    if not finite.all():
        raise VolganInputError(path, f"not written: {int((~finite).sum())} voxels are NaN or Inf")
    with atomic_path(path, suffix=suffix) as tmp:
        sitk.WriteImage(_to_sitk(array, volume.affine), str(tmp), True)
    return path


def reorient(image: np.ndarray, label: np.ndarray, affine: np.ndarray, code: str):
    """Re-store RAS arrays in another axis order; the affine keeps every voxel at its world position.

    Parameters
    ----------
    image : np.ndarray
        (X, Y, Z) image stored in RAS order.
    label : np.ndarray
        (X, Y, Z) label map on the same grid.
    affine : np.ndarray
        Their 4×4 affine (mm).
    code : str
        The axis order to store in, such as ``"LPS"``.

    Returns
    -------
    tuple
        (image, label, affine) in axis order ``code``.
    """
    if code == "RAS":
        return image, label, affine
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                           nib.orientations.axcodes2ornt(tuple(code)))
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
    image = np.ascontiguousarray(nib.orientations.apply_orientation(image, ornt))
    label = np.ascontiguousarray(nib.orientations.apply_orientation(label, ornt))
    return image, label, new_affine
