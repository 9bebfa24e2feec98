"""Volume I/O and datalists: round trips that keep the affine, both datalist formats, MONAI compatibility."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from helpers import write_dicom_series

from volgan.data.datalist import Case, layout_paths, read_datalist, write_datalist
from volgan.data.io import Volume, read_volume, write_nifti
from volgan.data.phantom import ORIENTATIONS, PhantomConfig, generate_case, make_dataset


@pytest.mark.parametrize("code", ORIENTATIONS)
def test_nifti_round_trip_keeps_array_and_affine(tmp_path, code):
    case = generate_case(1, 2, PhantomConfig(size=(20, 24, 28), spacing=(0.9, 1.2, 3.0), orientation=code))
    write_nifti(case.image, tmp_path / "img.nii.gz")
    write_nifti(case.label, tmp_path / "lab.nii")
    image, label = read_volume(tmp_path / "img.nii.gz"), read_volume(tmp_path / "lab.nii", label=True)
    assert image.orientation == code and label.orientation == code
    assert np.array_equal(image.array, case.image.array) and np.array_equal(label.array, case.label.array)
    assert np.allclose(image.affine, case.image.affine, atol=1e-5)
    assert image.spacing == pytest.approx(case.image.spacing, abs=1e-5)
    assert label.array.dtype == np.uint8 and nib.load(tmp_path / "lab.nii").get_data_dtype() == np.uint8


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    write_nifti(Volume(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    assert stat.S_IMODE((tmp_path / "vol.nii.gz").stat().st_mode) == 0o666 & ~umask


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "vol.nii.gz"
    write_nifti(Volume(np.ones((4, 4, 4), np.float32), np.eye(4)), target)
    before = target.read_bytes()

    def broken_save(img, filename):
        open(filename, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError):
        write_nifti(Volume(np.zeros((4, 4, 4), np.float32), np.eye(4)), target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["vol.nii.gz"]


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIR"])
def test_dicom_series_reads_with_the_same_geometry(tmp_path, code):
    case = generate_case(0, 1, PhantomConfig(size=(16, 20, 18), spacing=(1.0, 1.5, 2.5), orientation=code))
    array = np.rint(case.image.array).astype(np.int16)
    write_dicom_series(array, case.image.affine, tmp_path / "series")
    volume = read_volume(tmp_path / "series")
    assert volume.orientation == code
    assert np.array_equal(volume.array, array)
    assert np.allclose(volume.affine, case.image.affine, atol=1e-4)


def test_msd_datalist_is_what_monai_reads(phantom_dir):
    from monai.data import load_decathlon_datalist

    entries = load_decathlon_datalist(str(phantom_dir / "dataset.json"), data_list_key="training")
    ours = read_datalist(phantom_dir)
    training = ours.split("training")
    assert [e["image"] for e in entries] == [str(c.image) for c in training]
    assert [e["tumor_type"] for e in entries] == [c.tumor_type for c in training]
    assert all(e["source"] == "real" for e in entries)


def test_nnunet_layout_round_trip(tmp_path):
    path, cases, _ = make_dataset(tmp_path / "nn", 6, PhantomConfig(size=(16, 16, 16)), seed=4, fmt="nnunet",
                                  test_fraction=0.5)
    root = tmp_path / "nn"
    assert (root / "imagesTr" / "phantom_00000_0000.nii.gz").exists() or (
        root / "imagesTs" / "phantom_00000_0000.nii.gz").exists()
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["file_ending"] == ".nii.gz" and doc["labels"]["tumor"] == 5 and doc["channel_names"] == {"0": "MR"}
    back = read_datalist(root)
    assert back.format == "nnunet"
    key = {c.name: (c.tumor_type, c.split, c.image.name) for c in cases}
    assert {c.name: (c.tumor_type, c.split, c.image.name) for c in back.cases} == key


def test_msd_and_nnunet_convert_into_each_other(tmp_path, phantom_dir):
    cases = read_datalist(phantom_dir).cases
    root = tmp_path / "as_nnunet"
    moved = []
    for case in cases:
        image_path, label_path = layout_paths(root, case.name, case.split, "nnunet")
        write_nifti(read_volume(case.image), image_path)
        write_nifti(read_volume(case.label, label=True), label_path)
        moved.append(Case(case.name, image_path, label_path, case.tumor_type, case.source, case.split))
    write_datalist(moved, root, "nnunet")
    back = read_datalist(root)
    assert sorted((c.name, c.tumor_type, c.split) for c in back.cases) == sorted(
        (c.name, c.tumor_type, c.split) for c in cases)
