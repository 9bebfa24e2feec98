"""volgan evaluate: every report file and field, strict JSON, self-contained HTML, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from volgan.data.datalist import read_datalist
from volgan.data.io import Volume, read_volume, write_nifti
from volgan.evaluation.metrics import diagonal_mm


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, phantom_dir):
    """Predicted label maps (references with errors) and a probability table for the test split."""
    out = tmp_path_factory.mktemp("pred")
    rows = []
    rng = np.random.default_rng(0)
    for case in read_datalist(phantom_dir).split("test"):
        ref = read_volume(case.label, label=True)
        pred = np.roll(ref.array, 1, axis=0)
        pred[pred == 5] = 0 if case.name.endswith("0") else 5  # lose some tumors entirely
        write_nifti(Volume(pred, ref.affine), out / f"{case.name}_seg.nii.gz")
        probs = rng.dirichlet(np.ones(4)) * 0.3 + 0.7 * np.eye(4)[case.tumor_type]
        rows.append({"input": str(case.image), **{f"p_{n}": p for n, p in zip(
            ["none", "intramedullary", "intradural_extramedullary", "vertebral"], probs, strict=True)}, "error": ""})
    (out / "predictions.json").write_text(json.dumps(rows))
    return out


def test_report_files_and_fields(cli, tmp_path, phantom_dir, predictions):
    result = cli("evaluate", "--pred", predictions, "--ref", phantom_dir, "--classes", predictions / "predictions.json",
                 "--out", tmp_path / "report", "--bootstrap", "100")
    assert result.code == 0, result.err
    report = tmp_path / "report"
    assert {p.name for p in report.iterdir()} == {"summary.json", "per_case.csv", "report.md", "report.html",
                                                  "figures"}

    def no_nan(token):
        raise AssertionError(f"non-strict JSON token {token}")

    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"), parse_constant=no_nan)
    n = len(read_datalist(phantom_dir).split("test"))
    assert len(summary["metric_per_case"]) == n
    for key in ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref", "HD95", "NSD"):
        assert key in summary["mean"]["1"] and key in summary["foreground_mean"]
    case_metrics = summary["metric_per_case"][0]["metrics"]["5"]
    assert {"Dice", "IoU", "HD95", "NSD", "flags"} <= set(case_metrics)
    v = summary["volgan"]
    assert v["settings"]["bootstrap_resamples"] == 100 and len(v["definitions"]) >= 4
    ci = v["confidence_intervals"]["1"]["Dice"]
    assert ci["ci_low"] <= summary["mean"]["1"]["Dice"] <= ci["ci_high"]
    cls = summary["classification"]["metrics"]
    for name in ("accuracy", "precision", "recall", "specificity", "f1", "auc_tumor", "macro_auc_tumor_type"):
        assert set(cls[name]) == {"value", "ci_low", "ci_high"}
    assert np.array(summary["classification"]["confusion_matrix"]).sum() == n
    rows = list(csv.DictReader((report / "per_case.csv").open(encoding="utf-8")))
    assert len(rows) == 5 * n
    html = (report / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3 and "src='http" not in html and "<table>" in html
    markdown = (report / "report.md").read_text(encoding="utf-8")
    assert "HD95" in markdown and "Confusion matrix" in markdown and "Definitions" in markdown
    assert {p.name for p in (report / "figures").iterdir()} == {"roc.png", "confusion_matrix.png", "overlays.png"}


def test_flagged_empty_tumor_predictions_count_as_worst_case(tmp_path, phantom_dir, predictions, cli):
    cli("evaluate", "--pred", predictions, "--ref", phantom_dir, "--out", tmp_path / "r", "--bootstrap", "10")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    flagged = [f for f in summary["volgan"]["flags"] if f["label"] == 5]
    assert flagged and all(f["flags"] in (["empty_pred"], ["empty_ref_and_pred"]) for f in flagged)
    # a real tumor the prediction lost entirely (the fixture drops the tumors of names ending in 0): flagged
    # empty_pred and scored as the worst case, Dice 0 and HD95 the image diagonal
    lost = [c for c in read_datalist(phantom_dir).split("test") if c.name.endswith("0") and c.tumor_type != 0]
    assert lost
    tumor = {Path(r["reference_file"]).name: r["metrics"]["5"] for r in summary["metric_per_case"]}
    for case in lost:
        reference = read_volume(case.label, label=True)
        assert tumor[case.label.name]["flags"] == ["empty_pred"] and tumor[case.label.name]["Dice"] == 0.0
        assert tumor[case.label.name]["HD95"] == pytest.approx(diagonal_mm(reference.shape, reference.spacing))


def test_bad_input(cli, tmp_path, phantom_dir, predictions):
    partial = tmp_path / "partial"
    partial.mkdir()
    first = sorted(predictions.glob("*_seg.nii.gz"))[0]
    (partial / first.name).write_bytes(first.read_bytes())
    result = cli("evaluate", "--pred", partial, "--ref", phantom_dir, "--out", tmp_path / "o1")
    assert result.code == 2 and "no prediction for reference case" in result.err and not (tmp_path / "o1").exists()

    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for path in predictions.glob("*_seg.nii.gz"):
        volume = read_volume(path, label=True)
        volume.affine[0, 3] += 5
        write_nifti(volume, shifted / path.name)
    result = cli("evaluate", "--pred", shifted, "--ref", phantom_dir, "--out", tmp_path / "o2")
    assert result.code == 2 and "affine differs" in result.err and "_seg.nii.gz" in result.err
    assert not (tmp_path / "o2").exists()

    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "summary.json").write_text("{}", encoding="utf-8")
    result = cli("evaluate", "--pred", predictions, "--ref", phantom_dir, "--out", tmp_path / "o3")
    assert result.code == 2 and "--overwrite" in result.err
    assert (tmp_path / "o3" / "summary.json").read_text(encoding="utf-8") == "{}"


def test_foreground_mean_is_null_where_nnunet_gives_nan(cli, tmp_path, phantom_dir):
    """Tumor empty in every case: nnU-Net's foreground_mean (a plain mean over labels) is NaN; ours is null and
    flagged, where a NaN-skipping mean would have printed a number."""
    import shutil

    from volgan.data.datalist import read_datalist

    free = [c for c in read_datalist(phantom_dir).cases if c.tumor_type == 0][:2]
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
        for case in free:
            shutil.copy(case.label, tmp_path / folder / f"{case.name}.nii.gz")
    result = cli("evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--out", tmp_path / "o",
                 "--bootstrap", "10")
    assert result.code == 0, result.err
    assert "foreground Dice undefined" in result.out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text(encoding="utf-8"))
    assert summary["mean"]["5"]["Dice"] is None and summary["mean"]["1"]["Dice"] == 1.0
    assert summary["foreground_mean"]["Dice"] is None
    assert any("foreground_mean_undefined" in f for entry in summary["volgan"]["flags"] for f in entry["flags"])
