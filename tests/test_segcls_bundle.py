"""The spine_segcls bundle as a user runs it: python -m monai.bundle run / ckpt_export / verify_metadata,
torchrun with two gloo processes, --tracking mlflow."""

from __future__ import annotations

import csv
import filecmp
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Killed, cut_save_short, mlflow_metrics

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "spine_segcls"
SCHEMA = ROOT / "bundles" / "meta_schema_20240725.json"
QUICK = ["--max_epochs", "2", "--patch", "[32,32,32]", "--batch_size", "2"]
NARROW = ["--channels", "[8,16,32,64]"]  # not the default widths: inference and export must read them from model.json


def bundle(*args, cwd=BUNDLE, timeout=300, runner=(sys.executable, "-m", "monai.bundle")):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([*runner, *map(str, args)], cwd=cwd, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory, phantom_dir):
    root = tmp_path_factory.mktemp("segcls_bundle")
    log = bundle("run", "--config_file", "configs/train.json", "--bundle_root", root, "--dataset_dir", phantom_dir,
                 *QUICK, *NARROW)
    return root, log


def test_metadata_verifies_against_the_schema(tmp_path):
    shared = ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"
    if shared.exists():
        assert filecmp.cmp(shared, SCHEMA, shallow=False), "the bundled schema copy differs from shared/"
    schema = tmp_path / SCHEMA.name
    schema.write_bytes(SCHEMA.read_bytes())
    out = bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", schema)
    assert "metadata is verified with no error" in out


def test_train_writes_everything_under_bundle_root(trained):
    root, log = trained
    assert (root / "models" / "model.pt").is_file()
    card = json.loads((root / "models" / "model.json").read_text(encoding="utf-8"))
    assert card["patch"] == [32, 32, 32]
    assert list((root / "eval").glob("events.out.tfevents.*")), "no TensorBoard log"
    assert re.search(r"Epoch\[2\] Metrics -- val_mean_dice: [0-9.]+ val_score", log)
    assert re.search(r"Epoch: 2/2, Iter: \d+/\d+ -- train_loss: [0-9.]+", log)  # progress as lines
    assert "Epoch [" not in log  # no tqdm bar (its \r redraws) where stderr is not a terminal
    assert not (BUNDLE / "models").exists() and not (BUNDLE / "eval").exists()


def test_inference_evaluate_and_export(trained, phantom_dir, tmp_path):
    root, _ = trained
    log = bundle("run", "--config_file", "configs/inference.json", "--bundle_root", root,
                 "--dataset_dir", phantom_dir / "imagesTs")
    outputs = sorted((root / "eval" / "inference").glob("*_seg.nii.gz"))
    assert len(outputs) == len(list((phantom_dir / "imagesTs").glob("*.nii.gz"))) > 0
    assert f"spine_segcls inference: batch {len(outputs)}/{len(outputs)}" in log
    assert f"spine_segcls inference: done, {len(outputs)} batches" in log
    # one definition: volgan infer runs the model input inference.json lists, so the bundle's workflow (LoadImaged,
    # model_input, ModelInferer, Invertd, SaveImaged) and volgan infer give the same maps and the same table
    from volgan.segcls.inference import run_inference
    from volgan.segcls.predict import load_model

    run_inference(load_model(root, "cpu"), [phantom_dir / "imagesTs"], tmp_path / "volgan", overwrite=True)
    import nibabel as nib

    def table(folder):
        rows = json.loads((folder / "predictions.json").read_text(encoding="utf-8"))
        return {Path(r["input"]).name: {k: v for k, v in r.items() if k.startswith("p_") or k.startswith("pred")
                                        or k == "tumor_probability"} for r in rows}

    theirs, ours = table(root / "eval" / "inference"), table(tmp_path / "volgan")
    assert theirs.keys() == ours.keys() and len(ours) == len(outputs)
    for name in ours:
        assert theirs[name]["predicted_tumor_type"] == ours[name]["predicted_tumor_type"], name
        assert all(abs(theirs[name][k] - ours[name][k]) < 1e-5 for k in ours[name]), (theirs[name], ours[name])
    for path in outputs:
        bundle_map, volgan_map = nib.load(path), nib.load(tmp_path / "volgan" / path.name)
        source = nib.load(phantom_dir / "imagesTs" / path.name.replace("_seg", ""))
        assert bundle_map.shape == source.shape and np.allclose(bundle_map.affine, source.affine)
        assert np.mean(np.asarray(bundle_map.dataobj) == np.asarray(volgan_map.dataobj)) > 0.9999
    # evaluate.json extends inference.json, as model-zoo bundles do
    log = bundle("run", "--config_file", "['configs/inference.json','configs/evaluate.json']", "--bundle_root", root,
                 "--dataset_dir", phantom_dir, "--bootstrap", "50")
    summary = json.loads((root / "eval" / "report" / "summary.json").read_text(encoding="utf-8"))
    assert summary["volgan"]["n_cases"] == len(outputs) and "classification" in summary
    n = len(outputs)
    assert table(root / "eval" / "predictions") == theirs  # the test split is imagesTs here
    assert f"spine_segcls inference: batch {n}/{n}" in log and f"evaluate: {n}/{n} cases" in log  # lines, not bars
    assert f"evaluation: {n} cases, foreground Dice" in log and "\r" not in log
    # in this process (each command in its own takes some 10 s of start-up); each raises on a failure
    from monai.bundle import ckpt_export, run, verify_net_in_out

    configs = {"meta_file": str(BUNDLE / "configs" / "metadata.json"),
               "config_file": str(BUNDLE / "configs" / "inference.json"), "bundle_root": str(root)}
    ckpt_export("network_def", filepath=str(root / "models" / "model.ts"), ckpt_file=str(root / "models" / "model.pt"),
                **configs)
    verify_net_in_out("network_def", device="cpu", **configs)
    scripted = torch.jit.load(str(root / "models" / "model.ts"))
    eager = load_model(root, "cpu").network
    assert eager.encoders[0].conv1.conv.out_channels == 8  # the trained widths, not the defaults
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        seg, cls = eager(x)
        assert torch.allclose(scripted(x), seg, atol=1e-5)
        for a, b in zip(scripted.segment_and_classify(x), (seg, cls), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    # the export runs where the checkpoint runs: volgan infer, and the bundle's inference with network_def swapped
    run_inference(load_model(root / "models" / "model.ts", "cpu"), [phantom_dir / "imagesTs"], tmp_path / "ts",
                  overwrite=True)
    ts_rows = list(csv.DictReader((tmp_path / "ts" / "predictions.csv").open(encoding="utf-8")))
    pt_rows = list(csv.DictReader((tmp_path / "volgan" / "predictions.csv").open(encoding="utf-8")))
    for ts_row, pt_row in zip(ts_rows, pt_rows, strict=True):
        for key in ("tumor_probability", "p_intramedullary"):
            assert abs(float(ts_row[key]) - float(pt_row[key])) < 1e-4, (key, ts_row, pt_row)
    run(**configs, logging_file=False, dataset_dir=str(phantom_dir / "imagesTs"),
        network_def=f"$torch.jit.load('{root / 'models' / 'model.ts'}')", output_dir=str(tmp_path / "bundle_ts"),
        **{"handlers#0#_disabled_": True})
    for path in outputs:
        assert np.array_equal(np.asarray(nib.load(path).dataobj),
                              np.asarray(nib.load(tmp_path / "bundle_ts" / path.name).dataobj))


@pytest.mark.parametrize("workflow, config", [("train", "train.json"), ("infer", "inference.json")])
def test_model_zoo_properties(tmp_path, phantom_dir, workflow, config):
    """What model-zoo CI and MONAI's federated-learning client check: every required property of the workflow."""
    from monai.bundle import ConfigWorkflow

    flow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / config), workflow_type=workflow,
                          meta_file=str(BUNDLE / "configs" / "metadata.json"),
                          logging_file=str(BUNDLE / "configs" / "logging.conf"), bundle_root=str(tmp_path),
                          dataset_dir=str(phantom_dir / "imagesTs" if workflow == "infer" else phantom_dir))
    flow.initialize()
    assert flow.check_properties() == []


@pytest.mark.parametrize("patches", [0, 2])
def test_torchrun_two_gloo_processes(tmp_path, phantom_dir, patches):
    """Whole volumes, or 2 patches of 16³ per volume (patch training: each process cuts its own volumes' patches)."""
    sampling = ["--patch_samples", str(patches), "--sample_patch", "[16,16,16]"]
    log = bundle("--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file",
                 "['configs/train.json','configs/multi_gpu_train.json']", "--bundle_root", tmp_path,
                 "--dataset_dir", phantom_dir, *QUICK, *sampling,
                 runner=(sys.executable, "-m", "torch.distributed.run"))
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "model.json").is_file()
    card = json.loads((tmp_path / "models" / "model.json").read_text(encoding="utf-8"))
    assert card["patch"] == ([16] * 3 if patches else [32] * 3)
    # 12 cases: 4 test, 8 training of which 2 validate; 6 train -> 3 per rank -> 2 batches (one process: 3); with 2
    # patches each, 6 patches per rank -> 3 batches
    iterations = set(re.findall(r"Epoch: 1/2, Iter: \d+/(\d+) --", log))
    assert iterations == ({"3"} if patches else {"2"}), iterations
    writers = {path.name.split(".")[-2] for path in (tmp_path / "eval").glob("events.out.tfevents.*")}
    assert len(writers) == 1, writers  # TensorBoard events from the first process only (its pid in each name)


@pytest.mark.parametrize("name", ["spine_segcls", "spine_cgan"])
def test_multi_gpu_overrides_never_address_a_handler_by_position(name):
    """Reordering train.json's handlers must not silently retarget multi_gpu_train.json: it sets the TensorBoard
    writer by id and picks the every-process handlers by type."""
    configs = ROOT / "bundles" / name / "configs"
    train = json.loads((configs / "train.json").read_text(encoding="utf-8"))
    multi = json.loads((configs / "multi_gpu_train.json").read_text(encoding="utf-8"))
    assert not any(re.search(r"handlers#\d", key) or re.search(r"handlers\[", str(value))
                   for key, value in multi.items())
    assert "tensorboard_writer" in multi and train["tensorboard_writer"] is None
    boards = [h for part in ("train", "validate") if part in train for h in train[part]["handlers"]
              if h["_target_"] == "TensorBoardStatsHandler"]
    assert boards and all(h["summary_writer"] == "@tensorboard_writer" for h in boards)


def test_tracking_mlflow(tmp_path, phantom_dir):
    pytest.importorskip("mlflow")
    bundle("run", "--config_file", "configs/train.json", "--bundle_root", tmp_path, "--dataset_dir", phantom_dir,
           "--max_epochs", "1", "--patch", "[32,32,32]", "--tracking", "mlflow")
    metrics = mlflow_metrics(tmp_path / "eval" / "mlruns.db")
    assert {"train_loss", "val_score"} <= set(metrics), sorted(metrics)


@pytest.mark.parametrize("kind", ["best", "interval"])
def test_a_save_cut_short_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch, kind):
    from ignite.engine import Engine, Events

    from volgan.training import CheckpointSaver

    network, engine = torch.nn.Linear(2, 2), Engine(lambda engine, batch: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def improve(engine):  # each epoch a better score and other weights
        engine.state.metrics["score"] = engine.state.epoch
        torch.nn.init.constant_(network.weight, engine.state.epoch)

    if kind == "best":
        saver = CheckpointSaver(save_dir=tmp_path, save_dict={"model": network}, save_key_metric=True,
                                key_metric_filename="model.pt", key_metric_name="score")
    else:
        saver = CheckpointSaver(save_dir=tmp_path, save_dict={"model": network, "trainer": engine}, save_interval=1,
                                n_saved=1, file_prefix="checkpoint", epoch_level=True)
    saver.attach(engine)
    cut_save_short(monkeypatch, 3)
    with pytest.raises(Killed):
        engine.run([0], max_epochs=5)
    [saved] = list(tmp_path.iterdir())
    state = torch.load(saved, weights_only=True)
    weight = state["weight"] if kind == "best" else state["model"]["weight"]
    assert saved.name == ("model.pt" if kind == "best" else "checkpoint_checkpoint_epoch=2.pt")
    assert torch.equal(weight, torch.full((2, 2), 2.0))


def test_a_nan_stops_training_before_the_step_and_model_pt_stays_finite(tmp_path, phantom_dir):
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from volgan.errors import NonFiniteTraining

    workflow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "train.json"), workflow_type="train",
                              meta_file=str(BUNDLE / "configs" / "metadata.json"), bundle_root=str(tmp_path),
                              dataset_dir=str(phantom_dir), max_epochs=3, patch=[32, 32, 32], batch_size=2,
                              channels=[4, 8, 16, 32], progress=False)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    network = workflow.parser.get_parsed_content("network")

    def poison(_engine) -> None:
        with torch.no_grad():
            next(network.parameters()).fill_(float("inf"))

    trainer.add_event_handler(Events.EPOCH_STARTED(once=2), poison)
    with pytest.raises(NonFiniteTraining, match=r"^spine_segcls: training stopped at epoch 2, iteration \d+: loss is "
                                                r"not finite .*the last finite checkpoint is kept"):
        workflow.run()
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_the_loss_goes_to_the_training_device(tmp_path, phantom_dir):
    """The loss holds its class weights as a buffer: on a GPU they must move with the network (else the first
    step fails with 'Expected all tensors to be on the same device', as it did on an H100)."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "train.json"), workflow_type="train",
                              meta_file=str(BUNDLE / "configs" / "metadata.json"), bundle_root=str(tmp_path),
                              dataset_dir=str(phantom_dir), device="$torch.device('meta')", progress=False)
    workflow.initialize()
    loss = workflow.parser.get_parsed_content("train#trainer#loss_function")
    buffers = list(loss.buffers())
    assert buffers and all(b.device.type == "meta" for b in buffers)


def test_bundle_files_are_ascii():
    """MONAI opens bundle configs with the locale's encoding (open() without one); under an ASCII locale a single
    non-ASCII character in a config or metadata file stops every bundle run."""
    for path in sorted((ROOT / "bundles").glob("*/configs/*.json")):
        path.read_bytes().decode("ascii")


def test_federated_learning_client_one_round(tmp_path, phantom_dir):
    """MONAI's FL client (what NVFlare drives) on the bundle, one local round: initialize, train one epoch from the
    global weights, get_weights (the difference sent back), evaluate the global weights on the validation split."""
    import shutil

    from monai.fl.client import MonaiAlgo
    from monai.fl.utils.constants import ExtraItems, WeightType
    from monai.fl.utils.exchange_object import ExchangeObject

    site = tmp_path / "site1"
    shutil.copytree(BUNDLE, site)  # the FL system provisions the bundle into the client's app folder
    overrides = {"bundle_root": str(site), "dataset_dir": str(phantom_dir), "patch": [32, 32, 32], "batch_size": 2,
                 "progress": False}
    # the client's default evaluation config: configs/train.json with configs/evaluate.json over it
    algo = MonaiAlgo(bundle_root=str(site), local_epochs=1, train_kwargs=dict(overrides), eval_kwargs=dict(overrides))
    algo.initialize(extra={ExtraItems.CLIENT_NAME: "site1"})
    global_weights = {k: v.clone() for k, v in algo.trainer.network.state_dict().items()}
    algo.train(ExchangeObject(weights=global_weights, weight_type=WeightType.WEIGHTS), extra={})
    update = algo.get_weights()
    assert update.weight_type == WeightType.WEIGHT_DIFF and update.statistics["num_executed_iterations"] > 0
    assert set(update.weights) == set(global_weights)
    assert any(np.abs(np.asarray(d)).max() > 0 for d in update.weights.values()), "training changed no weight"
    metrics = algo.evaluate(ExchangeObject(weights=global_weights, weight_type=WeightType.WEIGHTS))
    assert {"val_mean_dice", "val_score"} <= set(metrics.metrics), metrics.metrics
    assert all(np.isfinite(float(v)) for v in metrics.metrics.values())
    algo.finalize()
    assert (site / "models" / "model.pt").is_file()
