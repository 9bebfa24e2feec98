"""Test helpers: volumes written in forms volgan reads, a save cut short, and the tiny study on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def write_dicom_series(array: np.ndarray, affine: np.ndarray, folder: Path,
                       series_uid: str = "1.2.826.0.1.3680043.2.1125.1.42") -> Path:
    """Write a 3D int16 array with a RAS affine as an MR DICOM series (one file per k slice)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    image = sitk.GetImageFromArray(array.astype(np.int16).transpose(2, 1, 0))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    orientation = "\\".join(f"{v:.6f}" for v in direction[:, 0].tolist() + direction[:, 1].tolist())
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR",
            "0020|000e": series_uid,
            "0020|000d": series_uid + ".0",
            "0020|0037": orientation,
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0013": str(k + 1),
            "0018|0050": f"{spacing[2]:.6f}",
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0008|0018": f"{series_uid}.{k + 1}",
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(slice_)
    return folder


class Killed(Exception):
    """Raised by a save that :func:`cut_save_short` cut short: the process "dies" there."""


def cut_save_short(monkeypatch, nth: int, counts: Callable[[object], bool] = lambda obj: True) -> None:
    """Make the ``nth`` ``torch.save`` of an object that ``counts`` leave only its first 100 bytes in the file and
    raise :class:`Killed`; every other save runs as usual."""
    real_save, seen = torch.save, []

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if counts(obj):
            seen.append(f)
            if len(seen) == nth:
                f.truncate(100) if hasattr(f, "truncate") else os.truncate(f, 100)
                raise Killed

    monkeypatch.setattr(torch, "save", save)


def mlflow_metrics(database: Path) -> dict[str, list[float]]:
    """Every metric of every run in the MLflow SQLite store ``database``: name → logged values. Read through a
    client of its own, so no tracking URI set elsewhere in the test process is used or changed."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    values: dict[str, list[float]] = {}
    for run in client.search_runs(experiments):
        for name in run.data.metrics:
            values.setdefault(name, []).extend(m.value for m in client.get_metric_history(run.info.run_id, name))
    return values


STUDY = [sys.executable, "-m", "volgan", "study", "--profile", "tiny"]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*STUDY, *map(str, args)], capture_output=True, encoding="utf-8", errors="replace",
                          timeout=600, **kwargs)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]
