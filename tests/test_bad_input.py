"""Every bad input of the foundation issue: one line naming the file, exit status 2, nothing partial."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from volgan.data.io import read_volume


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
    import volgan.data.phantom as phantom

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
    with pytest.raises(ValueError, match="could not be written .disk full"):
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


# --------------------------------------------------------------------------------------------------------
# The corpus across every command: each bad input gives exit status 2, one line on stderr naming the file or
# option at fault, no traceback, nothing new in or beside --out, and earlier outputs untouched.


def listing(folder: Path) -> dict:
    """Every path under ``folder``: files with their size and modification time, folders by name."""
    if not folder.exists():
        return {}
    return {p: None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def assert_nothing_left(parent: Path, before: dict) -> None:
    assert listing(parent) == before, sorted(set(listing(parent)) ^ set(before))


@pytest.fixture(scope="module")
def segcls_model(tmp_path_factory) -> Path:
    """A spine_segcls checkpoint (random weights, narrow) with its model card."""
    import torch

    from volgan.segcls.network import SegClsNet
    from volgan.segcls.train import write_model_card
    from volgan.transforms import Preprocessing

    folder = tmp_path_factory.mktemp("segcls") / "models"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(SegClsNet(channels=(4, 8, 16, 32)).state_dict(), folder / "model.pt")
    write_model_card(str(folder), Preprocessing(patch=(32, 32, 32)), (4, 8, 16, 32))
    return folder / "model.pt"


@pytest.fixture(scope="module")
def generator(tmp_path_factory, phantom_dir) -> Path:
    """A spine_cgan generator.pt (random weights) with the statistics of the phantom set's training maps."""
    import torch

    from volgan.data.datalist import read_datalist
    from volgan.gan.networks import ImageGenerator, LabelGenerator
    from volgan.gan.trainer import training_stats
    from volgan.transforms import Preprocessing

    torch.manual_seed(0)
    config = {"size": 16, "spacing": [3.0, 3.0, 3.0], "base": 4, "z_label": 8, "z_image": 8}
    cases = read_datalist(phantom_dir).split("training")
    stats = training_stats(cases, Preprocessing(spacing=(3.0, 3.0, 3.0), patch=(16, 16, 16)))
    path = tmp_path_factory.mktemp("cgan") / "generator.pt"
    torch.save({"config": config, "stats": stats, "epoch": 1,
                "label_generator": LabelGenerator(16, z_dim=8, base=4).state_dict(),
                "image_generator": ImageGenerator(16, z_dim=8, base=4).state_dict()}, path)
    return path


@pytest.fixture
def tiny_fs(tmp_path):
    """A 200 KB tmpfs mounted at ``tmp_path/small`` (a disk that fills up mid-write); skipped where this user
    cannot mount (the project's machines run as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture
def read_only(tmp_path):
    """A folder where nothing can be written (a read-only tmpfs; /proc where mounting is not allowed)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        yield Path("/proc")
        return
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


# ---- phantom


@pytest.mark.parametrize("args, needle", [
    (["--spacing", "nan"], "spacing must be three positive finite"),
    (["--spacing", "inf"], "spacing must be three positive finite"),
    (["--orientation", "RAR"], "orientation"),
    (["--start-index", "-5"], "--start-index"),
    (["--seed", "-1"], "--seed"),
    (["--tumor-fraction", "nan"], "tumor fraction"),
])
def test_phantom_bad_values(cli, tmp_path, args, needle):
    result = cli("phantom", "--out", tmp_path / "o", "--cases", "2", "--size", "16", *args)
    assert_one_line_error(result, needle)
    assert list(tmp_path.iterdir()) == []


def unwritable_outs(tmp_path: Path, read_only: Path) -> dict[str, Path]:
    (tmp_path / "a_file").write_text("mine", encoding="utf-8")
    return {"file": tmp_path / "a_file", "under a file": tmp_path / "a_file" / "out", "read-only": read_only / "out"}


@pytest.mark.parametrize("kind", ["file", "under a file", "read-only"])
def test_phantom_unwritable_out(cli, tmp_path, read_only, kind):
    out = unwritable_outs(tmp_path, read_only)[kind]
    before = listing(tmp_path)
    assert_one_line_error(cli("phantom", "--out", out, "--cases", "2", "--size", "16"), out)
    assert_nothing_left(tmp_path, before)


def test_phantom_disk_full_mid_write(cli, tiny_fs):
    (tiny_fs / "out").mkdir()
    (tiny_fs / "out" / "notes.txt").write_text("mine", encoding="utf-8")
    result = cli("phantom", "--out", tiny_fs / "out", "--cases", "6", "--size", "32", "--workers", "1")
    assert_one_line_error(result, tiny_fs / "out", "could not be written")
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["out"]
    assert [p.name for p in (tiny_fs / "out").iterdir()] == ["notes.txt"]
    assert (tiny_fs / "out" / "notes.txt").read_text(encoding="utf-8") == "mine"


# ---- check


def test_check_rgb_volume(cli, dataset):
    image, _ = first_training(dataset)
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(image))
    assert_one_line_error(cli("check", dataset), image.name, "RGB")


# ---- infer


def test_infer_bad_volumes_fail_their_rows_and_the_batch_goes_on(cli, tmp_path, phantom_dir, segcls_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[:2]
    shutil.copy(good[0], inputs / "a_good.nii.gz")
    save(np.full((32, 32, 32), 7.0, np.float32), inputs / "b_constant.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), np.eye(4)),
             str(inputs / "c_rgb.nii.gz"))
    shutil.copy(good[1], inputs / "d_good.nii.gz")
    result = cli("infer", "--model", segcls_model, "--input", inputs, "--out", tmp_path / "out")
    assert_one_line_error(result, "2 input(s) failed", "b_constant.nii.gz", "c_rgb.nii.gz")
    rows = json.loads((tmp_path / "out" / "predictions.json").read_text(encoding="utf-8"))
    assert [bool(r["error"]) for r in rows] == [False, True, True, False]
    assert "one intensity everywhere" in rows[1]["error"] and "b_constant" in rows[1]["error"]
    assert "RGB" in rows[2]["error"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_seg.nii.gz")) == ["a_good_seg.nii.gz",
                                                                              "d_good_seg.nii.gz"]


@pytest.mark.parametrize("kind", ["file", "under a file", "read-only"])
def test_infer_unwritable_out(cli, tmp_path, read_only, phantom_dir, segcls_model, kind):
    out = unwritable_outs(tmp_path, read_only)[kind]
    before = listing(tmp_path)
    image = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[0]
    assert_one_line_error(cli("infer", "--model", segcls_model, "--input", image, "--out", out), out)
    assert_nothing_left(tmp_path, before)


@pytest.mark.parametrize("args, needle", [
    (["--overlap", "1.0"], "--overlap"),
    (["--overlap", "-0.5"], "--overlap"),
    (["--sw-batch-size", "0"], "--sw-batch-size"),
    (["--device", "quantum"], "--device"),
])
def test_infer_bad_options(cli, tmp_path, phantom_dir, segcls_model, args, needle):
    image = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[0]
    assert_one_line_error(cli("infer", "--model", segcls_model, "--input", image, "--out", tmp_path / "o", *args),
                          needle)
    assert list(tmp_path.iterdir()) == []


def test_infer_cuda_without_cuda(cli, tmp_path, phantom_dir, segcls_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[0]
    result = cli("infer", "--model", segcls_model, "--input", image, "--out", tmp_path / "o", "--device", "cuda")
    assert_one_line_error(result, "--device cuda", "no usable CUDA")
    assert list(tmp_path.iterdir()) == []


def test_infer_not_a_checkpoint(cli, tmp_path, phantom_dir):
    (tmp_path / "model.pt").write_text("not a model", encoding="utf-8")
    image = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[0]
    result = cli("infer", "--model", tmp_path / "model.pt", "--input", image, "--out", tmp_path / "o")
    assert_one_line_error(result, "model.pt", "not a PyTorch checkpoint")
    assert not (tmp_path / "o").exists()


def test_infer_never_replaces_a_seg_file_without_overwrite(cli, tmp_path, phantom_dir, segcls_model):
    image = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[0]
    out = tmp_path / "out"
    out.mkdir()
    mine = out / f"{image.name.removesuffix('.nii.gz')}_seg.nii.gz"
    mine.write_bytes(b"the user's own file")
    before = listing(tmp_path)
    result = cli("infer", "--model", segcls_model, "--input", image, "--out", out)
    assert_one_line_error(result, mine.name, "--overwrite")
    assert_nothing_left(tmp_path, before)


def test_infer_failing_overwrite_run_keeps_the_table_whole(cli, tmp_path, phantom_dir, segcls_model):
    images = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[:2]
    out = tmp_path / "out"
    assert cli("infer", "--model", segcls_model, "--input", *images, "--out", out).code == 0
    broken = tmp_path / images[0].name
    broken.write_bytes(b"not a volume")
    result = cli("infer", "--model", segcls_model, "--input", broken, "--out", out, "--overwrite")
    assert_one_line_error(result, broken.name)
    rows = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    listed = {Path(r["output"]).name for r in rows if r["output"]}
    assert listed == {p.name for p in out.glob("*_seg.nii.gz")} and len(listed) == 2
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and "from an earlier run" in failed[0]["error"]


# ---- evaluate


def test_evaluate_refuses_a_datalist_without_a_test_split(cli, tmp_path, dataset):
    doc = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    doc["training"] += doc.pop("test")
    doc["numTest"] = 0
    (dataset / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "pred").mkdir()
    result = cli("evaluate", "--pred", tmp_path / "pred", "--ref", dataset, "--out", tmp_path / "o")
    assert_one_line_error(result, "dataset.json", "no test split", "--ref")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, needle", [
    (["--nsd-tolerance", "nan"], "--nsd-tolerance"),
    (["--nsd-tolerance", "-1"], "--nsd-tolerance"),
    (["--bootstrap", "0"], "--bootstrap"),
])
def test_evaluate_bad_options(cli, tmp_path, phantom_dir, args, needle):
    (tmp_path / "pred").mkdir()
    result = cli("evaluate", "--pred", tmp_path / "pred", "--ref", phantom_dir, "--out", tmp_path / "o", *args)
    assert_one_line_error(result, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["file", "under a file", "read-only"])
def test_evaluate_unwritable_out(cli, tmp_path, read_only, phantom_dir, kind):
    out = unwritable_outs(tmp_path, read_only)[kind]
    (tmp_path / "pred").mkdir()
    before = listing(tmp_path)
    assert_one_line_error(cli("evaluate", "--pred", tmp_path / "pred", "--ref", phantom_dir, "--out", out), out)
    assert_nothing_left(tmp_path, before)


def test_evaluate_missing_prediction(cli, tmp_path, phantom_dir):
    (tmp_path / "pred").mkdir()
    result = cli("evaluate", "--pred", tmp_path / "pred", "--ref", phantom_dir, "--out", tmp_path / "o")
    assert_one_line_error(result, "_seg.nii.gz", "no prediction")
    assert not (tmp_path / "o").exists()


# ---- synth


def test_synth_types_that_do_not_sum_to_one(cli, tmp_path, generator):
    result = cli("synth", "--checkpoint", generator, "--out", tmp_path / "o", "--cases", "4",
                 "--types", "none=0.5,vertebral=0.7")
    assert_one_line_error(result, "--types", "add up to 1.2")
    assert not (tmp_path / "o").exists()


def test_synth_refuses_non_finite_weights(cli, tmp_path, generator):
    import torch

    state = torch.load(generator, weights_only=True)
    next(iter(state["image_generator"].values())).fill_(float("nan"))
    torch.save(state, tmp_path / "generator.pt")
    result = cli("synth", "--checkpoint", tmp_path / "generator.pt", "--out", tmp_path / "o", "--cases", "2")
    assert_one_line_error(result, "generator.pt", "image_generator weights hold NaN")
    assert not (tmp_path / "o").exists()


def test_synth_never_writes_a_non_finite_volume(tmp_path, generator, monkeypatch):
    import torch

    from volgan.errors import VolganInputError
    from volgan.gan.networks import ImageGenerator
    from volgan.gan.synth import load_synthesizer, synthesize

    synth = load_synthesizer(generator, "cpu")
    monkeypatch.setattr(ImageGenerator, "forward", lambda self, *a, **k: torch.full((1, 1, 16, 16, 16), float("nan")))
    with pytest.raises(VolganInputError, match="NaN or Inf"):
        synthesize(synth, tmp_path / "o", n_cases=2, seed=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "under a file", "read-only"])
def test_synth_unwritable_out(cli, tmp_path, read_only, generator, kind):
    out = unwritable_outs(tmp_path, read_only)[kind]
    before = listing(tmp_path)
    assert_one_line_error(cli("synth", "--checkpoint", generator, "--out", out, "--cases", "2"), out)
    assert_nothing_left(tmp_path, before)


def test_synth_missing_checkpoint(cli, tmp_path):
    result = cli("synth", "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "o", "--cases", "2")
    assert_one_line_error(result, "none.pt", "no such generator checkpoint")
    assert not (tmp_path / "o").exists()


def test_synth_no_cases(cli, tmp_path, generator):
    assert_one_line_error(cli("synth", "--checkpoint", generator, "--out", tmp_path / "o", "--cases", "0"),
                          "--cases")
    assert not (tmp_path / "o").exists()


# ---- quality


def test_quality_missing_synthetic_datalist(cli, tmp_path, phantom_dir):
    result = cli("quality", "--real", phantom_dir, "--synthetic", tmp_path / "nope", "--out", tmp_path / "o")
    assert_one_line_error(result, "nope", "no such datalist")
    assert not (tmp_path / "o").exists()


def test_quality_synthetic_volume_with_nan(cli, tmp_path, phantom_dir, dataset):
    image, _ = first_training(dataset)
    volume = read_volume(image)
    volume.array[1, 2, 3] = np.nan
    save(volume.array, image, volume.affine)
    result = cli("quality", "--real", phantom_dir, "--synthetic", dataset, "--out", tmp_path / "o")
    assert_one_line_error(result, image.name, "NaN or Inf")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["under a file", "read-only"])
def test_quality_unwritable_out(cli, tmp_path, read_only, phantom_dir, kind):
    out = unwritable_outs(tmp_path, read_only)[kind]
    before = listing(tmp_path)
    assert_one_line_error(cli("quality", "--real", phantom_dir, "--synthetic", phantom_dir, "--out", out), out)
    assert_nothing_left(tmp_path, before)


# ---- study --real: every volume checked before any stage runs, nothing left behind


def corrupt_label(dataset: Path, change) -> Path:
    _, label = first_training(dataset)
    volume = read_volume(label, label=True)
    array, affine = change(volume.array.copy(), volume.affine.copy())
    save(array, label, affine)
    return label


@pytest.mark.parametrize("kind, needle", [
    ("text", "not a readable NIfTI"),
    ("label7", "outside 0–5"),
    ("nan", "NaN or Inf"),
    ("grid", "affine differs"),
    ("tumor_type", "has no tumor label 5"),
])
def test_study_real_refuses_bad_volumes_up_front(cli, tmp_path, dataset, kind, needle):
    image, label = first_training(dataset)
    if kind == "text":
        image.write_bytes(gzip.compress(b"a text file" * 50))
        culprit = image.name
    elif kind == "label7":
        culprit = corrupt_label(dataset, lambda a, f: (np.where(a == 1, 7, a).astype(np.uint8), f)).name
    elif kind == "nan":
        volume = read_volume(image)
        volume.array[0, 0, 0] = np.nan
        save(volume.array, image, volume.affine)
        culprit = image.name
    elif kind == "grid":
        shift = np.zeros((4, 4))
        shift[0, 3] = 2.0  # the label map 2 mm off the image's grid
        culprit = corrupt_label(dataset, lambda a, f: (a, f + shift)).name
    else:
        doc = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
        entry = next(e for e in doc["training"] if e["tumor_type"] == 0)
        entry["tumor_type"] = 3
        (dataset / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
        culprit = "tumor_type 3"
    result = cli("study", "--profile", "tiny", "--real", dataset, "--out", tmp_path / "study", "--quiet")
    assert_one_line_error(result, culprit, needle)
    assert not (tmp_path / "study").exists()


def test_study_real_too_few_cases(cli, tmp_path, dataset):
    doc = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    doc["training"] = doc["training"][:5]
    doc["test"] = doc["test"][:2]
    (dataset / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
    result = cli("study", "--profile", "tiny", "--real", dataset, "--out", tmp_path / "study", "--quiet")
    assert_one_line_error(result, "dataset.json", "at least 8 real cases", "has 7")
    assert not (tmp_path / "study").exists()


def test_study_real_missing_datalist(cli, tmp_path):
    result = cli("study", "--profile", "tiny", "--real", tmp_path / "nowhere", "--out", tmp_path / "study")
    assert_one_line_error(result, "nowhere", "no such datalist")
    assert not (tmp_path / "study").exists()


def test_ten_labeled_cases_without_a_test_split_are_enough(phantom_dir):
    """The README's rule (8 cases or more) and the split agree: 10 cases with no test split give a test set."""
    from dataclasses import replace

    from volgan.data.datalist import read_datalist
    from volgan.study.data import split_user_data
    from volgan.study.profiles import PROFILES

    data = read_datalist(phantom_dir)
    ten = replace(data, cases=[replace(c, split="training") for c in data.cases[:10]])
    pool, test = split_user_data(ten, PROFILES["quick"])
    assert len(pool) + len(test) == 10 and len(pool) >= 4
    assert len({c.tumor_type for c in test}) >= 2


def test_quality_judge_as_torchscript(cli, tmp_path, phantom_dir):
    from volgan.segcls.network import SegmentationNet
    from volgan.segcls.train import write_model_card
    from volgan.transforms import Preprocessing

    torch.jit.save(torch.jit.script(SegmentationNet().eval()), str(tmp_path / "model.ts"))
    write_model_card(str(tmp_path), Preprocessing(), (16, 32, 64, 128))
    result = cli("quality", "--real", phantom_dir, "--synthetic", phantom_dir, "--out", tmp_path / "o",
                 "--model", tmp_path / "model.ts")
    assert_one_line_error(result, "model.ts", "not a TorchScript export")
    assert not (tmp_path / "o").exists()


def test_infer_torchscript_of_another_network(cli, tmp_path, phantom_dir):
    torch.jit.save(torch.jit.script(torch.nn.Conv3d(1, 6, 1)), str(tmp_path / "other.ts"))
    result = cli("infer", "--model", tmp_path / "other.ts", "--input", phantom_dir / "imagesTs", "--out",
                 tmp_path / "o")
    assert_one_line_error(result, "other.ts", "not a spine_segcls export")
    assert not (tmp_path / "o").exists()
