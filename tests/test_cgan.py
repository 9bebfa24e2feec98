"""spine_cgan as a user runs it: bundle training and synthesis at 16³, resume after a kill, conditioning,
determinism, painting given label maps, the quality report, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Killed, cut_save_short, mlflow_metrics
from test_segcls_bundle import SCHEMA, bundle

from volgan.data.datalist import read_datalist
from volgan.data.io import read_volume
from volgan.data.phantom import PhantomConfig, make_dataset
from volgan.gan.checkpoints import checkpoints, latest_checkpoint
from volgan.gan.pose import POSE_FIELDS
from volgan.gan.synth import exact_counts, load_synthesizer, synthesize

ROOT = Path(__file__).resolve().parent.parent
CGAN = ROOT / "bundles" / "spine_cgan"
TINY = ["--size", "16", "--base", "8", "--batch_size", "4", "--monitor_interval", "1"]


@pytest.fixture(scope="module")
def real16(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real16") / "data"
    make_dataset(out, 16, PhantomConfig(size=(16, 16, 16)), seed=3, test_fraction=0.25)
    return out


@pytest.fixture(scope="module")
def gan(tmp_path_factory, real16) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("cgan")
    log = bundle("run", "--config_file", "configs/train.json", "--bundle_root", root, "--dataset_dir", real16,
                 "--max_epochs", "2", *TINY, cwd=CGAN)
    return root, log


@pytest.mark.parametrize("workflow, config", [("train", "train.json"), ("infer", "inference.json")])
def test_model_zoo_properties(gan, real16, workflow, config):
    """What model-zoo CI and MONAI's federated-learning client check of a workflow: every required property
    (train#inferer; the inference's dataset, evaluator, network_def and inferer)."""
    from monai.bundle import ConfigWorkflow

    root, _ = gan
    flow = ConfigWorkflow(config_file=str(CGAN / "configs" / config), workflow_type=workflow,
                          meta_file=str(CGAN / "configs" / "metadata.json"),
                          logging_file=str(CGAN / "configs" / "logging.conf"), bundle_root=str(root),
                          dataset_dir=str(real16))
    flow.initialize()
    assert flow.check_properties() == []


def test_metadata(tmp_path):
    schema = tmp_path / SCHEMA.name
    schema.write_bytes(SCHEMA.read_bytes())
    assert "verified with no error" in bundle("verify_metadata", "--meta_file", "configs/metadata.json",
                                              "--filepath", schema, cwd=CGAN)


def test_train_writes_checkpoints_logs_and_the_collapse_monitor(gan):
    root, log = gan
    assert (root / "models" / "generator.pt").is_file()
    assert len(list((root / "models").glob("checkpoint_*.pt"))) == 1
    assert list((root / "eval").glob("events.out.tfevents.*"))
    assert "msssim_real" in log and "msssim_synthetic" in log
    import re

    gaps = [float(g) for g in re.findall(r"diversity_gap: (-?[0-9.]+)", log)]
    warned = [int(p) for p in re.findall(r"possible mode collapse: synthetic MS-SSIM [0-9.]+ is (\d+)% above", log)]
    assert gaps and all(p >= 15 for p in warned)  # a warning only beyond the 15% target
    assert warned or not any(g > 0.15 for g in gaps), (gaps, warned)
    state = torch.load(root / "models" / "generator.pt", weights_only=True)
    assert state["config"]["size"] == 16 and state["stats"]["orientation"] == "RAS" and state["epoch"] == 2


def same_volumes(ours: Path, theirs: Path) -> None:
    """Both synthetic datalists hold the same cases, arrays, affines and record of what was drawn."""
    a, b = (json.loads((d / "dataset.json").read_text(encoding="utf-8")) for d in (ours, theirs))
    assert a["volgan"] == b["volgan"] and a["training"] == b["training"]
    for case in read_datalist(ours).cases:
        for kind in ("image", "label"):
            mine, other = read_volume(getattr(case, kind)), read_volume(theirs / getattr(case, kind).relative_to(ours))
            assert np.allclose(mine.affine, other.affine)
            if kind == "label":
                assert np.array_equal(mine.array, other.array)
            else:  # the bundle runs on one thread, this test on two: float sums differ in the last bits
                assert np.allclose(mine.array, other.array, rtol=1e-5, atol=1e-3)


def test_bundle_inference_is_volgan_synth_in_monai_pieces(gan, real16, tmp_path):
    """configs/inference.json (dataset, DrawLabelMapd, the image generator as network_def behind a
    CheckpointLoader, SimpleInferer, SynthesisWriter) writes what volgan.gan.synth.synthesize writes, for the
    label generator's maps and for real-deformed maps from a pool; it logs a line per case and a summary."""
    root, _ = gan
    synth = load_synthesizer(root, "cpu")
    log = bundle("run", "--config_file", "configs/inference.json", "--bundle_root", root, "--num_cases", "4",
                 "--seed", "3", "--output_dir", tmp_path / "bundle_gan", cwd=CGAN)
    assert "spine_cgan synthesis: batch 4/4" in log and "spine_cgan synthesis: done, 4 batches" in log
    assert f"spine_cgan: 4 labeled volumes and their datalist in {tmp_path / 'bundle_gan'}" in log
    from monai.bundle import run  # the second in this process: a command's start-up takes some 10 s

    run(config_file=str(CGAN / "configs" / "inference.json"), meta_file=str(CGAN / "configs" / "metadata.json"),
        logging_file=False, bundle_root=str(root), num_cases=4, seed=3, pool=str(real16),
        output_dir=str(tmp_path / "bundle_pool"))
    for name, kwargs in (("gan", {}), ("pool", {"label_source": "real-deformed", "pool": real16})):
        synthesize(synth, tmp_path / f"volgan_{name}", n_cases=4, seed=3, **kwargs)
        same_volumes(tmp_path / f"volgan_{name}", tmp_path / f"bundle_{name}")


def test_bundle_evaluate_writes_the_quality_report(gan, real16):
    root, _ = gan
    import logging

    from monai.bundle import run  # in this process: a command's start-up takes some 10 s

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("spine_cgan")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run(config_file=[str(CGAN / "configs" / "inference.json"), str(CGAN / "configs" / "evaluate.json")],
            meta_file=str(CGAN / "configs" / "metadata.json"), logging_file=False, bundle_root=str(root),
            dataset_dir=str(real16), num_cases=6)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    report = json.loads((root / "eval" / "quality" / "quality.json").read_text(encoding="utf-8"))
    assert report["overall"]["frechet_synthetic_vs_real"] > 0
    assert any(m.startswith(f"quality: Fréchet {report['overall']['frechet_synthetic_vs_real']:.3f}")
               for m in messages), messages


def test_generators_export_to_torchscript_and_verify(gan, tmp_path):
    """ckpt_export of network_def (the image generator) from generator.pt, verify_net_in_out against the metadata,
    and both generators scripted give the eager outputs."""
    root, _ = gan
    from monai.bundle import ckpt_export, verify_net_in_out  # in this process; each raises on a failure

    configs = {"meta_file": str(CGAN / "configs" / "metadata.json"),
               "config_file": str(CGAN / "configs" / "inference.json"), "bundle_root": str(root)}
    grid = {"_meta_#network_data_format#inputs#image#spatial_shape": [16, 16, 16],
            "_meta_#network_data_format#outputs#pred#spatial_shape": [16, 16, 16]}
    verify_net_in_out("network_def", device="cpu", **configs, **grid)
    ckpt_export("network_def", filepath=str(tmp_path / "image_generator.ts"),
                ckpt_file=str(root / "models" / "generator.pt"), key_in_ckpt="image_generator", **configs)
    synth = load_synthesizer(root, "cpu")
    scripted = torch.jit.load(str(tmp_path / "image_generator.ts"))
    label_script = torch.jit.script(synth.label_generator)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 6, (2, 16, 16, 16)), 6).permute(0, 4, 1, 2, 3).float()
    z, texture = torch.randn(2, synth.image_generator.z_dim), torch.randn(2, 1, 16, 16, 16)
    z_label, classes = torch.randn(2, synth.label_generator.z_dim), torch.tensor([0, 3])
    with torch.no_grad():
        assert torch.allclose(scripted(onehot, z, texture), synth.image_generator(onehot, z, texture), atol=1e-5)
        assert torch.allclose(label_script(z_label, classes), synth.label_generator(z_label, classes), atol=1e-5)


def test_resume_after_a_kill(tmp_path, real16):
    """Killed after its second checkpoint, then run again: it resumes, and ends with the weights of a run without a
    break."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--bundle_root",
            str(tmp_path), "--dataset_dir", str(real16), "--max_epochs", "1000", *TINY]
    proc = subprocess.Popen(args, cwd=CGAN, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and max(checkpoints(tmp_path / "models"), default=(0,))[0] < 2:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert checkpoints(tmp_path / "models"), "no checkpoint before the kill"
    epoch, latest = checkpoints(tmp_path / "models")[-1]
    log = bundle("run", "--config_file", "configs/train.json", "--bundle_root", tmp_path, "--dataset_dir", real16,
                 "--max_epochs", str(epoch + 1), *TINY, cwd=CGAN)
    assert f"Restored all variables from {latest}" in log, log[-2000:]
    assert f"Epoch[{epoch + 1}] Complete" in log and f"Epoch[{epoch}] Complete" not in log
    resumed = torch.load(tmp_path / "models" / "generator.pt", weights_only=True)
    assert resumed["epoch"] == epoch + 1
    straight = tmp_path / "uninterrupted"
    bundle("run", "--config_file", "configs/train.json", "--bundle_root", straight, "--dataset_dir", real16,
           "--max_epochs", str(epoch + 1), *TINY, cwd=CGAN)
    uninterrupted = torch.load(straight / "models" / "generator.pt", weights_only=True)
    for net in ("label_generator", "image_generator"):  # bit for bit: the same machine and thread count
        differ = [k for k, v in uninterrupted[net].items() if not torch.equal(v, resumed[net][k])]
        assert not differ, f"the resumed {net} differs from the uninterrupted one in {len(differ)} tensors"


def test_a_save_cut_short_leaves_the_previous_checkpoint_whole(tmp_path, gan, real16, monkeypatch):
    from monai.bundle import ConfigWorkflow

    shutil.copytree(gan[0] / "models", tmp_path / "models")
    assert [epoch for epoch, _ in checkpoints(tmp_path / "models")] == [2]
    cut_save_short(monkeypatch, 2, counts=lambda obj: "trainer" in obj)  # the second checkpoint of the run
    workflow = ConfigWorkflow(str(CGAN / "configs" / "train.json"), workflow_type="train", bundle_root=str(tmp_path),
                              dataset_dir=str(real16), max_epochs=4, size=16, base=8, batch_size=4, progress=False,
                              logging_file=False)
    workflow.initialize()
    with pytest.raises(RuntimeError) as failed:  # the bundle's config wraps what its expression raised
        workflow.run()
    assert isinstance(failed.value.__cause__, Killed)
    assert [epoch for epoch, _ in checkpoints(tmp_path / "models")] == [3]
    assert torch.load(latest_checkpoint(tmp_path / "models"), weights_only=True)["trainer"]["iteration"] == 9


def test_exact_counts():
    assert exact_counts("none=0.5,intramedullary=0.2,vertebral=0.3", 10) == {0: 5, 1: 2, 2: 0, 3: 3}
    assert sum(exact_counts("none=0.4,vertebral=0.3,intramed=0.3", 10).values()) == 10
    with pytest.raises(ValueError, match="add up to 3"):
        exact_counts("none=1,vertebral=1,intramed=1", 10)
    assert exact_counts(None, 6) == {0: 2, 1: 2, 2: 1, 3: 1}


def test_synth_conditioning_and_determinism(cli, tmp_path, gan):
    root, _ = gan
    args = ["synth", "--checkpoint", root, "--cases", "8", "--types", "none=0.5,vertebral=0.25,intramedullary=0.25"]
    assert cli(*args, "--out", tmp_path / "a", "--seed", "4").code == 0
    assert cli(*args, "--out", tmp_path / "b", "--seed", "4").code == 0
    assert cli(*args, "--out", tmp_path / "c", "--seed", "5").code == 0
    cases = read_datalist(tmp_path / "a").cases
    assert sorted(c.tumor_type for c in cases) == [0, 0, 0, 0, 1, 1, 3, 3]
    differs = False
    for case in cases:
        label = read_volume(case.label, label=True).array
        assert (label == 5).any() == (case.tumor_type != 0)
        image = read_volume(case.image)
        assert image.shape == (16, 16, 16) and image.spacing == pytest.approx((1.5, 1.5, 1.5))
        twin = read_volume(tmp_path / "b" / "imagesTr" / case.image.name)
        assert np.array_equal(image.array, twin.array)
        other = read_volume(tmp_path / "c" / "imagesTr" / case.image.name)
        differs |= not np.array_equal(image.array, other.array)
    assert differs


def test_synth_paints_given_label_maps_in_their_geometry(cli, tmp_path, gan):
    root, _ = gan
    make_dataset(tmp_path / "given", 3, PhantomConfig(size=(20, 18, 16), orientation="LPS"), seed=1,
                 test_fraction=0)
    result = cli("synth", "--checkpoint", root, "--labels", tmp_path / "given" / "labelsTr", "--out", tmp_path / "o")
    assert result.code == 0, result.err
    for case in read_datalist(tmp_path / "o").cases:
        given = read_volume(tmp_path / "given" / "labelsTr" / case.label.name, label=True)
        label, image = read_volume(case.label, label=True), read_volume(case.image)
        assert np.array_equal(label.array, given.array) and image.shape == given.shape
        assert np.allclose(image.affine, given.affine) and image.orientation == "LPS"


def test_quality_report_fields(cli, tmp_path, gan, real16):
    root, _ = gan
    assert cli("synth", "--checkpoint", root, "--cases", "8", "--out", tmp_path / "s").code == 0
    from volgan.segcls.network import SegClsNet

    model = tmp_path / "segcls" / "model.pt"
    model.parent.mkdir()
    torch.save(SegClsNet(channels=(4, 8, 16, 32)).state_dict(), model)
    (model.parent / "model.json").write_text(json.dumps({"spacing": [1.5] * 3, "patch": [16] * 3,
                                                         "channels": [4, 8, 16, 32]}), encoding="utf-8")
    result = cli("quality", "--real", real16, "--synthetic", tmp_path / "s", "--out", tmp_path / "q",
                 "--model", model)
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "q" / "quality.json").read_text(encoding="utf-8"))
    for key in ("frechet_synthetic_vs_real", "frechet_real_vs_real", "msssim_synthetic", "msssim_real"):
        assert report["overall"][key] is not None
    for key in ("msssim_synthetic", "msssim_real", "diversity_gap"):
        low, high = report["overall"][f"{key}_ci"]
        assert low <= report["overall"][key] <= high
    assert set(report["per_type"]) == {"none", "intramedullary", "intradural_extramedullary", "vertebral"}
    memo = report["memorization"]
    assert memo["synthetic_to_train"]["n"] == 8 and memo["test_to_train"]["n"] == 4
    assert isinstance(memo["synthetic_nearer_than_nearest_test"], int)
    assert memo["expected_by_chance"] == pytest.approx(8 / 5)
    assert 0 < memo["chance_of_as_many"] <= 1
    assert memo["smoothed"]["synthetic_to_train"]["n"] == 8
    assert memo["smoothed"]["synthetic_to_train"]["min"] <= memo["synthetic_to_train"]["min"]
    consistency = report["label_consistency"]
    assert set(consistency["dice"]) == {"vertebra", "disc", "cord", "csf", "tumor"}
    test_tumors = sum(c.tumor_type != 0 for c in read_datalist(real16).split("test"))
    assert consistency["real_test"]["n"] == test_tumors and 0 <= consistency["real_test"]["tumor_dice"] <= 1
    synth_cases = read_datalist(tmp_path / "s").cases
    assert consistency["tumor_bearing"]["n"] == sum(c.tumor_type != 0 for c in synth_cases)
    assert consistency["tumor_free"]["of"] == sum(c.tumor_type == 0 for c in synth_cases)
    assert 0 <= consistency["tumor_free"]["with_tumor_found"] <= consistency["tumor_free"]["of"]
    assert {t["met"] for t in consistency["targets"]} <= {True, False} and len(consistency["targets"]) == 6
    assert "resnet10" in report["feature_network"]
    pose = report["pose_spread"]
    from volgan.gan.trainer import training_stats
    from volgan.transforms import Preprocessing

    train = [c for c in read_datalist(real16).split("training") if c.source == "real"]
    assert pose["real_train"] == training_stats(train, Preprocessing((1.5,) * 3, (16,) * 3))["pose_std"]
    assert len(pose["synthetic"]) == len(pose["fields"]) == 8
    assert "## Pose spread" in (tmp_path / "q" / "quality.md").read_text(encoding="utf-8")
    assert (tmp_path / "q" / "quality.png").stat().st_size > 1000
    assert cli("quality", "--real", real16, "--synthetic", tmp_path / "s", "--out", tmp_path / "q2").code == 0
    missing = json.loads((tmp_path / "q2" / "quality.json").read_text(encoding="utf-8"))["label_consistency"]
    assert missing["model"] is None and "missing" in missing["note"]


def test_synth_real_deformed_label_maps(cli, tmp_path, gan, real16):
    """Label maps made from the pool's real training maps of the same class (a tumor-free volume never from a map
    that held a tumor): every class where its class says, deterministic, each case naming its source map (a
    training case, never a test one) and its label source."""
    root, _ = gan
    args = ["synth", "--checkpoint", root, "--cases", "8", "--label-source", "real-deformed", "--pool", real16]
    assert cli(*args, "--out", tmp_path / "a", "--seed", "2").code == 0
    assert cli(*args, "--out", tmp_path / "b", "--seed", "2").code == 0
    data = read_datalist(tmp_path / "a")
    meta = data.meta["volgan"]
    training = {c.name for c in read_datalist(real16).split("training")}
    assert meta["label_source"] == "real-deformed"
    from volgan.gan.label_maps import tumor_site
    from volgan.gan.label_sources import read_pool

    pool_maps, pool_names = read_pool(load_synthesizer(root, "cpu"), real16)  # on the generators' grid
    sources = dict(zip(pool_names, pool_maps, strict=True))
    for case in data.cases:
        info = meta["cases"][case.name]
        assert info["label_source"] == "real-deformed" and info["from"] in training
        same_class = [name for name, m in sources.items() if tumor_site(m) == case.tumor_type]
        assert info["from"] in (same_class or sources)  # any map only where the pool has none of the class
        label = read_volume(case.label, label=True).array
        assert (label == 5).any() == (case.tumor_type != 0)
        assert {1, 3, 4} <= set(np.unique(label).tolist())  # the anatomy of a real map
        if info["site_verified"]:
            assert tumor_site(label) == case.tumor_type
        twin = read_volume(tmp_path / "b" / "labelsTr" / case.label.name, label=True).array
        assert np.array_equal(label, twin)
    assert sum(meta["cases"][c.name]["site_verified"] for c in data.cases) >= 6
    assert any(c.tumor_type == 0 for c in data.cases) and any(tumor_site(m) == 0 for m in pool_maps)
    result = cli("synth", "--checkpoint", root, "--cases", "2", "--label-source", "real-deformed", "--out",
                 tmp_path / "c")
    assert result.code == 2 and "--pool" in result.err and not (tmp_path / "c").exists()


def test_tumor_removed_and_placed_in_its_host():
    from volgan.data.phantom import generate_case
    from volgan.gan.label_maps import place_tumor, remove_tumor, tumor_site

    case = generate_case(0, 1, PhantomConfig(size=(32, 32, 32), anatomy_field_mm=96.0))
    label = case.label.array
    assert case.tumor_type and (label == 5).any()
    clean = remove_tumor(label)
    assert not (clean == 5).any() and np.array_equal(clean[label != 5], label[label != 5])
    noise = torch.Generator().manual_seed(0)
    for tumor_type in (1, 2, 3):
        placed = place_tumor(clean, tumor_type, 60, noise)
        assert int((placed == 5).sum()) == 60 and tumor_site(placed) == tumor_type
    site = np.zeros(label.shape, dtype=bool)
    site[:, :, 20:23] = True  # a slab: the tumor grows from a centre inside it
    for seed in range(4):
        placed = place_tumor(clean, 2, 20, torch.Generator().manual_seed(seed), site=site)
        centre = np.argwhere(placed == 5).mean(axis=0)
        assert 17 <= centre[2] <= 26, centre


@pytest.mark.parametrize("args, needle", [
    (["--checkpoint", "nowhere.pt", "--cases", "2"], "no such generator checkpoint"),
    (["--cases", "2", "--types", "spinal=1"], "unknown tumor type"),
    (["--cases", "0"], "--cases must be at least 1"),
])
def test_synth_bad_input(cli, tmp_path, gan, args, needle):
    root, _ = gan
    full = args if "--checkpoint" in args else ["--checkpoint", root, *args]
    result = cli("synth", *full, "--out", tmp_path / "o")
    assert result.code == 2 and needle in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_synth_keeps_an_existing_dataset(cli, tmp_path, gan):
    root, _ = gan
    assert cli("synth", "--checkpoint", root, "--cases", "2", "--out", tmp_path / "o").code == 0
    before = (tmp_path / "o" / "dataset.json").read_bytes()
    result = cli("synth", "--checkpoint", root, "--cases", "2", "--out", tmp_path / "o", "--seed", "9")
    assert result.code == 2 and "--overwrite" in result.err
    assert (tmp_path / "o" / "dataset.json").read_bytes() == before


def test_synthesis_adds_what_the_training_spread_lacks(tmp_path, gan):
    root, _ = gan
    synth = load_synthesizer(root, "cpu")
    target = synth.stats["pose_std"]
    assert len(target) == 8 and any(t > 0 for t in target)
    synthesize(synth, tmp_path / "posed", n_cases=4, seed=1)
    spread = read_datalist(tmp_path / "posed").meta["volgan"]["pose_spread"]
    spread_values = list(spread.values())
    assert spread_values == synth.pose_spread and list(spread) == list(POSE_FIELDS)
    assert all(0 <= s <= t + 1e-6 for s, t in zip(synth.pose_spread, target, strict=True))
    synth.stats["pose_std"] = target[:6]
    del synth.__dict__["pose_spread"]  # a checkpoint from before the size numbers: rigid moves only
    assert synth.pose_spread[6:] == [0.0, 0.0] and synth.pose_spread[:6] == spread_values[:6]
    synth.stats.pop("pose_std")
    del synth.__dict__["pose_spread"]  # a checkpoint from before pose statistics: no pose added
    cases = synthesize(synth, tmp_path / "plain", n_cases=2, seed=1)
    assert read_datalist(tmp_path / "plain").meta["volgan"]["pose_spread"] is None
    assert all(info["pose"] is None for info in read_datalist(tmp_path / "plain").meta["volgan"]["cases"].values())
    assert len(cases) == 2


def test_diversity_intervals_follow_the_volumes():
    from volgan.evaluation.similarity import diversity_figures

    rng = np.random.default_rng(0)
    same = np.repeat(rng.normal(size=(1, 16, 16, 16)).astype(np.float32), 6, axis=0)
    alike = diversity_figures(same, same)
    assert alike["msssim_synthetic"] == pytest.approx(1.0) and alike["msssim_synthetic_ci"] == pytest.approx([1, 1])
    assert alike["diversity_gap"] == pytest.approx(0.0) and alike["diversity_gap_ci"] == pytest.approx([0, 0], abs=1e-6)
    mixed = np.concatenate([same[:4], rng.normal(size=(4, 16, 16, 16)).astype(np.float32)])
    figures = diversity_figures(mixed, same, seed=1)
    low, high = figures["msssim_synthetic_ci"]
    assert low < figures["msssim_synthetic"] < high and high - low > 0.1  # which volumes are drawn matters
    assert figures["diversity_gap_ci"][0] > 0.1
    assert diversity_figures(mixed, same[:1])["msssim_real"] is None


def test_memorization_counts_copies_and_says_what_chance_gives():
    from volgan.evaluation.similarity import memorization_figures

    rng = np.random.default_rng(0)
    train = rng.normal(size=(20, 8, 8, 8)).astype(np.float32)
    test = rng.normal(size=(9, 8, 8, 8)).astype(np.float32)
    copies = memorization_figures(train[:6] + 0.01, test, train)
    assert copies["synthetic_nearer_than_nearest_test"] == 6 and copies["expected_by_chance"] == pytest.approx(0.6)
    counts = [memorization_figures(rng.normal(size=(30, 8, 8, 8)), rng.normal(size=(9, 8, 8, 8)), train)
              ["synthetic_nearer_than_nearest_test"] for _ in range(40)]
    assert np.mean(counts) == pytest.approx(30 / 10, rel=0.4)  # like-distributed volumes: chance level
    assert copies["chance_of_as_many"] == pytest.approx(1 / 5005)  # 6 copies among 15: C(6, 6) / C(15, 6)


def test_chance_of_as_many_nearer_volumes_matches_a_simulation():
    from volgan.evaluation.similarity import chance_of_at_least

    rng = np.random.default_rng(1)
    draws = rng.random((20000, 48 + 12))  # exchangeable distances: 48 synthetic, then 12 test
    counts = (draws[:, :48] < draws[:, 48:].min(axis=1, keepdims=True)).sum(axis=1)
    for k in (0, 2, 4, 7, 10):
        assert chance_of_at_least(k, 48, 12) == pytest.approx((counts >= k).mean(), abs=0.01)
    assert chance_of_at_least(0, 48, 12) == 1.0


def test_bf16_training_and_switches_given_on_the_command_line(tmp_path, real16):
    log = bundle("run", "--config_file", "configs/train.json", "--bundle_root", tmp_path, "--dataset_dir", real16,
                 "--max_epochs", "1", *TINY, "--amp", "true", "--progress", "false", cwd=CGAN)
    assert "Epoch[1] Complete" in log and "Epoch [1/1]" not in log  # "false" turns the bar off
    state = torch.load(tmp_path / "models" / "generator.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["label_generator"].values() if v.is_floating_point())


@pytest.mark.parametrize("value, expected", [("true", True), ("False", False), ("0", False), ("on", True),
                                             (True, True), (0, False)])
def test_bundle_switches_read_words(value, expected):
    from volgan.training import flag

    assert flag(value) is expected


def test_bundle_switches_refuse_other_words():
    from volgan.training import bf16_autocast, flag

    with pytest.raises(ValueError, match="expected true or false"):
        flag("maybe")
    with pytest.raises(ValueError, match="expected true or false"):
        bf16_autocast("sometimes", "cpu")


def test_tumors_grow_in_their_host_to_the_asked_size():
    from scipy import ndimage

    from volgan.gan.label_maps import TUMOR_HOSTS, enforce_class, grow_region

    rng = np.random.default_rng(0)
    score = rng.normal(size=(12, 12, 12))
    preferred = np.zeros(score.shape, bool)
    preferred[2:6, 2:6, 2:6] = True
    inside = grow_region(score, 20, preferred)
    assert inside.sum() == 20 and not (inside & ~preferred).any() and ndimage.label(inside)[1] == 1
    assert inside[np.unravel_index(np.where(preferred, score, -np.inf).argmax(), score.shape)]
    spill = grow_region(score, 80, preferred)  # the preferred block holds 64: the rest spills, still connected
    assert spill.sum() == 80 and (spill & preferred).sum() == 64 and ndimage.label(spill)[1] == 1

    anatomy = np.zeros((12, 12, 12), np.int64)
    anatomy[:, :4], anatomy[:, 4:6], anatomy[:, 6:8] = 1, 4, 3  # vertebra, CSF, cord
    logits = torch.from_numpy(5.0 * np.eye(6)[anatomy].transpose(3, 0, 1, 2)).float()
    logits[5] = torch.from_numpy(score).float()
    for tumor_type, hosts in TUMOR_HOSTS.items():
        label = enforce_class(logits, tumor_type, 10)
        assert (label == 5).sum() == 10 and set(np.unique(anatomy[label == 5])) == set(hosts)
        assert np.array_equal(label[label != 5], anatomy[label != 5])
    assert np.array_equal(enforce_class(logits, 0), anatomy)


def test_synthetic_tumors_take_the_training_tumor_sizes(tmp_path, gan, real16):
    root, _ = gan
    synth = load_synthesizer(root, "cpu")
    train = [c for c in read_datalist(real16).split("training") if c.tumor_type]
    expected: dict[str, list[int]] = {}
    for case in train:  # the phantoms are on the generators' grid already (16³ at 1.5 mm, RAS)
        expected.setdefault(str(case.tumor_type), []).append(int((read_volume(case.label).array == 5).sum()))
    assert synth.stats["tumor_voxels"] == {k: sorted(v) for k, v in sorted(expected.items())}
    types = ",".join(f"{k}={1 / len(expected)}" for k in expected)
    cases = synthesize(synth, tmp_path / "s", n_cases=3 * len(expected), types=types, seed=2, pose=False)
    infos = read_datalist(tmp_path / "s").meta["volgan"]["cases"]
    for case in cases:
        count = int((read_volume(case.label, label=True).array == 5).sum())
        assert count == infos[case.name]["tumor_voxels"] and count in expected[str(case.tumor_type)]


def test_bf16_autocast_follows_the_switch_and_asks_the_device_on_auto():
    from volgan.training import bf16_autocast, native_bf16_cpu

    assert bf16_autocast("false", "cpu") is False and bf16_autocast("true", "cpu") is True
    native = native_bf16_cpu()
    assert bf16_autocast("auto", "cpu") is native and bf16_autocast("AUTO", "cpu") is native


def test_tracking_mlflow(tmp_path, real16):
    pytest.importorskip("mlflow")
    bundle("run", "--config_file", "configs/train.json", "--bundle_root", tmp_path, "--dataset_dir", real16,
           "--max_epochs", "1", *TINY, "--progress", "false", "--tracking", "mlflow", cwd=CGAN)
    metrics = mlflow_metrics(tmp_path / "eval" / "mlruns.db")
    assert {"train_loss", "msssim_synthetic", "msssim_real"} <= set(metrics), sorted(metrics)
    assert metrics["train_loss"] and np.isfinite(metrics["train_loss"]).all()


def test_torchrun_two_gloo_processes(tmp_path, real16):
    """configs/multi_gpu_train.json: each process trains on its half of the pool with the gradients averaged; the
    first process alone logs, writes TensorBoard events and saves."""
    log = bundle("--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "--config_file",
                 "['configs/train.json','configs/multi_gpu_train.json']", "--bundle_root", tmp_path,
                 "--dataset_dir", real16, "--max_epochs", "2", *TINY, cwd=CGAN,
                 runner=(sys.executable, "-m", "torch.distributed.run"))
    state = torch.load(latest_checkpoint(tmp_path / "models"), weights_only=False)
    # 12 real training cases: 6 a process, 2 batches of 4 an epoch (one process: 3)
    assert state["trainer"]["epoch_length"] == 2 and state["trainer"]["iteration"] == 4
    assert torch.load(tmp_path / "models" / "generator.pt", weights_only=True)["epoch"] == 2
    events = list((tmp_path / "eval").glob("events.out.tfevents.*"))
    assert len(events) == 1, events  # no empty event file from the second process
    assert log.count("Epoch[2] Metrics -- diversity_gap") == 1  # the monitor's line once, not once a process


def test_frechet_distance_of_a_shifted_set_is_the_squared_shift():
    """Same covariance, means apart by (1, 2, 0, ...): the Fréchet distance is 1² + 2² = 5; NaN under two samples."""
    from volgan.evaluation.similarity import frechet_distance

    features = np.random.default_rng(0).normal(size=(50, 8))
    shift = np.zeros(8)
    shift[:2] = (1.0, 2.0)
    assert frechet_distance(features, features + shift) == pytest.approx(5.0, abs=1e-6)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(frechet_distance(features[:1], features))
    import warnings

    with warnings.catch_warnings():  # fewer samples than features, as in a small study: no warning reaches the user
        warnings.simplefilter("error")
        assert np.isfinite(frechet_distance(features[:6], features[6:12]))


@pytest.mark.parametrize("size", [16, (32, 32, 8), (16, 64, 64)])
def test_the_generators_build_cubic_and_thick_slice_grids(size):
    from volgan.gan.networks import ImageGenerator, LabelEncoder, LabelGenerator, grid_shape

    shape = grid_shape(size)
    labels = LabelGenerator(size, z_dim=8, base=4)
    logits = labels(torch.randn(2, 8), torch.tensor([0, 3]))
    assert logits.shape == (2, 6, *shape)
    onehot = torch.softmax(logits, 1)
    assert ImageGenerator(size, z_dim=4, base=4)(onehot).shape == (2, 1, *shape)
    assert LabelEncoder(size, z_dim=8, base=4)(onehot, torch.tensor([0, 3]))[0].shape == (2, 8)
    scripted = torch.jit.script(ImageGenerator(size, z_dim=4, base=4))
    assert scripted(onehot).shape == (2, 1, *shape)


@pytest.mark.parametrize("size, needle", [(24, "power of two"), ((16, 16, 12), "power of two"),
                                          ((16, 20, 16), "multiple of 8"), ((32, 32), "three"),
                                          ((4, 4, 4), "8 or more")])
def test_grids_the_generators_cannot_build_are_refused(size, needle):
    from volgan.gan.networks import grid_shape

    with pytest.raises(ValueError, match=needle):
        grid_shape(size)
