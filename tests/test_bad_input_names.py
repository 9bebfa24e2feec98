"""The reliability issue's corpus: names that cannot leave --out, no silent wrong results, bundle runs that fail in
one line, infer batches that resume. Each kind asserts the one line, the exit status, nothing written outside the
output folder and nothing already there lost."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import write_dicom_series
from test_bad_input import assert_nothing_left, assert_one_line_error, listing, segcls_model  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "data" / "real"


def absolute(dataset: Path) -> dict:
    """The dataset's datalist with absolute paths, to be edited and written elsewhere."""
    doc = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    for split in ("training", "test"):
        for entry in doc[split]:
            for key in ("image", "label"):
                if key in entry:
                    entry[key] = str(dataset / entry[key])
    return doc


def write_doc(folder: Path, doc: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


# ---- names that would leave the output folder


BAD_NAMES = [
    ("/tmp/volgan-escape-abs", "is a path"),
    ("../../../volgan-escape-rel", "is a path"),
    ("..", "is a path"),
    (".hidden", "is a path"),
    ("a\\b", "is a path"),
    ("", "is empty"),
    ("tab\tname", "control character"),
    ("x" * 300, "characters long"),
    (["a", "b"], "is a list"),
    (7, "is a int"),
]


@pytest.mark.parametrize("name, needle", BAD_NAMES, ids=[f"name{i}" for i in range(len(BAD_NAMES))])
def test_check_and_import_refuse_a_name_that_is_a_path(cli, tmp_path, phantom_dir, name, needle):
    doc = absolute(phantom_dir)
    doc["training"][0]["name"] = name
    source = write_doc(tmp_path / "src", doc)
    before = listing(tmp_path)
    assert_one_line_error(cli("check", source), "dataset.json", needle)
    assert_one_line_error(cli("import", source, "--out", tmp_path / "out"), "dataset.json", needle)
    assert_nothing_left(tmp_path, before)
    assert not Path("/tmp/volgan-escape-abs.nii.gz").exists()
    assert not (tmp_path.parent / "volgan-escape-rel.nii.gz").exists()


@pytest.mark.parametrize("name", ["../../../../volgan-escape-study", "/tmp/volgan-escape-study"])
def test_study_real_refuses_a_name_that_is_a_path(cli, tmp_path, phantom_dir, name):
    doc = absolute(phantom_dir)
    doc["training"][0]["name"] = name
    source = write_doc(tmp_path / "src", doc)
    before = listing(tmp_path)
    assert_one_line_error(cli("study", "--profile", "tiny", "--real", source, "--out", tmp_path / "study"),
                          "is a path")
    assert_nothing_left(tmp_path, before)
    assert not Path("/tmp/volgan-escape-study.nii.gz").exists()


def test_layout_paths_refuses_a_path_name(tmp_path):
    from volgan.data.datalist import layout_paths
    from volgan.errors import VolganInputError

    with pytest.raises(VolganInputError, match="is a path"):
        layout_paths(tmp_path, "../x", "training", "msd")


@pytest.mark.parametrize("command", ["check", "import"])
def test_duplicate_case_names_are_refused(cli, tmp_path, phantom_dir, command):
    doc = absolute(phantom_dir)
    doc["training"][1]["name"] = doc["training"][0]["name"] = "twice"
    source = write_doc(tmp_path / "src", doc)
    before = listing(tmp_path)
    args = (command, source) if command == "check" else (command, source, "--out", tmp_path / "out")
    assert_one_line_error(cli(*args), "'twice'", "unique")
    assert_nothing_left(tmp_path, before)


def test_image_path_that_is_not_a_string(cli, tmp_path, phantom_dir):
    doc = absolute(phantom_dir)
    doc["training"][0]["image"] = ["a.nii.gz"]
    assert_one_line_error(cli("check", write_doc(tmp_path / "src", doc)), "'image' is a list")


def test_nnunet_case_entry_that_is_not_an_object(cli, tmp_path, phantom_dir):
    out = tmp_path / "nn"
    assert cli("import", phantom_dir, "--out", out, "--format", "nnunet").code == 0
    doc = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    doc["volgan"]["cases"][next(iter(doc["volgan"]["cases"]))] = [1, 2]
    (out / "dataset.json").write_text(json.dumps(doc), encoding="utf-8")
    assert_one_line_error(cli("check", out), "dataset.json", "not an object")


# ---- import: masks never taken for images


def real_pair(folder: Path, mask_name: str = "t2_seg-manual.nii.gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REAL / "t2.nii.gz", folder / "t2.nii.gz")
    shutil.copy(REAL / "t2_seg-manual.nii.gz", folder / mask_name)
    return folder


def test_sct_mask_is_the_images_cord_mask(cli, tmp_path):
    result = cli("import", real_pair(tmp_path / "src"), "--out", tmp_path / "out")
    assert result.code == 0, result.err
    doc = json.loads((tmp_path / "out" / "dataset.json").read_text(encoding="utf-8"))
    assert [(e["name"], e["annotated"]) for e in doc["training"]] == [("t2", ["cord"])]
    label = np.asarray(nib.load(tmp_path / "out" / doc["training"][0]["label"]).dataobj)
    mask = np.asarray(nib.load(REAL / "t2_seg-manual.nii.gz").dataobj)
    assert set(np.unique(label)) == {0, 3} and np.array_equal(label == 3, mask > 0)  # cord is volgan's label 3


def test_mask_with_an_unrevealing_name_is_refused(cli, tmp_path):
    source = real_pair(tmp_path / "src", "cordmask.nii.gz")
    before = listing(tmp_path)
    result = cli("import", source, "--out", tmp_path / "out")
    assert_one_line_error(result, "cordmask.nii.gz", "t2.nii.gz", "looks like a label map")
    assert_nothing_left(tmp_path, before)
    assert cli("import", source, "--out", tmp_path / "out", "--allow-mask-like-images").code == 0


def test_mask_without_its_image(cli, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REAL / "t2.nii.gz", source / "a.nii.gz")
    shutil.copy(REAL / "t2_seg-manual.nii.gz", source / "b_seg-manual.nii.gz")
    assert_one_line_error(cli("import", source, "--out", tmp_path / "out"), "b_seg-manual", "no image 'b'")


def test_two_generic_label_maps_for_one_image(cli, tmp_path):
    source = real_pair(tmp_path / "src", "t2_seg.nii.gz")
    shutil.copy(REAL / "t2_seg-manual.nii.gz", source / "t2_mask.nii.gz")
    assert_one_line_error(cli("import", source, "--out", tmp_path / "out"), "2 label maps for 't2'")


def test_derivative_mask_that_is_not_binary(cli, tmp_path):
    source = real_pair(tmp_path / "src")
    mask = nib.load(source / "t2_seg-manual.nii.gz")
    values = np.asarray(mask.dataobj).astype(np.uint8)
    values[0, 0, 0] = 2
    nib.save(nib.Nifti1Image(values, mask.affine), str(source / "t2_seg-manual.nii.gz"))
    assert_one_line_error(cli("import", source, "--out", tmp_path / "out"), "t2_seg-manual", "binary mask")


def test_json_label_map_implies_background(cli, tmp_path, phantom_dir):
    (tmp_path / "map.json").write_text(json.dumps({str(k): k for k in range(1, 6)}), encoding="utf-8")
    assert cli("import", phantom_dir, "--out", tmp_path / "out", "--label-map", tmp_path / "map.json").code == 0


# ---- DICOM series with gaps


@pytest.fixture
def dicom_series(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    return write_dicom_series(rng.uniform(0, 400, (12, 10, 8)), np.diag([0.8, 0.8, 3.0, 1.0]), tmp_path / "dcm")


def shift_slice(folder: Path, index: int, by_mm: float) -> None:
    import SimpleITK as sitk

    path = folder / f"slice_{index:04d}.dcm"
    image = sitk.ReadImage(str(path))
    position = [float(v) for v in image.GetMetaData("0020|0032").split("\\")]
    position[2] += by_mm
    image.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(image)


@pytest.mark.parametrize("damage, needle", [
    ("missing", "not evenly spaced"),
    ("irregular", "not evenly spaced"),
    ("duplicate", "share one position"),
])
def test_dicom_series_with_gaps_is_refused(cli, tmp_path, dicom_series, damage, needle):
    if damage == "missing":
        (dicom_series / "slice_0003.dcm").unlink()
    elif damage == "irregular":
        shift_slice(dicom_series, 4, 1.2)
    else:
        shift_slice(dicom_series, 4, -3.0)
    before = listing(tmp_path)
    for args in (("import", dicom_series.parent, "--out", tmp_path / "out"),):
        result = cli(*args)
        assert_one_line_error(result, "dcm", needle)
        assert "Non uniform" not in result.err
    assert_nothing_left(tmp_path, before)


# ---- infer: no silent wrong results


@pytest.fixture(scope="module")
def model_dir(segcls_model) -> Path:  # noqa: F811 - the fixture imported above
    """The folder of test_bad_input's spine_segcls checkpoint (random weights, narrow) and its card."""
    return segcls_model.parent


def copy_model(model_dir: Path, to: Path) -> Path:
    shutil.copytree(model_dir, to)
    return to / "model.pt"


def test_infer_refuses_non_finite_weights(cli, tmp_path, phantom_dir, model_dir):
    path = copy_model(model_dir, tmp_path / "m")
    state = torch.load(path, weights_only=True)
    next(iter(state.values()))[0] = float("nan")
    torch.save(state, path)
    before = listing(tmp_path)
    result = cli("infer", "--model", path, "--input", phantom_dir / "imagesTs", "--out", tmp_path / "o")
    assert_one_line_error(result, "model.pt", "not finite")
    assert_nothing_left(tmp_path, before)


def test_quality_refuses_a_judge_with_non_finite_weights(cli, tmp_path, phantom_dir, model_dir):
    path = copy_model(model_dir, tmp_path / "m")
    state = torch.load(path, weights_only=True)
    next(iter(state.values()))[0] = float("inf")
    torch.save(state, path)
    result = cli("quality", "--real", phantom_dir, "--synthetic", phantom_dir, "--out", tmp_path / "q",
                 "--model", path)
    assert_one_line_error(result, "model.pt", "not finite")
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("where", ["bundle", "file"])
def test_infer_refuses_a_model_without_its_card(cli, tmp_path, phantom_dir, model_dir, where):
    path = copy_model(model_dir, tmp_path / "bundle" / "models")
    (path.parent / "model.json").unlink()
    model = tmp_path / "bundle" if where == "bundle" else path
    result = cli("infer", "--model", model, "--input", phantom_dir / "imagesTs", "--out", tmp_path / "o")
    assert_one_line_error(result, "model.json", "no model card")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("card, needle", [
    ({"spacing": [1.5, 1.5, 1.5], "patch": [0, 0, 0], "channels": [4, 8, 16, 32]}, "patch"),
    ({"spacing": [0, 1.5, 1.5], "patch": [32, 32, 32], "channels": [4, 8, 16, 32]}, "spacing"),
    ({"spacing": [1.5, 1.5, 1.5], "patch": [30, 32, 32], "channels": [4, 8, 16, 32]}, "multiples of 8"),
    ({"spacing": [1.5] * 3, "patch": [32] * 3, "channels": [4, 8, 16, 32], "training_arithmetic": "fp16"},
     "training_arithmetic"),
    ("{not json", "unreadable model card"),
])
def test_infer_bad_model_card_names_the_card(cli, tmp_path, phantom_dir, model_dir, card, needle):
    path = copy_model(model_dir, tmp_path / "m")
    (path.parent / "model.json").write_text(card if isinstance(card, str) else json.dumps(card), encoding="utf-8")
    result = cli("infer", "--model", path, "--input", phantom_dir / "imagesTs", "--out", tmp_path / "o")
    assert_one_line_error(result, "model.json", needle)
    assert not (tmp_path / "o").exists()


def test_infer_into_its_input_folder_never_segments_its_outputs(cli, tmp_path, phantom_dir, model_dir):
    folder = tmp_path / "scans"
    shutil.copytree(phantom_dir / "imagesTs", folder)
    n = len(list(folder.glob("*.nii.gz")))
    for extra in ((), ("--overwrite",)):
        result = cli("infer", "--model", model_dir / "model.pt", "--input", folder, "--out", folder, *extra)
        assert result.code == 0, result.err
    assert not list(folder.glob("*_seg_seg*"))
    assert len(list(folder.glob("*_seg.nii.gz"))) == n
    assert len(json.loads((folder / "predictions.json").read_text(encoding="utf-8"))) == n


def test_second_infer_into_a_busy_folder_is_refused(cli, tmp_path, phantom_dir, model_dir):
    out = tmp_path / "o"
    out.mkdir()
    holder = os.open(out, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another volgan infer at work
    try:
        before = listing(tmp_path)
        result = cli("infer", "--model", model_dir / "model.pt", "--input", phantom_dir / "imagesTs", "--out", out)
        assert_one_line_error(result, "another volgan infer")
        assert_nothing_left(tmp_path, before)
    finally:
        os.close(holder)


def test_infer_interrupted_then_rerun_finishes_the_rest(cli, tmp_path, phantom_dir, model_dir, monkeypatch):
    from volgan.segcls import inference

    out = tmp_path / "o"
    real_predict, calls = inference.predict, []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(inference, "predict", interrupted_on_the_third)
    inputs = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))
    result = cli("infer", "--model", model_dir / "model.pt", "--input", *inputs, "--out", out)
    assert result.code == 130 and "2 volume(s) finished in this run are kept" in result.err, result.err
    assert f"{len(inputs) - 2} not done" in result.err
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.nii.gz")}
    assert len(kept) == 2 and len(json.loads((out / "predictions.json").read_text(encoding="utf-8"))) == 2
    monkeypatch.setattr(inference, "predict", real_predict)
    result = cli("infer", "--model", model_dir / "model.pt", "--input", *inputs, "--out", out)
    assert result.code == 0, result.err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_seg.nii.gz") if p.name in kept} == kept
    rows = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert len(rows) == len(inputs) and all(not r["error"] for r in rows)


def test_infer_killed_after_its_record_redoes_that_volume(cli, tmp_path, phantom_dir, model_dir):
    out = tmp_path / "o"
    inputs = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[:2]
    assert cli("infer", "--model", model_dir / "model.pt", "--input", *inputs, "--out", out).code == 0
    lost = sorted(out.glob("*_seg.nii.gz"))[0]
    lost.unlink()  # kill -9 between the record and the volume: the record is there, its output is not
    (out / "predictions.csv").unlink()
    result = cli("infer", "--model", model_dir / "model.pt", "--input", *inputs, "--out", out)
    assert result.code == 0, result.err
    assert lost.exists() and len(json.loads((out / "predictions.json").read_text(encoding="utf-8"))) == 2


def test_infer_rerun_with_another_model_needs_overwrite(cli, tmp_path, phantom_dir, model_dir):
    out = tmp_path / "o"
    image = sorted((phantom_dir / "imagesTs").glob("*.nii.gz"))[0]
    assert cli("infer", "--model", model_dir / "model.pt", "--input", image, "--out", out).code == 0
    other = copy_model(model_dir, tmp_path / "other")
    before = listing(tmp_path)
    result = cli("infer", "--model", other, "--input", image, "--out", out)
    assert_one_line_error(result, "_seg.nii.gz", "--overwrite")
    assert_nothing_left(tmp_path, before)


# ---- evaluate


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, phantom_dir, model_dir) -> Path:
    from volgan.segcls.inference import run_inference
    from volgan.segcls.predict import load_model

    out = tmp_path_factory.mktemp("pred")
    run_inference(load_model(model_dir / "model.pt", "cpu"), [phantom_dir / "imagesTs"], out)
    return out


def edited_table(predictions: Path, tmp_path: Path, edit) -> Path:
    pred = tmp_path / "pred"
    shutil.copytree(predictions, pred)
    text = (pred / "predictions.csv").read_text(encoding="utf-8")
    (pred / "predictions.csv").write_text(edit(text), encoding="utf-8")
    return pred


@pytest.mark.parametrize("value, needle", [("nan", "p_none is 'nan'"), ("1.5", "p_none is '1.5'"),
                                           ("-0.1", "p_none is '-0.1'")])
def test_evaluate_refuses_a_probability_that_is_not_one(cli, tmp_path, phantom_dir, predictions, value, needle):
    def edit(text):
        lines = text.splitlines()
        header = lines[0].split(",")
        cells = lines[1].split(",")
        cells[header.index("p_none")] = value
        return "\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n"

    pred = edited_table(predictions, tmp_path, edit)
    result = cli("evaluate", "--pred", pred, "--ref", phantom_dir, "--classes", pred / "predictions.csv", "--out",
                 tmp_path / "r", "--bootstrap", "10")
    assert_one_line_error(result, "predictions.csv", needle)
    assert not (tmp_path / "r").exists()


def test_evaluate_reads_a_table_with_a_bom(cli, tmp_path, phantom_dir, predictions):
    pred = edited_table(predictions, tmp_path, lambda text: "\ufeff" + text)
    result = cli("evaluate", "--pred", pred, "--ref", phantom_dir, "--classes", pred / "predictions.csv", "--out",
                 tmp_path / "r", "--bootstrap", "10")
    assert result.code == 0, result.err
    assert "classification" in json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))


def test_evaluate_names_a_negative_label_as_it_is(cli, tmp_path, phantom_dir, predictions):
    pred = tmp_path / "pred"
    shutil.copytree(predictions, pred)
    target = sorted(pred.glob("*_seg.nii.gz"))[0]
    image = nib.load(target)
    values = np.asarray(image.dataobj).astype(np.int16)
    values[0, 0, 0] = -1
    nib.save(nib.Nifti1Image(values, image.affine), str(target))
    result = cli("evaluate", "--pred", pred, "--ref", phantom_dir, "--out", tmp_path / "r", "--bootstrap", "10")
    assert_one_line_error(result, target.name, "[-1]")


# ---- seeds and generator configs


@pytest.mark.parametrize("command", [
    ["quality", "--real", "R", "--synthetic", "S", "--out", "O"],
    ["phantom", "--out", "O", "--cases", "2"],
    ["evaluate", "--pred", "P", "--ref", "R", "--out", "O"],
])
def test_negative_seed_is_a_usage_error(cli, tmp_path, command):
    result = cli(*command, "--seed", "-4")
    assert_one_line_error(result, "a seed must be from 0")


@pytest.mark.parametrize("key, value, needle", [("spacing", [0, 3.0, 3.0], "spacing"), ("size", "abc", "size")])
def test_synth_refuses_a_generator_whose_config_is_impossible(cli, tmp_path, key, value, needle):
    from volgan.gan.networks import ImageGenerator, LabelGenerator

    config = {"size": 16, "spacing": [3.0, 3.0, 3.0], "base": 4, "z_label": 8, "z_image": 8, key: value}
    torch.save({"config": config, "stats": {}, "epoch": 1,
                "label_generator": LabelGenerator(16, z_dim=8, base=4).state_dict(),
                "image_generator": ImageGenerator(16, z_dim=8, base=4).state_dict()}, tmp_path / "generator.pt")
    result = cli("synth", "--checkpoint", tmp_path / "generator.pt", "--out", tmp_path / "o", "--cases", "2")
    assert_one_line_error(result, "generator.pt", needle)
    assert not (tmp_path / "o").exists()


# ---- bundle runs fail like the command line


def bundle_copy(tmp_path: Path, bundle: str) -> Path:
    target = tmp_path / bundle
    shutil.copytree(REPO / "bundles" / bundle, target, ignore=shutil.ignore_patterns("models", "eval"))
    return target


BUNDLE_CASES = {
    "segcls epochs -1": ("spine_segcls", "train.json", ["--max_epochs", "-1"], "--max_epochs -1 must be"),
    "segcls epochs abc": ("spine_segcls", "train.json", ["--max_epochs", "abc"], "--max_epochs 'abc' must be"),
    "segcls lr nan": ("spine_segcls", "train.json", ["--learning_rate", "nan"], "--learning_rate"),
    "segcls no datalist": ("spine_segcls", "train.json", ["--dataset_dir", "NOWHERE"], "no such datalist"),
    "segcls empty training": ("spine_segcls", "train.json", ["--dataset_dir", "EMPTY"], "no case to train on"),
    "segcls multi-gpu": ("spine_segcls", "['configs/train.json','configs/multi_gpu_train.json']",
                         ["--batch_size", "0"], "--batch_size 0 must be"),
    "segcls evaluate alone": ("spine_segcls", "evaluate.json", [], "this config extends configs/inference.json"),
    "segcls evaluate untrained": ("spine_segcls", "['configs/inference.json','configs/evaluate.json']", [],
                                  "no trained model"),
    "segcls inference untrained": ("spine_segcls", "inference.json", [], "no trained model"),
    "cgan epochs 0": ("spine_cgan", "train.json", ["--max_epochs", "0"], "--max_epochs 0 must be"),
    "cgan inference untrained": ("spine_cgan", "inference.json", [], "no such generator checkpoint"),
}


@pytest.fixture(scope="module")
def bundle_runs(tmp_path_factory, phantom_dir) -> dict:
    """Every bad bundle run of :data:`BUNDLE_CASES`, started side by side as a user would start them; each bundle
    copy holds an earlier model card that must survive."""
    root = tmp_path_factory.mktemp("bundle-runs")
    empty = root / "empty"
    doc = json.loads((phantom_dir / "dataset.json").read_text(encoding="utf-8"))
    doc["test"] = [{**e, "image": str(phantom_dir / e["image"]), "label": str(phantom_dir / e["label"])}
                   for e in doc["training"]]
    doc["training"] = []
    write_doc(empty, doc)
    started = {}
    for kind, (bundle, config, args, _) in BUNDLE_CASES.items():
        folder = bundle_copy(root / kind.replace(" ", "_"), bundle)
        (folder / "models").mkdir()
        (folder / "models" / "model.json").write_text('{"earlier": true}', encoding="utf-8")
        config_arg = config if config.startswith("[") else f"configs/{config}"
        args = [str(empty) if a == "EMPTY" else str(root / "nowhere") if a == "NOWHERE" else a for a in args]
        if "--dataset_dir" not in args:
            args += ["--dataset_dir", str(phantom_dir)]
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg, "--bundle_root",
                   str(folder), *args]
        started[kind] = (folder, subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE, text=True,
                                                  env={**os.environ, "OMP_NUM_THREADS": "1"}))
    results = {}
    for kind, (folder, process) in started.items():
        out, err = process.communicate(timeout=300)
        results[kind] = (folder, process.returncode, out, err)
    return results


@pytest.mark.parametrize("kind", list(BUNDLE_CASES))
def test_bundle_run_fails_in_one_line(bundle_runs, kind):
    folder, code, out, err = bundle_runs[kind]
    needle = BUNDLE_CASES[kind][3]
    bundle = BUNDLE_CASES[kind][0]
    assert code != 0 and "Traceback" not in err, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith(f"{bundle}: error:")]
    assert len(ours) == 1 and needle in ours[0], err[-2000:]
    assert err.strip().splitlines()[-1] == ours[0]
    assert [p.name for p in (folder / "models").iterdir()] == ["model.json"]
    assert (folder / "models" / "model.json").read_text(encoding="utf-8") == '{"earlier": true}'
