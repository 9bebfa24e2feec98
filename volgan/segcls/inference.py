"""Inference over files: every volume of the inputs (NIfTI, MetaImage, NRRD files or DICOM series folders)
through :func:`volgan.segcls.predict.predict`, its label map written in the input's own grid, and one table
(``predictions.csv`` and ``.json``) of tumor probabilities and types, optionally with Grad-CAM maps."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from volgan.data.io import (
    OUTPUT_SUFFIXES,
    DicomSeries,
    atomic_path,
    find_volumes,
    first_line,
    read_volume,
    volume_stem,
    volume_suffix,
    write_text,
    write_volume,
)
from volgan.errors import VolganInputError
from volgan.labels import TUMOR_TYPES
from volgan.segcls.predict import LoadedModel, predict
from volgan.training import progress_of

TABLE_FIELDS = ["input", "output", "gradcam", "tumor_probability", "predicted_tumor_type",
                *[f"p_{name}" for name in TUMOR_TYPES.values()], "error"]


def expand_inputs(inputs: list[str | os.PathLike]) -> list[tuple[Path, str, DicomSeries | None]]:
    """Every volume the inputs name: (path, the stem its outputs are named by, its DICOM series or None).

    A file stays a file (stem: its name less the suffix). A folder gives the volume files in it and every DICOM
    series at any depth below it (:func:`volgan.data.io.find_volumes`).

    Parameters
    ----------
    inputs : list[str | os.PathLike]
        volume files, folders of them, and folders holding DICOM series.

    Returns
    -------
    list[tuple[Path, str, DicomSeries | None]]
        (path, output stem, series) per volume, in order.

    Raises
    ------
    VolganInputError
        naming a folder that holds no volume file and no DICOM series.
    """
    found: list[tuple[Path, str, DicomSeries | None]] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            found.append((item, volume_stem(item.name), None))
            continue
        volumes = find_volumes(item)
        if not volumes:
            raise VolganInputError(item, "folder holds no volume files (.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr) and "
                                         "no DICOM series")
        found.extend((path, name, series) for name, path, series in volumes)
    return found


def output_suffix(path: Path, output_ext: str | None) -> str:
    """The suffix of the outputs for input ``path``: ``output_ext`` when given, otherwise the input's own format
    (``.mhd`` → ``.mha``, ``.nhdr`` → ``.nrrd``, a DICOM series → ``.nii.gz``).

    Parameters
    ----------
    path : Path
        the input file (or a DICOM series' folder).
    output_ext : str | None
        the suffix asked for, or None.

    Returns
    -------
    str
        the suffix, such as ``".nii.gz"``.
    """
    if output_ext:
        ext = output_ext if output_ext.startswith(".") else f".{output_ext}"
        if ext.lower() not in OUTPUT_SUFFIXES:
            raise VolganInputError(None, f"--output-ext must be one of {', '.join(OUTPUT_SUFFIXES)}, "
                                         f"got {output_ext!r}")
        return ext.lower()
    suffix = volume_suffix(path.name)
    return {".mhd": ".mha", ".nhdr": ".nrrd", "": ".nii.gz"}.get(suffix, suffix)


def stem_of_output(path: str | os.PathLike) -> str:
    """The case name in an output file name: ``"case_seg.mha"`` → ``"case"``.

    Parameters
    ----------
    path : str | os.PathLike
        an output file of ``volgan infer`` (``NAME_seg.ext``) or any volume file.

    Returns
    -------
    str
        the case name (the file's stem, less a trailing ``_seg`` or ``_gradcam``).
    """
    stem = volume_stem(Path(path).name)
    for tail in ("_seg", "_gradcam"):
        if stem.endswith(tail):
            return stem[: -len(tail)]
    return stem


def check_overlap(overlap: float) -> float:
    """The sliding-window overlap, refused unless 0 ≤ overlap < 1 (MONAI's sliding window needs that).

    Parameters
    ----------
    overlap : float
        the overlap asked for.

    Returns
    -------
    float
        ``overlap``.

    Raises
    ------
    VolganInputError
        naming ``--overlap``, outside [0, 1).
    """
    if not (0.0 <= overlap < 1.0):
        raise VolganInputError(None, f"--overlap must be at least 0 and below 1, got {overlap}")
    return overlap


def check_sw_batch_size(sw_batch_size: int) -> int:
    """The number of sliding windows per forward pass, refused unless a positive whole number.

    Parameters
    ----------
    sw_batch_size : int
        the number asked for.

    Returns
    -------
    int
        ``sw_batch_size``.

    Raises
    ------
    VolganInputError
        naming ``--sw-batch-size``, for anything but a whole number of at least 1.
    """
    if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise VolganInputError(None, f"--sw-batch-size must be a whole number of at least 1, got {sw_batch_size}")
    return sw_batch_size


def _previous_rows(table_json: Path) -> list[dict]:
    try:
        rows = json.loads(table_json.read_text(encoding="utf-8"))
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    except (OSError, ValueError):
        return []


def run_inference(model: LoadedModel, inputs: list[str | os.PathLike], out: str | os.PathLike,
                  gradcam: bool = False, overlap: float = 0.25, sw_batch_size: int = 4, overwrite: bool = False,
                  progress: bool = False, precision: str = "fp32", output_ext: str | None = None) -> list[dict]:
    """Predict every input and write the label maps and a table.

    A bad input (unreadable, not 3D, constant intensity…) is listed with a one-line error and gets no output
    file; the others go on. Existing outputs are never replaced without ``overwrite``; with it, rows of the
    earlier table whose outputs this run did not replace are kept, so the table lists every output in the folder.

    Parameters
    ----------
    model : LoadedModel
        the network and its preprocessing (:func:`volgan.segcls.predict.load_model`).
    inputs : list[str | os.PathLike]
        volume files (NIfTI, MetaImage, NRRD) and folders of them or of DICOM series.
    out : str | os.PathLike
        the output folder.
    gradcam : bool
        also write each volume's Grad-CAM heat map (``<name>_gradcam<ext>``, in [0, 1]).
    overlap : float
        the sliding windows' overlap, in [0, 1).
    sw_batch_size : int
        sliding windows per forward pass.
    overwrite : bool
        replace outputs of these inputs already in ``out``.
    progress : bool
        a bar on a terminal, log lines elsewhere (:func:`volgan.training.progress_of`).
    precision : str
        ``"fp32"`` or ``"bf16"``.
    output_ext : str | None
        the outputs' suffix (None: the input's own format, :func:`output_suffix`).

    Returns
    -------
    list[dict]
        This run's rows of ``predictions.csv`` / ``predictions.json``: input, output, tumor probability,
        predicted type, the four type probabilities and the error, if any. Each ``<name>_seg<ext>`` has its
        input's shape and affine.
    """
    from volgan.data.io import check_writable_dir

    out = Path(out)
    check_overlap(overlap)
    check_sw_batch_size(sw_batch_size)
    check_writable_dir(out)
    table_csv, table_json = out / "predictions.csv", out / "predictions.json"
    if (table_csv.exists() or table_json.exists()) and not overwrite:
        raise VolganInputError(out, "already holds predictions.csv; pass --overwrite to replace")
    inputs_found = expand_inputs(inputs)
    if not inputs_found:
        raise VolganInputError(None, "no input volumes given")
    outputs = [(path, stem, series, output_suffix(path if series is None else Path("series"), output_ext))
               for path, stem, series in inputs_found]
    stems = [stem for _, stem, _, _ in outputs]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise VolganInputError(None, f"two inputs would both write {dup}_seg")
    kinds = ("_seg", "_gradcam") if gradcam else ("_seg",)
    existing = [out / f"{stem}{kind}{ext}" for _, stem, _, ext in outputs for kind in kinds
                if (out / f"{stem}{kind}{ext}").exists()]
    if existing and not overwrite:
        raise VolganInputError(existing[0], f"already exists ({len(existing)} output(s) of these inputs are in "
                                            f"{out}); pass --overwrite to replace")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, stem, series, ext in progress_of(outputs, "infer", "volume", progress):
        row = {"input": str(path), "output": "", "gradcam": "", "error": ""}
        try:
            volume = read_volume(path, series=series)
            prediction = predict(model, volume, overlap=overlap, sw_batch_size=sw_batch_size,
                                 precision=precision)
            seg_path = out / f"{stem}_seg{ext}"
            cam_volume = None
            if gradcam:
                from volgan.segcls.gradcam import gradcam_volume

                cam_volume = gradcam_volume(model, prediction, volume)
            write_volume(prediction.label, seg_path)
            row["output"] = str(seg_path)
            if cam_volume is not None:
                cam_path = out / f"{stem}_gradcam{ext}"
                write_volume(cam_volume, cam_path)
                row["gradcam"] = str(cam_path)
            probs = prediction.type_probabilities
            row.update({f"p_{name}": round(float(probs[k]), 6) for k, name in TUMOR_TYPES.items()})
            row["tumor_probability"] = round(prediction.tumor_probability, 6)
            row["predicted_tumor_type"] = int(np.argmax(probs))
        except VolganInputError as exc:
            row["error"] = str(exc) if exc.path else f"{path}: {exc.what}"
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad volume must not abort the batch
            row["error"] = f"{path}: {type(exc).__name__}: {first_line(exc)}"
        if row["error"]:
            earlier = out / f"{stem}_seg{ext}"
            if earlier.exists():
                row["error"] += f" (the {earlier.name} in the folder is from an earlier run)"
        rows.append({k: row.get(k, "") for k in TABLE_FIELDS})
    written = {r["output"] for r in rows if r["output"]}
    ran = {r["input"] for r in rows}
    kept = [r for r in _previous_rows(table_json) if r.get("input") not in ran and r.get("output")
            and r["output"] not in written and Path(r["output"]).exists()] if overwrite else []
    write_table(kept + rows, table_csv, table_json)
    return rows


def write_table(rows: list[dict], csv_path: Path, json_path: Path) -> None:
    """Write the same rows as CSV and JSON, each atomically.

    Parameters
    ----------
    rows : list[dict]
        the table's rows (same keys each).
    csv_path : Path
        the CSV file.
    json_path : Path
        the JSON file.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else TABLE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    write_text(json_path, json.dumps(rows, indent=2) + "\n")
