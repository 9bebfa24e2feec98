"""Every bad input of the foundation issue: one line naming the file, exit status 2, nothing partial."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from volgan.io import read_volume


@pytest.fixture
def dataset(tmp_path, phantom_dir):
    """A private copy of the session's phantom dataset, safe to corrupt."""
    copy = tmp_path / "data"
    shutil.copytree(phantom_dir, copy)
    return copy


def first_training(dataset):
    entry = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["training"][0]
    return dataset / entry["image"], dataset / entry["label"]


def assert_one_line_error(result, *needles):
    assert result.code == 2, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def save(array, path, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


def test_valid_dataset_passes_check(cli, dataset):
    result = cli("check", dataset)
    assert result.code == 0 and "is valid, 12 cases" in result.out


def test_missing_file(cli, dataset):
    image, _ = first_training(dataset)
    image.unlink()
    assert_one_line_error(cli("check", dataset), "dataset.json", image.name, "does not exist")


def test_missing_datalist(cli, tmp_path):
    assert_one_line_error(cli("check", tmp_path / "nowhere.json"), "nowhere.json", "no such datalist")


def test_file_that_is_not_a_volume(cli, dataset):
    image, _ = first_training(dataset)
    image.write_bytes(gzip.compress(b"this is a text file, not a NIfTI volume" * 20))
    assert_one_line_error(cli("check", dataset), image.name, "not a readable NIfTI volume")


def test_truncated_nifti(cli, dataset):
    image, _ = first_training(dataset)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    assert_one_line_error(cli("check", dataset), image.name, "truncated or corrupt")


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 32, 2, 2)])
def test_2d_and_5d_arrays(cli, dataset, shape):
    image, _ = first_training(dataset)
    save(np.ones(shape, np.float32), image)
    assert_one_line_error(cli("check", dataset), image.name, "3D volume")


def test_multichannel_volume(tmp_path):
    save(np.ones((8, 8, 8, 3), np.float32), tmp_path / "rgb.nii.gz")
    with pytest.raises(ValueError, match="has 3 channels"):
        read_volume(tmp_path / "rgb.nii.gz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_voxels(cli, dataset, bad):
    image, _ = first_training(dataset)
    volume = read_volume(image)
    volume.array[3, 4, 5] = bad
    save(volume.array, image, volume.affine)
    assert_one_line_error(cli("check", dataset), image.name, "NaN or Inf")


def test_label_values_outside_0_to_5(cli, dataset):
    _, label = first_training(dataset)
    volume = read_volume(label, label=True)
    volume.array[0, 0, 0] = 7
    save(volume.array, label, volume.affine)
    assert_one_line_error(cli("check", dataset), label.name, "label values [7] outside 0–5")


def test_image_and_label_of_different_shape(cli, dataset):
    image, label = first_training(dataset)
    volume = read_volume(label, label=True)
    save(volume.array[:-1], label, volume.affine)
    assert_one_line_error(cli("check", dataset), label.name, "shape")


def test_image_and_label_of_different_affine(cli, dataset):
    _, label = first_training(dataset)
    volume = read_volume(label, label=True)
    shifted = volume.affine.copy()
    shifted[0, 3] += 2.0
    save(volume.array, label, shifted)
    assert_one_line_error(cli("check", dataset), label.name, "affine differs")


def test_tumor_type_that_contradicts_the_label_map(cli, dataset):
    doc = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    entry = next(e for e in doc["training"] if e["tumor_type"] == 0)
    entry["tumor_type"] = 2
    (dataset / "dataset.json").write_text(json.dumps(doc))
    assert_one_line_error(cli("check", dataset), "tumor_type 2", "has no tumor label 5")


def test_datalist_that_is_not_json(cli, tmp_path):
    (tmp_path / "dataset.json").write_text("{training: oops", encoding="utf-8")
    assert_one_line_error(cli("check", tmp_path), "dataset.json", "not valid JSON")


def test_output_folder_that_already_holds_a_dataset(cli, dataset):
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*")}
    result = cli("phantom", "--out", dataset, "--cases", "2", "--size", "16")
    assert_one_line_error(result, dataset, "already holds dataset.json", "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*")} == before
    assert cli("phantom", "--out", dataset, "--cases", "2", "--size", "16", "--overwrite").code == 0
    doc = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert doc["numTraining"] + doc["numTest"] == 2
    assert len(list((dataset / "imagesTr").iterdir())) + len(list((dataset / "imagesTs").glob("*"))) == 2


def test_failure_midway_leaves_no_partial_output(tmp_path, monkeypatch):
    import volgan.phantom as phantom

    written = []
    real = phantom.write_nifti

    def failing(volume, path):
        if len(written) == 3:
            raise OSError("disk full")
        written.append(path)
        return real(volume, path)

    monkeypatch.setattr(phantom, "write_nifti", failing)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OSError):
        phantom.make_dataset(tmp_path / "out", 4, phantom.PhantomConfig(size=(16, 16, 16)))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("args, needle", [
    (["--cases", "0"], "--cases must be at least 1"),
    (["--cases", "2", "--tumor-fraction", "1.5"], "tumor fraction"),
    (["--cases", "2", "--types", "spinal"], "unknown tumor type"),
    (["--cases", "2", "--orientation", "XYZ"], "orientation"),
    (["--cases", "2", "--size", "8"], "at least 16"),
])
def test_bad_options(cli, tmp_path, args, needle):
    result = cli("phantom", "--out", tmp_path / "o", *args)
    assert_one_line_error(result, needle)
    assert not (tmp_path / "o").exists()


def test_usage_errors_are_one_line(cli, tmp_path):
    result = cli("phantom", "--out", tmp_path / "o")
    assert_one_line_error(result, "--cases")
    result = cli("phantom", "--out", tmp_path / "o", "--cases", "2", "--size", "a,b")
    assert_one_line_error(result, "--size must be a number or three numbers")


def test_console_script_exit_status(tmp_path):
    """The installed entry point, as a user calls it."""
    proc = subprocess.run([sys.executable, "-m", "volgan", "check", str(tmp_path / "none")],
                          capture_output=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such datalist" in proc.stderr
