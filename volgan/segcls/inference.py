"""Inference over files: every volume of the inputs (NIfTI, MetaImage, NRRD files or DICOM series folders)
through :func:`volgan.segcls.predict.predict`, its label map written in the input's own grid, and one table
(``predictions.csv`` and ``.json``) of tumor probabilities and types, optionally with Grad-CAM maps."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from volgan.data.files import first_line, write_text
from volgan.data.io import (
    OUTPUT_SUFFIXES,
    DicomSeries,
    find_volumes,
    read_volume,
    volume_stem,
    volume_suffix,
    write_volume,
)
from volgan.errors import VolganInputError
from volgan.segcls.predict import LoadedModel, predict
from volgan.segcls.table import TABLE_FIELDS, table_row, write_table
from volgan.training import progress_of


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


RECORDS_DIR = ".volgan-infer"  # hidden folder in --out: one JSON record per finished volume, the table's source
OUTPUT_TAILS = ("_seg", "_gradcam")


class InferenceInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_inference`: ``written`` volumes of this run are complete and kept, and the table
    was rebuilt from every finished volume in the folder before this was raised."""

    def __init__(self, written: int, remaining: int):
        super().__init__(f"{written} volume(s) written, {remaining} left")
        self.written, self.remaining = written, remaining


def model_identity(model: LoadedModel) -> str:
    """What a finished volume's record says produced it: the checkpoint's path, size and modification time.

    Parameters
    ----------
    model : LoadedModel
        the loaded model.

    Returns
    -------
    str
        ``"PATH:SIZE:MTIME_NS"``, or ``""`` for a model not loaded from a file.
    """
    if not model.source or not Path(model.source).is_file():
        return ""
    stat = Path(model.source).stat()
    return f"{Path(model.source).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _read_records(out: Path) -> dict[str, dict]:
    """{segmentation file name: record} of every readable record in ``out``'s records folder."""
    records = {}
    folder = out / RECORDS_DIR
    if not folder.is_dir():
        return records
    for file in sorted(folder.glob("*.json")):
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a record cut short is a volume to redo
        if isinstance(record, dict) and isinstance(record.get("row"), dict) and record.get("output_files"):
            records[file.name[: -len(".json")]] = record
    return records


def _complete(out: Path, record: dict) -> bool:
    return all((out / name).is_file() for name in record["output_files"])


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``out`` (made if missing, and removed again if it stays empty after a
    refusal); a second ``volgan infer`` into the same folder is refused in one line instead of overwriting the
    table. Without ``fcntl`` (Windows) nothing is locked."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    fd = os.open(out, os.O_RDONLY)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise VolganInputError(out, "another volgan infer is writing into this folder; wait for it to end "
                                            "or choose another --out") from None
        yield
    except VolganInputError:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_own_output(path: Path, out: Path) -> bool:
    """Whether ``path`` is an output of ``volgan infer`` into ``out`` (``NAME_seg.ext`` or ``NAME_gradcam.ext`` in
    that folder), which a later run must not take as an input.

    Parameters
    ----------
    path : Path
        an input file.
    out : Path
        the output folder.

    Returns
    -------
    bool
        True for such a file.
    """
    return path.resolve().parent == out.resolve() and volume_stem(path.name).endswith(OUTPUT_TAILS)


def run_inference(model: LoadedModel, inputs: list[str | os.PathLike], out: str | os.PathLike,
                  gradcam: bool = False, overlap: float = 0.25, sw_batch_size: int = 4, overwrite: bool = False,
                  progress: bool = False, precision: str = "fp32", output_ext: str | None = None) -> list[dict]:
    """Predict every input and write the label maps and a table; a run cut short resumes where it stopped.

    A bad input (unreadable, not 3D, constant intensity…) is listed with a one-line error and gets no output
    file; the others go on. Each finished volume leaves a record (``.volgan-infer/``) beside its outputs, and the
    table is rebuilt from the records whose outputs are all present, so it lists every finished volume in the
    folder. Run again after an interruption (Ctrl-C, kill -9), the same command skips the volumes already done
    with the same model and settings and does the rest. An output that no record of the same input, model and
    settings accounts for (the user's own file, another model's) is never replaced without ``overwrite``. Outputs
    of this command in ``out`` are never taken as inputs, and a second run into ``out`` at the same time is
    refused.

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
        redo and replace outputs of these inputs already in ``out``.
    progress : bool
        a bar on a terminal, log lines elsewhere (:func:`volgan.training.progress_of`).
    precision : str
        ``"fp32"`` or ``"bf16"``.
    output_ext : str | None
        the outputs' suffix (None: the input's own format, :func:`output_suffix`).

    Returns
    -------
    list[dict]
        This command's rows of ``predictions.csv`` / ``predictions.json`` (input, output, tumor probability,
        predicted type, the four type probabilities and the error, if any), those done by an earlier run of it
        included. Each ``<name>_seg<ext>`` has its input's shape and affine.

    Raises
    ------
    InferenceInterrupted
        on Ctrl-C, after the table was rebuilt from the volumes finished so far.
    """
    from volgan.data.files import check_writable_dir

    out = Path(out)
    check_overlap(overlap)
    check_sw_batch_size(sw_batch_size)
    check_writable_dir(out)
    inputs_found = [item for item in expand_inputs(inputs) if not is_own_output(item[0], out)]
    if not inputs_found:
        raise VolganInputError(None, "no input volumes given (outputs of volgan infer in --out are not inputs)")
    outputs = [(path, stem, series, output_suffix(path if series is None else Path("series"), output_ext))
               for path, stem, series in inputs_found]
    stems = [stem for _, stem, _, _ in outputs]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise VolganInputError(None, f"two inputs would both write {dup}_seg")
    kinds = ("_seg", "_gradcam") if gradcam else ("_seg",)
    settings = {"model": model_identity(model), "overlap": overlap, "precision": precision}
    with _locked(out):
        records = _read_records(out)
        rows: list[dict | None] = []  # this command's rows in input order; None: still to do
        todo, taken = [], []
        for path, stem, series, ext in outputs:
            files = [f"{stem}{kind}{ext}" for kind in kinds]
            record = records.get(files[0])
            ours = record is not None and record.get("input") == str(path) and record.get("settings") == settings
            if ours and not overwrite and all(name in record["output_files"] for name in files) \
                    and _complete(out, record):
                rows.append(record["row"])
                continue
            if not ours and not overwrite:
                taken += [out / name for name in files if (out / name).exists()]
            rows.append(None)
            todo.append((len(rows) - 1, (path, stem, series, ext)))
        if taken:
            raise VolganInputError(taken[0], f"already exists ({len(taken)} output(s) of these inputs are in {out} "
                                             "and no earlier run of this command with this model made them); pass "
                                             "--overwrite to replace")
        finished = 0
        try:
            for index, (path, stem, series, ext) in progress_of(todo, "infer", "volume", progress):
                rows[index] = _infer_one(model, out, path, series, stem, ext, gradcam, settings,
                                         overlap=overlap, sw_batch_size=sw_batch_size, precision=precision)
                finished += not rows[index]["error"]
        except KeyboardInterrupt:
            _rebuild_table(out, [r for r in rows if r is not None])
            raise InferenceInterrupted(finished, sum(r is None for r in rows)) from None
        _rebuild_table(out, rows)
    return rows


def _infer_one(model: LoadedModel, out: Path, path: Path, series: DicomSeries | None, stem: str, ext: str,
               gradcam: bool, settings: dict, **options) -> dict:
    """One volume: its prediction, its record, then its outputs; returns its table row (an error row on bad input)."""
    row = {"input": str(path), "output": "", "gradcam": "", "error": ""}
    seg_path, cam_path = out / f"{stem}_seg{ext}", out / f"{stem}_gradcam{ext}"
    record, recorded = out / RECORDS_DIR / f"{seg_path.name}.json", False
    try:
        volume = read_volume(path, series=series)
        prediction = predict(model, volume, **options)
        cam_volume = None
        if gradcam:
            from volgan.segcls.gradcam import gradcam_volume

            cam_volume = gradcam_volume(model, prediction, volume)
        row = table_row(path, seg_path, prediction.type_probabilities,
                        cam_path if cam_volume is not None else None)
        files = [seg_path.name] + ([cam_path.name] if cam_volume is not None else [])
        # the record first: a run killed before the outputs are whole finds it, sees them missing, and redoes them
        write_text(record, json.dumps({"input": str(path), "settings": settings, "output_files": files, "row": row}))
        recorded = True
        write_volume(prediction.label, seg_path)
        if cam_volume is not None:
            write_volume(cam_volume, cam_path)
        return row
    except VolganInputError as exc:
        row["error"] = str(exc) if exc.path else f"{path}: {exc.what}"
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - one bad volume must not abort the batch
        row["error"] = f"{path}: {type(exc).__name__}: {first_line(exc)}"
    row.update(output="", gradcam="")
    if recorded:  # its outputs may not have been written: the record must not vouch for them
        record.unlink(missing_ok=True)
    if seg_path.exists():
        row["error"] += f" (the {seg_path.name} in the folder is from an earlier run)"
    return {k: row.get(k, "") for k in TABLE_FIELDS}


def _rebuild_table(out: Path, run_rows: list[dict]) -> None:
    """Write ``predictions.csv``/``.json``: the finished volumes of earlier commands into ``out`` (their records'
    rows, outputs present), then this command's rows in input order (failed ones included)."""
    mine = {row["output"] for row in run_rows if row["output"]}
    earlier = [r["row"] for r in _read_records(out).values() if _complete(out, r) and r["row"]["output"] not in mine]
    write_table(earlier + run_rows, out / "predictions.csv", out / "predictions.json")
