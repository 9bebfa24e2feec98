"""NIfTI volume inference: output geometry equals the input's, sliding windows, Grad-CAM, bad input."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import write_dicom_series

from volgan.data.io import Volume, read_volume, write_nifti
from volgan.data.phantom import PhantomConfig, generate_case
from volgan.segcls.network import DEFAULT_CHANNELS, SegClsNet
from volgan.segcls.predict import LoadedModel, predict
from volgan.segcls.train import write_model_card
from volgan.transforms import Preprocessing


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LoadedModel(SegClsNet(channels=(8, 16, 32, 64)).eval(), Preprocessing(patch=(32, 32, 32)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(model.network.state_dict(), path)
    (path.parent / "model.json").write_text(json.dumps({"spacing": [1.5] * 3, "patch": [32] * 3,
                                                        "channels": [8, 16, 32, 64]}))
    return path


@pytest.mark.parametrize("code, size, spacing", [("RAS", (32, 32, 32), (1.5, 1.5, 1.5)),
                                                  ("LPS", (27, 41, 35), (1.1, 0.9, 2.2)),
                                                  ("PIR", (20, 48, 40), (3.0, 0.8, 0.8))])
def test_output_has_the_input_geometry(model, code, size, spacing):
    case = generate_case(2, 5, PhantomConfig(size=size, spacing=spacing, orientation=code))
    prediction = predict(model, case.image)
    assert prediction.label.array.shape == case.image.shape
    assert np.array_equal(prediction.label.affine, case.image.affine)
    assert prediction.label.array.dtype == np.uint8 and prediction.label.array.max() <= 5
    assert prediction.type_probabilities.shape == (4,) and abs(prediction.type_probabilities.sum() - 1) < 1e-5


def test_gradcam_leaves_the_model_as_it_found_it(model):
    """A Grad-CAM map between two predictions changes neither the network's mode nor what it predicts (MONAI's
    hooks once left the dropout of the classification head on, and every later type probability was random)."""
    from volgan.segcls.gradcam import gradcam_volume

    case = generate_case(2, 7, PhantomConfig(size=(32, 32, 32)))
    before = predict(model, case.image)
    gradcam_volume(model, before, case.image)
    after = predict(model, case.image)
    assert not model.network.training
    assert np.array_equal(before.type_probabilities, after.type_probabilities)


def test_prediction_does_not_depend_on_storage_order(model):
    """The same anatomy stored as RAS and as PIR gives the same labels once both are brought to RAS."""
    ras = generate_case(1, 3, PhantomConfig(size=(32, 32, 32)))
    pir = generate_case(1, 3, PhantomConfig(size=(32, 32, 32), orientation="PIR"))
    a = predict(model, ras.image).label
    b = predict(model, pir.image).label
    b_ras = nib.as_closest_canonical(nib.Nifti1Image(b.array, b.affine))
    assert np.allclose(b_ras.affine, a.affine, atol=1e-4)
    assert (np.asarray(b_ras.dataobj) == a.array).mean() > 0.999


def test_sliding_windows_cover_a_volume_larger_than_the_patch(model, monkeypatch):
    import volgan.segcls.predict as inference

    calls = []

    class Spy(inference.ModelInferer):
        def __call__(self, inputs, network, *args, **kwargs):
            calls.append(tuple(inputs.shape[2:]))
            return super().__call__(inputs, network, *args, **kwargs)

    monkeypatch.setattr(inference, "ModelInferer", Spy)
    big = generate_case(0, 2, PhantomConfig(size=(80, 40, 72), spacing=(1.0, 2.0, 1.0)))
    prediction = predict(model, big.image)
    assert calls and any(n > 32 for n in calls[0])
    assert prediction.label.array.shape == (80, 40, 72)


def test_cli_batch_goes_on_past_bad_files(cli, tmp_path, checkpoint):
    good = generate_case(0, 1, PhantomConfig(size=(32, 32, 32)))
    write_nifti(good.image, tmp_path / "in" / "good.nii.gz")
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"not a volume")
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16, 2), np.float32), np.eye(4)), str(tmp_path / "in" / "two.nii.gz"))
    result = cli("infer", "--model", checkpoint, "--input", tmp_path / "in", "--out", tmp_path / "out")
    assert result.code == 2 and "2 input(s) failed" in result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "good_seg.nii.gz", "predictions.csv", "predictions.json"]
    table = json.loads((tmp_path / "out" / "predictions.json").read_text(encoding="utf-8"))
    rows = {r["input"].split("/")[-1]: r for r in table}
    assert rows["good.nii.gz"]["error"] == "" and 0 <= rows["good.nii.gz"]["tumor_probability"] <= 1
    assert "has 2 channels" in rows["two.nii.gz"]["error"] and "broken.nii.gz" in rows["broken.nii.gz"]["error"]
    assert rows["two.nii.gz"]["output"] == ""
    out = read_volume(tmp_path / "out" / "good_seg.nii.gz", label=True)
    assert out.shape == good.image.shape and np.allclose(out.affine, good.image.affine, atol=1e-6)


def test_cli_dicom_input_and_gradcam(cli, tmp_path, checkpoint):
    case = generate_case(0, 3, PhantomConfig(size=(24, 36, 32), spacing=(1.2, 1.0, 1.6), orientation="LPS"))
    write_dicom_series(np.rint(case.image.array), case.image.affine, tmp_path / "series")
    result = cli("infer", "--model", checkpoint, "--input", tmp_path / "series", "--out", tmp_path / "out",
                 "--gradcam")
    assert result.code == 0, result.err
    seg = read_volume(tmp_path / "out" / "series_seg.nii.gz", label=True)
    cam = read_volume(tmp_path / "out" / "series_gradcam.nii.gz")
    for volume in (seg, cam):
        assert volume.shape == case.image.shape and np.allclose(volume.affine, case.image.affine, atol=1e-4)
    assert 0 <= cam.array.min() and cam.array.max() <= 1 and cam.array.std() > 0


def test_checkpoint_that_does_not_fit(cli, tmp_path):
    torch.save(SegClsNet(channels=(4, 8, 16, 32)).state_dict(), tmp_path / "other.pt")
    write_model_card(str(tmp_path), Preprocessing(), DEFAULT_CHANNELS)  # the card says the default widths
    write_nifti(Volume(np.ones((16, 16, 16), np.float32), np.eye(4)), tmp_path / "x.nii.gz")
    result = cli("infer", "--model", tmp_path / "other.pt", "--input", tmp_path / "x.nii.gz", "--out", tmp_path / "o")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "other.pt" in result.err and "does not fit the network" in result.err
    assert not (tmp_path / "o").exists()
    (tmp_path / "junk.pt").write_bytes(b"junk")
    result = cli("infer", "--model", tmp_path / "junk.pt", "--input", tmp_path / "x.nii.gz", "--out", tmp_path / "o")
    assert result.code == 2 and "not a PyTorch checkpoint" in result.err and not (tmp_path / "o").exists()


def test_tumor_call_from_the_segmentation():
    from volgan.segcls.pipeline import MIN_TUMOR_MM3, tumor_evidence_mm3, tumor_probability_from_segmentation
    from volgan.segcls.predict import combine_type_probabilities

    label = np.zeros((12, 12, 12), np.uint8)
    prob = np.full(label.shape, 0.01, np.float32)
    assert tumor_evidence_mm3(prob, label, 3.375) == pytest.approx(1e-5)  # no tumor voxel: peak × 10⁻³
    label[1:3, 1:3, 1:3] = 5          # 8 voxels
    label[6:10, 6:10, 6:10] = 5       # 64 voxels: the largest component
    prob[label == 5] = 0.75
    assert tumor_evidence_mm3(prob, label, 3.375) == pytest.approx(64 * 0.75 * 3.375)
    assert tumor_probability_from_segmentation(MIN_TUMOR_MM3) == pytest.approx(0.5)
    assert tumor_probability_from_segmentation(0.0) == 0.0
    assert tumor_probability_from_segmentation(4 * MIN_TUMOR_MM3) == pytest.approx(1 - 1 / 16)
    combined = combine_type_probabilities(0.8, np.array([0.9, 0.05, 0.03, 0.02]))
    assert combined == pytest.approx([0.2, 0.4, 0.24, 0.16])


def test_a_tumor_that_does_not_stand_out_from_its_host_tissue_is_not_called():
    from volgan.labels import CORD, TUMOR_LABEL
    from volgan.segcls.pipeline import MIN_TUMOR_CONTRAST, tumor_call, tumor_probability_from_segmentation

    label = np.zeros((24, 24, 24), np.int64)
    label[6:18, 6:18, :] = CORD
    label[9:15, 9:15, 9:15] = TUMOR_LABEL  # 216 voxels inside the cord
    probabilities = np.full((6, *label.shape), 0.02, np.float32)
    np.put_along_axis(probabilities, label[None], 0.9, axis=0)
    image = np.random.default_rng(0).normal(0.0, 1.0, label.shape).astype(np.float32)  # cord IQR ≈ 1.35
    p_mass = tumor_probability_from_segmentation(216 * 0.9 * 1.0)
    look_alike = tumor_call(probabilities, image, 1.0)  # the tumor is cord tissue: contrast ≈ 0
    assert look_alike.evidence_mm3 == pytest.approx(216 * 0.9, rel=1e-5)
    assert abs(look_alike.contrast) < 0.3 and look_alike.probability < 0.3 * p_mass
    assert look_alike.probability == pytest.approx(p_mass * abs(look_alike.contrast) / MIN_TUMOR_CONTRAST)
    for step in (3.0, -3.0):  # brighter or darker than the cord by two of its IQRs: called as the mass says
        lesion = image + step * (label == TUMOR_LABEL)
        call = tumor_call(probabilities, lesion, 1.0)
        assert np.sign(call.contrast) == np.sign(step) and abs(call.contrast) > 1.5
        assert call.probability == pytest.approx(p_mass)
    empty = probabilities.copy()
    empty[TUMOR_LABEL] = 0.0  # no tumor voxel: nothing to gate, the peak-probability floor stands
    call = tumor_call(empty, image, 1.0)
    assert np.isnan(call.contrast) and call.probability == tumor_probability_from_segmentation(call.evidence_mm3)


def test_prediction_keeps_the_head_and_the_evidence(model):
    case = generate_case(0, 1, PhantomConfig(size=(32, 32, 32), anatomy_field_mm=96.0))
    prediction = predict(model, case.image)
    head = prediction.head_probabilities
    assert head.shape == (4,) and abs(head.sum() - 1) < 1e-5 and prediction.tumor_evidence_mm3 >= 0
    p_tumor = 1 - prediction.type_probabilities[0]
    assert prediction.type_probabilities[1:] == pytest.approx(p_tumor * head[1:] / head[1:].sum(), abs=1e-6)


@pytest.mark.parametrize("trial", range(6))
def test_axis_aligned_resampling_equals_grid_sample(trial, monkeypatch):
    """The one-axis-at-a-time path of resample (grids differing by flips, axis order, spacing and shift) gives
    grid_sample's trilinear values, zero padding included."""
    import volgan.transforms.grid as transforms

    rng = np.random.default_rng(trial)
    src_shape, dst_shape = (tuple(int(n) for n in rng.integers(5, 20, 3)) for _ in range(2))
    pairing = np.zeros((3, 3))
    pairing[rng.permutation(3), range(3)] = rng.uniform(0.3, 2.0, 3) * rng.choice([-1, 1], 3)
    src_affine = np.eye(4)
    src_affine[:3, :3] = np.diag(rng.uniform(0.5, 2.0, 3))
    src_affine[:3, 3] = rng.normal(0, 5, 3)
    dst_affine = np.eye(4)
    dst_affine[:3, :3] = src_affine[:3, :3] @ pairing
    dst_affine[:3, 3] = src_affine[:3, 3] + src_affine[:3, :3] @ rng.normal(0, 3, 3)
    data = torch.rand(2, *src_shape)
    assert transforms.axis_permutation(np.linalg.inv(src_affine) @ dst_affine) is not None
    by_axis = transforms.resample(data, src_affine, dst_affine, dst_shape)
    monkeypatch.setattr(transforms, "axis_permutation", lambda affine: None)
    by_grid_sample = transforms.resample(data, src_affine, dst_affine, dst_shape)
    assert by_axis.shape == by_grid_sample.shape == (2, *dst_shape)
    torch.testing.assert_close(by_axis, by_grid_sample, atol=1e-5, rtol=1e-5)

