"""The predictions table, ``predictions.csv`` and ``predictions.json``: one row per input volume (:func:`table_row`),
as ``volgan infer`` writes it and as the bundle's inference workflow writes it (:class:`PredictionTable`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from volgan.data.files import atomic_path, write_text
from volgan.data.io import volume_stem
from volgan.errors import VolganInputError
from volgan.labels import TUMOR_TYPES

TABLE_FIELDS = ["input", "output", "gradcam", "tumor_probability", "predicted_tumor_type",
                *[f"p_{name}" for name in TUMOR_TYPES.values()], "error"]


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


def table_row(path: str | os.PathLike, output: str | os.PathLike, type_probabilities: np.ndarray,
              gradcam: str | os.PathLike | None = None) -> dict:
    """One volume's row of the predictions table (:data:`TABLE_FIELDS`), as ``volgan infer`` and the bundle's
    ``configs/inference.json`` write it.

    Parameters
    ----------
    path : str | os.PathLike
        the input volume.
    output : str | os.PathLike
        its label map.
    type_probabilities : np.ndarray
        (4,) tumor_type probabilities, none first.
    gradcam : str | os.PathLike | None
        its Grad-CAM map, if written.

    Returns
    -------
    dict
        the row, every field of :data:`TABLE_FIELDS`.

    Raises
    ------
    VolganInputError
        naming ``path``, when a probability is not finite.
    """
    probs = np.asarray(type_probabilities, dtype=np.float64)
    if not np.isfinite(probs).all():
        raise VolganInputError(path, "the model gave non-finite probabilities for this volume")
    row = {"input": str(path), "output": str(output), "gradcam": str(gradcam) if gradcam is not None else "",
           "tumor_probability": round(float(1.0 - probs[0]), 6), "predicted_tumor_type": int(np.argmax(probs)),
           "error": "", **{f"p_{name}": round(float(probs[k]), 6) for k, name in TUMOR_TYPES.items()}}
    return {k: row[k] for k in TABLE_FIELDS}


class PredictionTable:
    """Ignite handler for the bundle's inference workflow: each volume's row of ``volgan infer``'s table
    (:func:`table_row`), from the decollated output's ``type_probabilities`` (written by
    :class:`~volgan.segcls.pipeline.TumorProbabilityd` given the head) and its input file, written as
    ``predictions.csv`` and ``predictions.json`` in ``output_dir`` when the run completes; label maps named as
    ``SaveImaged`` names them (``<stem>_seg<output_ext>``)."""

    def __init__(self, output_dir: str | os.PathLike, output_ext: str = ".nii.gz"):
        self.output_dir = Path(output_dir)
        self.output_ext = output_ext
        self.rows: list[dict] = []

    def attach(self, engine) -> None:
        """Collect rows after each iteration and write the table when the run completes.

        Parameters
        ----------
        engine : ignite.engine.Engine
            the evaluator.
        """
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine) -> None:
        """This iteration's rows.

        Parameters
        ----------
        engine : ignite.engine.Engine
            the evaluator, its ``state.output`` a list of decollated items.
        """
        for item in engine.state.output:
            source = str(item["pred"].meta["filename_or_obj"])
            output = self.output_dir / f"{volume_stem(Path(source).name)}_seg{self.output_ext}"
            self.rows.append(table_row(source, output, item["type_probabilities"]))

    def write(self, _engine) -> None:
        """Write ``predictions.csv`` and ``predictions.json``.

        Parameters
        ----------
        _engine : ignite.engine.Engine
            the evaluator.
        """
        write_table(self.rows, self.output_dir / "predictions.csv", self.output_dir / "predictions.json")


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


def read_class_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``volgan infer``'s table (CSV or JSON) → {case name: probabilities over tumor_type (4,)}.

    Parameters
    ----------
    path : str | os.PathLike
        ``predictions.csv`` or ``predictions.json``.

    Returns
    -------
    dict[str, np.ndarray]
        {case name: probabilities (4,)}.

    Raises
    ------
    VolganInputError
        naming the file, when it is unreadable or lacks the probability columns.
    """
    path = Path(path)
    if not path.is_file():
        raise VolganInputError(path, "no such classification table")
    try:
        if path.suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
        else:
            rows = list(csv.DictReader(path.open(encoding="utf-8-sig", newline="")))  # a spreadsheet's BOM too
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as exc:
        raise VolganInputError(path, f"unreadable table ({exc})") from None
    columns = [f"p_{name}" for name in TUMOR_TYPES.values()]
    table = {}
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "input" not in row or any(c not in row for c in columns):
            raise VolganInputError(path, f"row {n} lacks 'input' or one of {columns}")
        if row.get("error"):
            continue
        try:
            probs = np.array([float(row[c]) for c in columns])
        except (TypeError, ValueError):
            raise VolganInputError(path, f"row {n} has a probability that is not a number") from None
        if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
            bad = next(c for c, p in zip(columns, probs, strict=True) if not (math.isfinite(p) and 0 <= p <= 1))
            raise VolganInputError(path, f"row {n} ({row['input']}): {bad} is {row[bad]!r}; probabilities must be "
                                         "finite numbers in [0, 1]")
        table[stem_of_output(row["output"]) if row.get("output") else volume_stem(Path(row["input"]).name)] = probs
    return table
