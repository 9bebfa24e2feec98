"""One definition per bundle: the preprocessing and augmentation volgan runs are the objects the bundle configs
list, so editing a config changes every path (training, ``volgan infer``, the study)."""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torchio as tio

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def edited_bundles(tmp_path, monkeypatch, edit) -> Path:
    """A copy of bundles/ with ``edit(segcls_train, segcls_inference)`` applied, made volgan's bundles."""
    root = tmp_path / "bundles"
    shutil.copytree(BUNDLES, root)
    configs = root / "spine_segcls" / "configs"
    train, inference = (json.loads((configs / n).read_text(encoding="utf-8")) for n in ("train.json", "inference.json"))
    edit(train, inference)
    (configs / "train.json").write_text(json.dumps(train, indent=4), encoding="utf-8")
    (configs / "inference.json").write_text(json.dumps(inference, indent=4), encoding="utf-8")
    monkeypatch.setenv("VOLGAN_BUNDLES", str(root))
    from volgan.segcls.pipeline import _parsed_model_input

    _parsed_model_input.cache_clear()
    return root


def test_library_runs_the_objects_train_json_lists(tmp_path, monkeypatch):
    from volgan.transforms import Preprocessing, augmentation, preprocessing

    shipped = preprocessing(Preprocessing((1.5,) * 3, (32,) * 3))
    assert [type(t).__name__ for t in shipped.transforms] == ["ToModelGrid", "CropOrPad", "ZNormalization"]
    light = augmentation("light")
    assert [type(t).__name__ for t in light.transforms] == ["RandomFlip", "RandomAffine"]

    def edit(train, _):
        train["preprocessing"]["transforms"][2] = {"_target_": "torchio.RescaleIntensity", "out_min_max": [0, 1]}
        train["augmentations"]["light"]["transforms"] = train["augmentations"]["light"]["transforms"][:1]

    edited_bundles(tmp_path, monkeypatch, edit)
    edited = preprocessing(Preprocessing((1.5,) * 3, (32,) * 3))
    assert [type(t).__name__ for t in edited.transforms] == ["ToModelGrid", "CropOrPad", "RescaleIntensity"]
    assert [type(t).__name__ for t in augmentation("light").transforms] == ["RandomFlip"]
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.rand(1, 20, 20, 20) * 100))
    out = edited(subject)["image"].data
    assert out.shape == (1, 32, 32, 32) and float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_volgan_infer_runs_the_objects_inference_json_lists(tmp_path, monkeypatch):
    from volgan.data.io import Volume
    from volgan.segcls.network import SegClsNet
    from volgan.segcls.predict import LoadedModel, predict
    from volgan.transforms import Preprocessing

    torch.manual_seed(0)
    model = LoadedModel(SegClsNet(channels=(4, 8)).eval(), Preprocessing((2.0,) * 3, (16,) * 3))
    rng = np.random.default_rng(0)
    volume = Volume(rng.random((24, 20, 18)).astype(np.float32) * 100, np.diag([1.0, 1.0, 1.0, 1.0]))
    shipped = predict(model, volume)
    assert shipped.model_input.shape[2:] == (24 // 2, 20 // 2, 18 // 2)  # 2 mm grid, z-normalised
    assert abs(float(shipped.model_input.mean())) < 1e-4

    def edit(_, inference):  # the model input at 1 mm instead of the model card's spacing, and not normalised
        inference["model_input"]["transforms"][0]["spacing"] = [1.0, 1.0, 1.0]
        del inference["model_input"]["transforms"][1]

    edited_bundles(tmp_path, monkeypatch, edit)
    edited = predict(model, volume)
    assert edited.model_input.shape[2:] == (24, 20, 18)
    assert torch.allclose(edited.model_input[0, 0], torch.from_numpy(volume.array))
    assert edited.label.array.shape == volume.shape
