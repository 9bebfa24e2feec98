"""The spine_segcls bundle as a user runs it: python -m monai.bundle run / ckpt_export / verify_metadata,
torchrun with two gloo processes, --tracking mlflow."""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import Killed, cut_save_short, mlflow_metrics

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "spine_segcls"
SCHEMA = ROOT / "bundles" / "meta_schema_20240725.json"
QUICK = ["--max_epochs", "2", "--patch", "[32,32,32]", "--batch_size", "2"]


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
                 *QUICK)
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
    bundle("run", "--config_file", "configs/inference.json", "--bundle_root", root,
           "--dataset_dir", phantom_dir / "imagesTs")
    outputs = sorted((root / "eval" / "inference").glob("*_seg.nii.gz"))
    assert len(outputs) == len(list((phantom_dir / "imagesTs").glob("*.nii.gz"))) > 0
    # MONAI's pieces (LoadImaged … SlidingWindowInferer … Invertd, SaveImaged) give what volgan infer gives
    import csv

    import nibabel as nib
    import numpy as np

    from volgan.segcls.inference import run_inference
    from volgan.segcls.predict import load_model

    run_inference(load_model(root, "cpu"), [phantom_dir / "imagesTs"], tmp_path / "volgan", overwrite=True)
    theirs = {Path(r[0]).name: float(r[1]) for r in
              csv.reader((root / "eval" / "inference" / "predictions.csv").open(encoding="utf-8"))}
    ours = {Path(r["input"]).name: float(r["tumor_probability"]) for r in
            csv.DictReader((tmp_path / "volgan" / "predictions.csv").open(encoding="utf-8"))}
    assert theirs.keys() == ours.keys() and all(abs(theirs[k] - ours[k]) < 1e-4 for k in ours), (theirs, ours)
    for path in outputs:
        bundle_map, volgan_map = nib.load(path), nib.load(tmp_path / "volgan" / path.name)
        source = nib.load(phantom_dir / "imagesTs" / path.name.replace("_seg", ""))
        assert bundle_map.shape == source.shape and np.allclose(bundle_map.affine, source.affine)
        assert np.mean(np.asarray(bundle_map.dataobj) == np.asarray(volgan_map.dataobj)) > 0.999
    bundle("run", "--config_file", "configs/evaluate.json", "--bundle_root", root, "--dataset_dir", phantom_dir,
           "--bootstrap", "50")
    summary = json.loads((root / "eval" / "report" / "summary.json").read_text(encoding="utf-8"))
    assert summary["volgan"]["n_cases"] == len(outputs) and "classification" in summary
    bundle("ckpt_export", "network_def", "--filepath", root / "models" / "model.ts", "--ckpt_file",
           root / "models" / "model.pt", "--meta_file", "configs/metadata.json", "--config_file",
           "configs/inference.json", "--bundle_root", root)
    scripted = torch.jit.load(str(root / "models" / "model.ts"))
    from volgan.segcls.predict import load_model

    eager = load_model(root, "cpu").network
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        for a, b in zip(scripted(x), eager(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)


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


def test_torchrun_two_gloo_processes(tmp_path, phantom_dir):
    log = bundle("--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file",
                 "['configs/train.json','configs/multi_gpu_train.json']", "--bundle_root", tmp_path,
                 "--dataset_dir", phantom_dir, *QUICK, runner=(sys.executable, "-m", "torch.distributed.run"))
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "model.json").is_file()
    # 12 cases: 4 test, 8 training of which 2 validate; 6 train -> 3 per rank -> 2 batches (one process: 3)
    iterations = set(re.findall(r"Epoch: 1/2, Iter: \d+/(\d+) --", log))
    assert iterations == {"2"}, iterations


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
